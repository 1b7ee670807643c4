//! Sentence-level BLEU-4 and GLEU, as NLTK computes them, for scoring a generated sentence
//! against a gold one (story infilling, issue #15).
//!
//! The paper's evaluation (GFNOrg/gfn-lm-tuning, `infill_subj_arithmetic/eval_infill.py`,
//! `compute_metrics`) tokenises both sentences with Python's `str.split()` ([`words`]) and calls
//! `sentence_bleu([ref], cand, smoothing_function=SmoothingFunction().method1)` ([`bleu4`]) and
//! `sentence_gleu([ref], cand)` ([`gleu`]). Tokens are compared exactly: no lower-casing, and
//! punctuation stays attached to its word (`"mother."` ≠ `"mother"`). Note how the reference
//! prepares the strings before that: the gold sentence is `sentence4[:-1]` (its last character,
//! normally the full stop, dropped) and each generated text loses its first character (the space
//! after `Middle:`).
//!
//! Both functions are checked against NLTK 3.10.4 on the cases of
//! `tests/fixtures/bleu_gleu_nltk.json` (written by `scripts/make-bleu-fixtures.py`).

use std::collections::HashMap;

/// The highest n-gram order of BLEU-4 and of GLEU.
const MAX_ORDER: usize = 4;

/// NLTK's `SmoothingFunction().method1` epsilon: a zero n-gram match count counts as this.
const EPSILON: f64 = 0.1;

/// Python's `str.split()` with no argument: the runs of non-whitespace characters.
///
/// Python's whitespace is Rust's [`char::is_whitespace`] plus U+001C..=U+001F (the file, group,
/// record and unit separators), which Python splits on and Rust does not.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Counts of the n-grams of one order.
fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for g in tokens.windows(n) {
        *counts.entry(g).or_insert(0) += 1;
    }
    counts
}

/// Counts of the n-grams of every order 1..=4 (NLTK's `everygrams(tokens, 1, 4)`; n-grams of
/// different orders never collide since their lengths differ).
fn everygrams(tokens: &[String]) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_ORDER {
        for g in tokens.windows(n) {
            *counts.entry(g).or_insert(0) += 1;
        }
    }
    counts
}

/// Sentence BLEU-4 exactly as NLTK's `sentence_bleu(references, hypothesis,
/// smoothing_function=SmoothingFunction().method1)` with the default weights (¼, ¼, ¼, ¼).
///
/// - p_n = clipped matches / max(1, number of hypothesis n-grams), each n-gram's count clipped
///   to its largest count in any one reference.
/// - No unigram match (including an empty hypothesis): 0, before any smoothing.
/// - Otherwise a zero match count becomes ε = 0.1 (p_n = 0.1 / max(1, n-grams)), so a
///   hypothesis shorter than n tokens gets p_n = 0.1 for that order.
/// - Brevity penalty with the reference length closest to the hypothesis length (the shorter on
///   a tie): 1 when the hypothesis is longer, else exp(1 − r / c).
/// - BLEU = BP · exp(Σ ¼ ln p_n). NLTK's method 1 emits no warning (only method 0 does).
///
/// # Panics
/// When `references` is empty (NLTK raises too).
pub fn bleu4(references: &[Vec<String>], hypothesis: &[String]) -> f64 {
    assert!(!references.is_empty(), "bleu4 needs at least one reference");
    let mut log_sum = 0.0;
    for n in 1..=MAX_ORDER {
        let counts = ngrams(hypothesis, n);
        let mut max_ref: HashMap<&[String], usize> = HashMap::new();
        for reference in references {
            let ref_counts = ngrams(reference, n);
            for g in counts.keys() {
                let c = ref_counts.get(g).copied().unwrap_or(0);
                let m = max_ref.entry(g).or_insert(0);
                *m = (*m).max(c);
            }
        }
        let numerator: usize = counts
            .iter()
            .map(|(g, &c)| c.min(max_ref.get(g).copied().unwrap_or(0)))
            .sum();
        let denominator = counts.values().sum::<usize>().max(1);
        if numerator == 0 && n == 1 {
            return 0.0;
        }
        let p = if numerator == 0 {
            EPSILON / denominator as f64
        } else {
            numerator as f64 / denominator as f64
        };
        log_sum += 0.25 * p.ln();
    }
    let hyp_len = hypothesis.len();
    let closest = references
        .iter()
        .map(Vec::len)
        .min_by_key(|&r| (r.abs_diff(hyp_len), r))
        .expect("references is not empty");
    let bp = if hyp_len > closest {
        1.0
    } else {
        // hyp_len > 0 here: an empty hypothesis has no unigram match and returned above.
        (1.0 - closest as f64 / hyp_len as f64).exp()
    };
    bp * log_sum.exp()
}

