//! The random-number task (paper §2): "a random integer drawn uniformly between 0 and 100".
//!
//! Z is a digit string followed by the terminator (EOS by default). Terminating at a prefix
//! that is a canonical decimal integer in 0..=100 has log-reward 0; any other prefix (the empty
//! one, leading zeros, out of range, non-digits) gets `invalid_log_reward`. With the reward
//! defined on every prefix, every state of a trajectory has a log R, as modified SubTB needs.

use gfnlm_tokenizer::Tokenizer;

use crate::Constraint;

/// The paper's prompt (trailing space included).
pub const PROMPT: &str = "The following is a random integer drawn uniformly between 0 and 100: ";
/// Largest valid integer.
pub const MAX_VALUE: u32 = 100;

/// Errors building the task from a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The tokenizer does not have single-token digits.
    #[error(
        "the tokenizer has no single token for digit '{0}': the rng task needs one token per digit"
    )]
    Digit(char),
    /// No terminator.
    #[error("the tokenizer has no EOS token; pass an explicit terminator id")]
    NoTerminator,
    /// Tokenization failed.
    #[error("tokenizing the prompt: {0}")]
    Tokenize(String),
}

/// The random-integer task over one tokenizer.
#[derive(Debug, Clone)]
pub struct RngTask {
    /// Prompt token ids (no BOS).
    pub prompt: Vec<u32>,
    /// Token id of each digit '0'..'9'.
    pub digits: [u32; 10],
    /// Termination token (⊤).
    pub terminator: u32,
    /// Log-reward of terminating at an invalid prefix.
    pub invalid_log_reward: f64,
    /// Longest digit string considered (3 for 0..=100).
    pub max_digits: usize,
}

/// Exact evaluation of a policy on the task.
#[derive(Debug, Clone, PartialEq)]
pub struct RngMetrics {
    /// q(k⊤) for k = 0..=100 (not normalised).
    pub probs: Vec<f64>,
    /// Σ_k q(k⊤): the probability of a valid answer.
    pub valid_mass: f64,
    /// KL(q̂‖U) of the normalised distribution q̂ = q / mass, in nats.
    pub kl_q_u: f64,
    /// KL(U‖q̂) in nats.
    pub kl_u_q: f64,
    /// Entropy of q̂ in nats (uniform: ln 101 = 4.615).
    pub entropy: f64,
    /// The ten most likely integers with their normalised probability.
    pub top: Vec<(u32, f64)>,
}

impl RngMetrics {
    /// Metrics from the log-probabilities log q(k⊤), k = 0..=100.
    pub fn from_log_probs(log_probs: &[f64]) -> Self {
        assert_eq!(
            log_probs.len(),
            (MAX_VALUE + 1) as usize,
            "one log-prob per integer 0..=100"
        );
        let probs: Vec<f64> = log_probs.iter().map(|l| l.exp()).collect();
        let valid_mass: f64 = probs.iter().sum();
        let n = probs.len() as f64;
        let q: Vec<f64> = probs.iter().map(|p| p / valid_mass).collect();
        let kl_q_u = q
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| p * (p * n).ln())
            .sum();
        let kl_u_q = q.iter().map(|&p| (1.0 / n) * ((1.0 / n) / p).ln()).sum();
        let entropy = -q
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| p * p.ln())
            .sum::<f64>();
        let mut order: Vec<usize> = (0..q.len()).collect();
        order.sort_by(|&a, &b| q[b].total_cmp(&q[a]));
        let top = order[..10].iter().map(|&k| (k as u32, q[k])).collect();
        Self {
            probs,
            valid_mass,
            kl_q_u,
            kl_u_q,
            entropy,
            top,
        }
    }
}

impl RngTask {
    /// The task with the paper's prompt; `terminator` defaults to the tokenizer's EOS.
    pub fn new(
        tokenizer: &Tokenizer,
        terminator: Option<u32>,
        invalid_log_reward: f64,
    ) -> Result<Self, TaskError> {
        let mut digits = [0u32; 10];
        for (d, slot) in digits.iter_mut().enumerate() {
            let c = char::from(b'0' + d as u8);
            *slot = tokenizer
                .token_to_id(&c.to_string())
                .ok_or(TaskError::Digit(c))?;
        }
        let terminator = terminator
            .or(tokenizer.eos_id())
            .ok_or(TaskError::NoTerminator)?;
        let prompt = tokenizer
            .encode(PROMPT, false)
            .map_err(|e| TaskError::Tokenize(e.to_string()))?;
        Ok(Self {
            prompt,
            digits,
            terminator,
            invalid_log_reward,
            max_digits: 3,
        })
    }

