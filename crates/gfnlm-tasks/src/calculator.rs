//! A calculator tool for the arithmetic task (paper §4.4, reference-notes §3.1 B): when the
//! sampled token ends in "=", the expression since the last "," or "." is evaluated and
//! " <value>" is appended to the state as tool tokens.
//!
//! The evaluator is our own and deliberately small — no `eval` of arbitrary text: optional
//! spaces, signed integers of at most [`MAX_DIGITS`] digits, `+` and `-` between them, at most
//! [`MAX_OPERANDS`] operands and [`MAX_EXPRESSION_CHARS`] characters. Anything else (other
//! operators, parentheses, letters, an empty expression, overflow) inserts nothing.

use gfnlm_tokenizer::Tokenizer;

use crate::Tool;

/// Longest expression the calculator reads, in characters.
pub const MAX_EXPRESSION_CHARS: usize = 128;
/// Most operands of one expression.
pub const MAX_OPERANDS: usize = 32;
/// Most digits of one integer.
pub const MAX_DIGITS: usize = 12;

/// The operands of `expr` with their signs (`"3 - 5 + -2"` → `[3, -5, -2]`), if it is a sum
/// and difference of integers the calculator accepts.
pub fn parse_terms(expr: &str) -> Option<Vec<i64>> {
    if expr.chars().count() > MAX_EXPRESSION_CHARS {
        return None;
    }
    let bytes: Vec<u8> = expr.bytes().collect();
    let mut i = 0;
    let skip_spaces = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i] == b' ' {
            *i += 1;
        }
    };
    // One signed integer: [-]digits.
    let number = |i: &mut usize| -> Option<i64> {
        let mut sign = 1;
        if *i < bytes.len() && bytes[*i] == b'-' {
            sign = -1;
            *i += 1;
        }
        let start = *i;
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
        let digits = &expr[start..*i];
        if digits.is_empty() || digits.len() > MAX_DIGITS {
            return None;
        }
        Some(sign * digits.parse::<i64>().ok()?)
    };
    let mut terms = Vec::new();
    skip_spaces(&mut i);
    terms.push(number(&mut i)?);
    loop {
        skip_spaces(&mut i);
        if i == bytes.len() {
            break;
        }
        let op = match bytes[i] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        i += 1;
        skip_spaces(&mut i);
        terms.push(op * number(&mut i)?);
        if terms.len() > MAX_OPERANDS {
            return None;
        }
    }
    Some(terms)
}

/// The value of a sum/difference of integers (see [`parse_terms`]), or `None`.
pub fn evaluate(expr: &str) -> Option<i64> {
    parse_terms(expr)?
        .into_iter()
        .try_fold(0i64, |acc, t| acc.checked_add(t))
}

/// The value of `expr` when the calculator can only combine its last `k` operands (the
/// reference's `limit_capability`): `"1 + 2 + 3"` with k = 2 → 2 + 3 = 5.
///
/// The reference's version (`get_limited_expr`) also drops the first of the kept operands by an
/// indentation slip, so with k = 2 it returns the last operand with its sign (`"+ 3"` → 3); we
/// keep the last k operands as the option's name says.
pub fn evaluate_limited(expr: &str, k: usize) -> Option<i64> {
    let terms = parse_terms(expr)?;
    let keep = if k == 0 {
        terms.len()
    } else {
        k.min(terms.len())
    };
    terms[terms.len() - keep..]
        .iter()
        .try_fold(0i64, |acc, &t| acc.checked_add(t))
}

/// The expression a state asks for: the text after the last "," or "." and before the final
/// "=" (`"6 - 0 = 6, 6 - 4 ="` → `" 6 - 4 "`); `None` unless the text ends with "=".
pub fn pending_expression(text: &str) -> Option<&str> {
    let body = text.strip_suffix('=')?;
    let start = body.rfind([',', '.']).map_or(0, |i| i + 1);
    Some(&body[start..])
}

/// The calculator as a [`Tool`]: after an action whose text ends in "=", appends the tokens of
/// `" <value>"`.
#[derive(Debug, Clone)]
pub struct Calculator {
    tokenizer: Tokenizer,
    /// Tokens whose text ends with "=" (the trigger).
    equals: Vec<u32>,
    /// Combine only the last k operands (`None`: all).
    pub limit_capability: Option<usize>,
}

impl Calculator {
    /// A calculator over `tokenizer`'s vocabulary.
    pub fn new(tokenizer: &Tokenizer, limit_capability: Option<usize>) -> Self {
        let mut equals: Vec<u32> = (0..tokenizer.vocab_size() as u32)
            .filter(|&id| {
                tokenizer
                    .decode(&[id])
                    .map(|t| t.ends_with('='))
                    .unwrap_or(false)
            })
            .collect();
        equals.sort_unstable();
        Self {
            tokenizer: tokenizer.clone(),
            equals,
            limit_capability,
        }
    }