/// Sentence GLEU exactly as NLTK's `sentence_gleu(references, hypothesis)` (n-gram orders 1 to
/// 4): over all n-grams of orders 1..=4, matches / max(hypothesis n-grams, reference n-grams),
/// i.e. min(precision, recall), for the best reference; references for which both counts are 0
/// are skipped, and the score is 0 when none is left (e.g. no references, or both empty).
pub fn gleu(references: &[Vec<String>], hypothesis: &[String]) -> f64 {
    let hyp = everygrams(hypothesis);
    let tpfp: usize = hyp.values().sum();
    let mut best: Option<f64> = None;
    for reference in references {
        let ref_counts = everygrams(reference);
        let tpfn: usize = ref_counts.values().sum();
        let tp: usize = hyp
            .iter()
            .map(|(g, &c)| c.min(ref_counts.get(g).copied().unwrap_or(0)))
            .sum();
        let n_all = tpfp.max(tpfn);
        if n_all > 0 {
            let score = tp as f64 / n_all as f64;
            if best.is_none_or(|b| score > b) {
                best = Some(score);
            }
        }
    }
    best.unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        words(s)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn text_metrics_identical_is_one() {
        let s = w("She decided to bake a cake for her mother.");
        assert_eq!(bleu4(std::slice::from_ref(&s), &s), 1.0);
        assert_eq!(gleu(std::slice::from_ref(&s), &s), 1.0);
    }

    #[test]
    fn text_metrics_disjoint_and_empty_are_zero() {
        // No unigram match: NLTK returns 0 before smoothing, so method 1's ε never applies.
        let r = vec![w("Jenny bought two apples yesterday")];
        assert_eq!(bleu4(&r, &w("A storm rolled over the hills.")), 0.0);
        assert_eq!(gleu(&r, &w("A storm rolled over the hills.")), 0.0);
        assert_eq!(bleu4(&r, &[]), 0.0);
        assert_eq!(gleu(&r, &[]), 0.0);
        assert_eq!(gleu(&[], &w("a b")), 0.0);
        assert_eq!(gleu(&[vec![]], &[]), 0.0);
    }

    #[test]
    fn text_metrics_smoothing_by_hand() {
        // Reversed: p1 = 4/4, p2 = 0.1/3, p3 = 0.1/2, p4 = 0.1/1, equal lengths so BP = 1.
        let r = vec![w("the cat sat down")];
        let h = w("down sat cat the");
        assert!(close(bleu4(&r, &h), (0.1f64 / 3.0 * 0.05 * 0.1).powf(0.25)));
        // GLEU: 4 of the 4 + 3 + 2 + 1 = 10 n-grams on either side match.
        assert!(close(gleu(&r, &h), 0.4));

        // One exact word: p1 = 1, p2..p4 = 0.1 / max(1, 0) = 0.1, BP = exp(1 − 1/1) = 1.
        let y = w("Yes");
        assert!(close(
            bleu4(std::slice::from_ref(&y), &y),
            0.1f64.powf(0.75)
        ));
        assert_eq!(gleu(std::slice::from_ref(&y), &y), 1.0);

        // Short hypothesis: p1 = 2/2, p2 = 1/1, p3 = p4 = 0.1, BP = exp(1 − 7/2).
        let r = vec![w("He smiled at her and waved goodbye.")];
        let h = w("He smiled");
        assert!(close(bleu4(&r, &h), (-2.5f64).exp() * 0.1f64.sqrt()));
        // GLEU: 3 hypothesis n-grams, 7 + 6 + 5 + 4 = 22 reference n-grams, 3 matches.
        assert!(close(gleu(&r, &h), 3.0 / 22.0));
    }

    #[test]
    fn text_metrics_clipping_and_closest_reference() {
        // "the" ×7 against one lower-case "the": p1 = 1/7, p2..p4 = 0.1/6, 0.1/5, 0.1/4; BP = 1.
        let r = vec![w("The cat is on the mat.")];
        let h = w("the the the the the the the");
        let expected = (1.0f64 / 7.0 * (0.1 / 6.0) * (0.1 / 5.0) * (0.1 / 4.0)).powf(0.25);
        assert!(close(bleu4(&r, &h), expected));
        // Lengths 4 and 8 are both 2 from 6: the shorter (4) is used, so BP = 1.
        let r = vec![w("a b c d"), w("a b c d e f g h")];
        let h = w("a b c d e f");
        assert!(close(bleu4(&r, &h), 1.0));
    }

    #[test]
    fn text_metrics_words_is_python_split() {
        assert_eq!(
            words("  She  was\tso\nhappy  "),
            ["She", "was", "so", "happy"]
        );
        assert_eq!(words("excited, and"), ["excited,", "and"]);
        assert!(words(" \t\n").is_empty());
        // Every char for which Python's str.isspace() is true (CPython 3.11).
        let python: &[u32] = &[
            0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000,
            0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028,
            0x2029, 0x202f, 0x205f, 0x3000,
        ];
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let text = format!("a{c}b");
            let split = words(&text).len() == 2;
            assert_eq!(split, python.contains(&(c as u32)), "U+{:04X}", c as u32);
        }
    }
}