    /// The digit value of a token, if it is a digit.
    pub fn digit_of(&self, token: u32) -> Option<u32> {
        self.digits
            .iter()
            .position(|&d| d == token)
            .map(|d| d as u32)
    }

    /// The integer spelled by `tokens` (no terminator) if canonical and in 0..=100.
    pub fn parse(&self, tokens: &[u32]) -> Option<u32> {
        if tokens.is_empty() || tokens.len() > self.max_digits {
            return None;
        }
        let ds: Option<Vec<u32>> = tokens.iter().map(|&t| self.digit_of(t)).collect();
        let ds = ds?;
        if ds.len() > 1 && ds[0] == 0 {
            return None;
        }
        let value = ds.iter().fold(0u32, |acc, d| acc * 10 + d);
        (value <= MAX_VALUE).then_some(value)
    }

    /// log R(z_1..z_k ⊤) for every prefix k = 0..=n of `tokens` (terminator excluded).
    pub fn log_rewards(&self, tokens: &[u32]) -> Vec<f64> {
        (0..=tokens.len())
            .map(|k| {
                if self.parse(&tokens[..k]).is_some() {
                    0.0
                } else {
                    self.invalid_log_reward
                }
            })
            .collect()
    }

    /// The token ids of `k` followed by the terminator.
    pub fn spell(&self, k: u32) -> Vec<u32> {
        let mut v: Vec<u32> = k
            .to_string()
            .bytes()
            .map(|b| self.digits[(b - b'0') as usize])
            .collect();
        v.push(self.terminator);
        v
    }

    /// The constraint used for training: digits and ⊤ only (others offset by `vocab_alpha`),
    /// at least one digit, at most `max_digits`.
    pub fn constraint(&self, vocab_alpha: f32, restrict_vocab: bool) -> Constraint {
        let allowed = restrict_vocab.then(|| {
            let mut a = self.digits.to_vec();
            a.push(self.terminator);
            a
        });
        Constraint {
            termination: self.terminator,
            allowed,
            vocab_alpha,
            min_len: 1,
            max_len: self.max_digits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> RngTask {
        RngTask {
            prompt: vec![1, 2, 3],
            digits: [32, 33, 34, 35, 36, 37, 38, 39, 40, 41],
            terminator: 2,
            invalid_log_reward: -20.0,
            max_digits: 3,
        }
    }

    #[test]
    fn parses_exactly_the_canonical_integers_up_to_100() {
        let t = task();
        let mut valid = 0;
        for a in 0..10u32 {
            for len in 1..=3 {
                // Enumerate all digit strings of this length starting with a.
                let n = 10u32.pow(len - 1);
                for rest in 0..n {
                    let s = format!(
                        "{a}{}",
                        if len > 1 {
                            format!("{rest:0w$}", w = (len - 1) as usize)
                        } else {
                            String::new()
                        }
                    );
                    let toks: Vec<u32> = s.bytes().map(|b| t.digits[(b - b'0') as usize]).collect();
                    let want =
                        (s.len() == 1 || !s.starts_with('0')) && s.parse::<u32>().unwrap() <= 100;
                    assert_eq!(t.parse(&toks).is_some(), want, "{s}");
                    valid += want as u32;
                }
            }
        }
        assert_eq!(valid, 101);
        assert_eq!(t.parse(&[]), None);
        assert_eq!(t.parse(&[32, 2]), None, "the terminator is not a digit");
    }

    #[test]
    fn every_prefix_has_a_reward() {
        let t = task();
        // "1","0","0" → prefixes "", "1", "10", "100"
        assert_eq!(t.log_rewards(&[33, 32, 32]), vec![-20.0, 0.0, 0.0, 0.0]);
        // "0","5" → "", "0" valid, "05" invalid
        assert_eq!(t.log_rewards(&[32, 37]), vec![-20.0, 0.0, -20.0]);
        assert_eq!(t.spell(42), vec![36, 34, 2]);
    }

    #[test]
    fn metrics_of_uniform_and_skewed_distributions() {
        let u = RngMetrics::from_log_probs(&vec![(0.5f64 / 101.0).ln(); 101]);
        assert!((u.valid_mass - 0.5).abs() < 1e-12);
        assert!(u.kl_q_u.abs() < 1e-12 && u.kl_u_q.abs() < 1e-12);
        assert!((u.entropy - 101f64.ln()).abs() < 1e-12);
        let mut lp = vec![-30.0; 101];
        lp[100] = -1.0;
        let s = RngMetrics::from_log_probs(&lp);
        assert_eq!(s.top[0].0, 100);
        assert!(s.kl_q_u > 4.0, "{}", s.kl_q_u);
    }
}