    /// The text the tool appends after `text` (`" 5"`), if any.
    pub fn answer(&self, text: &str) -> Option<String> {
        let expr = pending_expression(text)?;
        let value = match self.limit_capability {
            Some(k) => evaluate_limited(expr, k)?,
            None => evaluate(expr)?,
        };
        Some(format!(" {value}"))
    }
}

/// The longest answer text: " -" and the digits of the largest magnitude, `MAX_OPERANDS`
/// operands of `MAX_DIGITS` digits (32 · 10^12 has `MAX_DIGITS + 2` digits).
pub const MAX_ANSWER_CHARS: usize = 2 + MAX_DIGITS + 2;

impl Tool for Calculator {
    /// A byte-level BPE token holds at least one character of this ASCII text.
    fn max_output_tokens(&self) -> usize {
        MAX_ANSWER_CHARS
    }

    fn call(&self, state: &[u32]) -> Vec<u32> {
        let Some(&last) = state.last() else {
            return Vec::new();
        };
        if self.equals.binary_search(&last).is_err() {
            return Vec::new();
        }
        let Ok(text) = self.tokenizer.decode(state) else {
            return Vec::new();
        };
        self.answer(&text)
            .and_then(|a| self.tokenizer.encode(&a, false).ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_widest_answer_fits_max_answer_chars() {
        // As many operands of MAX_DIGITS nines as MAX_EXPRESSION_CHARS allows, all negative.
        let term = format!("-{}", "9".repeat(MAX_DIGITS));
        let k = MAX_EXPRESSION_CHARS / term.len();
        let expr = term.repeat(k);
        let value = evaluate(&expr).expect("a valid expression");
        assert_eq!(value, -(k as i64) * (10i64.pow(MAX_DIGITS as u32) - 1));
        assert!(format!(" {value}").len() <= MAX_ANSWER_CHARS, "{value}");
        // One operand more is refused, so nothing wider can come back.
        assert_eq!(evaluate(&term.repeat(k + 1)), None);
        // The bound also covers MAX_OPERANDS full-width operands, had the text limit allowed them.
        let widest = -(MAX_OPERANDS as i64) * (10i64.pow(MAX_DIGITS as u32) - 1);
        assert!(format!(" {widest}").len() <= MAX_ANSWER_CHARS);
    }

    #[test]
    fn evaluates_sums_and_differences_only() {
        assert_eq!(evaluate("6 - 0"), Some(6));
        assert_eq!(evaluate(" 6 - 4 "), Some(2));
        assert_eq!(evaluate("2 - 8"), Some(-6));
        assert_eq!(evaluate("-6 + 3"), Some(-3));
        assert_eq!(evaluate("5+9-3+8"), Some(19));
        assert_eq!(evaluate("7"), Some(7));
        assert_eq!(evaluate("3 - -2"), Some(5));
        for bad in [
            "",
            " ",
            "+",
            "3 +",
            "3 * 4",
            "(3 + 4)",
            "3 / 4",
            "abc",
            "1e9",
            "3 + x",
            "__import__('os')",
            "2 ** 8",
            "3 4",
            "--3",
            "1.5 + 2",
        ] {
            assert_eq!(evaluate(bad), None, "{bad:?}");
        }
        // Bounded: too many digits, operands or characters insert nothing; no overflow panic.
        assert_eq!(evaluate("1234567890123"), None);
        assert_eq!(evaluate(&vec!["1"; 40].join(" + ")), None);
        assert_eq!(evaluate(&format!("1{}", " ".repeat(200))), None);
        assert_eq!(
            evaluate("999999999999 + 999999999999"),
            Some(1_999_999_999_998)
        );
    }

    #[test]
    fn limited_capability_keeps_the_last_k_operands() {
        assert_eq!(evaluate_limited("1 + 2 + 3", 2), Some(5));
        assert_eq!(evaluate_limited("9 - 4 - 1", 2), Some(-5));
        assert_eq!(evaluate_limited("9 - 4", 2), Some(5));
        assert_eq!(evaluate_limited("9", 2), Some(9));
        assert_eq!(evaluate_limited("1 + 2 + 3", 0), Some(6));
    }

    #[test]
    fn the_pending_expression_starts_after_the_last_comma_or_period() {
        assert_eq!(pending_expression("6 - 0 ="), Some("6 - 0 "));
        assert_eq!(pending_expression(" 6 - 0 = 6, 6 - 4 ="), Some(" 6 - 4 "));
        assert_eq!(pending_expression("a. 3 + 4 ="), Some(" 3 + 4 "));
        assert_eq!(pending_expression("6 - 0 = 6"), None);
    }
}
