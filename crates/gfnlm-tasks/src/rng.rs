//! The random-number task (paper §2): "a random integer drawn uniformly between 0 and 100".
//!
//! Z is a digit string followed by the terminator (EOS by default). Terminating at a prefix
//! that is a canonical decimal integer in 0..=100 has log-reward 0; any other prefix (the empty
//! one, leading zeros, out of range, non-digits) gets `invalid_log_reward`. With the reward
//! defined on every prefix, every state of a trajectory has a log R, as modified SubTB needs.

use burn::tensor::Device;
use gfnlm_models::LanguageModel;
use gfnlm_models::decode::{Behaviour, policy_terms, sample_trajectories, sequence_log_probs};
use gfnlm_models::generate::score_continuations;
use gfnlm_tokenizer::Tokenizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{
    Constraint, EvalContext, Evaluation, Example, Registration, RewardContext, Split, Task,
    TaskError, TaskInputs, Trajectory,
};

/// The paper's prompt (trailing space included).
pub const PROMPT: &str = "The following is a random integer drawn uniformly between 0 and 100: ";
/// Largest valid integer.
pub const MAX_VALUE: u32 = 100;

/// The `[task]` keys of the rng task (all optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RngSettings {
    /// log R of terminating at an invalid prefix.
    pub invalid_log_reward: f64,
    /// Restrict the action space to the digits and ⊤ (others get `vocab_alpha`).
    pub restrict_vocab: bool,
    /// Logit offset of disallowed tokens.
    pub vocab_alpha: f32,
}

impl Default for RngSettings {
    fn default() -> Self {
        Self {
            invalid_log_reward: -20.0,
            restrict_vocab: true,
            vocab_alpha: -99.0,
        }
    }
}

impl RngSettings {
    fn validate(&self) -> Result<(), TaskError> {
        if !self.invalid_log_reward.is_finite() {
            return Err(TaskError::Config(format!(
                "invalid_log_reward must be a finite number, got {}",
                self.invalid_log_reward
            )));
        }
        if !self.vocab_alpha.is_finite() {
            return Err(TaskError::Config(format!(
                "vocab_alpha must be a finite number, got {}",
                self.vocab_alpha
            )));
        }
        Ok(())
    }
}

/// The rng task in the registry.
pub const REGISTRATION: Registration = Registration {
    name: "rng",
    about: "a random integer drawn uniformly between 0 and 100 (paper §2)",
    check: |section| section.parse::<RngSettings>()?.validate(),
    build: |section, inputs: &TaskInputs<'_>| {
        let s: RngSettings = section.parse()?;
        let mut task = RngTask::new(inputs.tokenizer, None, s.invalid_log_reward)?;
        task.restrict_vocab = s.restrict_vocab;
        task.vocab_alpha = s.vocab_alpha;
        Ok(Box::new(task))
    },
};

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
    /// Restrict the action space to the digits and ⊤.
    pub restrict_vocab: bool,
    /// Logit offset of disallowed tokens when `restrict_vocab`.
    pub vocab_alpha: f32,
    /// The one example (the prompt), for every split.
    examples: Vec<Example>,
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
                .ok_or_else(|| {
                    TaskError::Tokenizer(format!(
                        "the tokenizer has no single token for digit '{c}': the rng task needs one token per digit"
                    ))
                })?;
        }
        let terminator = terminator.or(tokenizer.eos_id()).ok_or_else(|| {
            TaskError::Tokenizer("the tokenizer has no EOS token to end an answer".into())
        })?;
        let prompt = tokenizer
            .encode(PROMPT, false)
            .map_err(|e| TaskError::Tokenizer(format!("tokenizing the prompt: {e}")))?;
        Ok(Self::from_parts(
            prompt,
            digits,
            terminator,
            invalid_log_reward,
        ))
    }

    /// The task from token ids (tests and custom tokenizers): three digits at most, the
    /// vocabulary restricted to digits and ⊤ with offset −99.
    pub fn from_parts(
        prompt: Vec<u32>,
        digits: [u32; 10],
        terminator: u32,
        invalid_log_reward: f64,
    ) -> Self {
        Self {
            examples: vec![Example::prompt_only("rng", prompt.clone())],
            prompt,
            digits,
            terminator,
            invalid_log_reward,
            max_digits: 3,
            restrict_vocab: true,
            vocab_alpha: -99.0,
        }
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

impl Task for RngTask {
    fn name(&self) -> &str {
        "rng"
    }

    fn examples(&self, _split: Split) -> &[Example] {
        &self.examples
    }

    fn constraint(&self, _example: &Example) -> Constraint {
        RngTask::constraint(self, self.vocab_alpha, self.restrict_vocab)
    }

    fn log_rewards(
        &self,
        _example: &Example,
        trajectories: &[Trajectory],
        _ctx: &RewardContext<'_>,
    ) -> Vec<Vec<f64>> {
        trajectories
            .iter()
            .map(|t| RngTask::log_rewards(self, &t.tokens))
            .collect()
    }

    fn is_valid(
        &self,
        _example: &Example,
        _trajectory: &Trajectory,
        terminal_log_reward: f64,
    ) -> bool {
        terminal_log_reward == 0.0
    }

    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Evaluation, TaskError> {
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
        let constraint = Task::constraint(self, &self.examples[0]);
        crate::check_context(self, &self.examples, ctx.model.max_positions())?;
        let e = evaluate_rng(
            ctx.model,
            self,
            &constraint,
            ctx.samples.unwrap_or(2000),
            &mut rng,
            ctx.device,
        );
        let mut summary = Vec::new();
        let mut markdown = String::from(
            "| distribution | valid mass (exact) | KL(q‖U) | KL(U‖q) | entropy (uniform 4.615) | top integers |\n|---|---|---|---|---|---|\n",
        );
        for (label, r) in [
            ("constrained sampler", &e.constrained),
            ("unconstrained LM", &e.unconstrained),
        ] {
            let top3: Vec<String> = r
                .top
                .iter()
                .take(3)
                .map(|(k, p)| format!("{k}:{p:.3}"))
                .collect();
            summary.push(format!(
                "[{label}]: valid mass {:.4e}  KL(q||U) {:.4}  KL(U||q) {:.4}  entropy {:.3} (uniform 4.615)  top {top3:?}",
                r.valid_mass, r.kl_q_u, r.kl_u_q, r.entropy
            ));
            markdown.push_str(&format!(
                "| {label} | {:.4} | {:.4} | {:.4} | {:.3} | {} |\n",
                r.valid_mass,
                r.kl_q_u,
                r.kl_u_q,
                r.entropy,
                top3.join(", ")
            ));
        }
        summary.push(format!(
            "[samples]: {} draws, {:.1}% valid",
            e.samples,
            100.0 * (e.samples - e.invalid_samples) as f64 / e.samples.max(1) as f64
        ));
        Ok(Evaluation {
            metrics: serde_json::to_value(&e).expect("evaluation serialises"),
            summary,
            markdown,
        })
    }
}

/// Exact and sampled results of a policy on the rng task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RngEvaluation {
    /// The policy as the sampler runs it (task constraint applied, ⊤ forced at max_len).
    pub constrained: RngReport,
    /// The bare language model, no constraint: log p(digits, EOS | prompt).
    pub unconstrained: RngReport,
    /// Counts of each integer 0..=100 among `samples` draws of the constrained sampler.
    pub histogram: Vec<u64>,
    /// Draws that were not a valid integer.
    pub invalid_samples: u64,
    /// Number of draws.
    pub samples: u64,
}

/// Summary of one distribution over 0..=100.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RngReport {
    /// Probability of a valid answer.
    pub valid_mass: f64,
    /// KL(q̂‖U), nats.
    pub kl_q_u: f64,
    /// KL(U‖q̂), nats.
    pub kl_u_q: f64,
    /// Entropy of q̂, nats.
    pub entropy: f64,
    /// Top-10 integers with their normalised probability.
    pub top: Vec<(u32, f64)>,
    /// q(k⊤) for each k (unnormalised).
    pub probs: Vec<f64>,
}

impl From<RngMetrics> for RngReport {
    fn from(m: RngMetrics) -> Self {
        Self {
            valid_mass: m.valid_mass,
            kl_q_u: m.kl_q_u,
            kl_u_q: m.kl_u_q,
            entropy: m.entropy,
            top: m.top,
            probs: m.probs,
        }
    }
}

/// log q(k⊤) for k = 0..=100 under the constrained policy, by teacher forcing (batched).
pub fn constrained_log_probs(
    model: &(impl LanguageModel + ?Sized),
    task: &RngTask,
    constraint: &Constraint,
    device: &Device,
) -> Vec<f64> {
    let trajs: Vec<Trajectory> = (0..=MAX_VALUE)
        .map(|k| {
            let mut tokens = task.spell(k);
            tokens.pop();
            let forced = tokens.len() == constraint.max_len;
            Trajectory::new(tokens, forced)
        })
        .collect();
    let terms = policy_terms(model, &task.prompt, &trajs, constraint, device);
    sequence_log_probs(&terms, &trajs)
}

/// Evaluates `model` (a no-grad model) exactly, and from `samples` draws of the sampler.
pub fn evaluate_rng(
    model: &(impl LanguageModel + ?Sized),
    task: &RngTask,
    constraint: &Constraint,
    samples: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> RngEvaluation {
    let constrained =
        RngMetrics::from_log_probs(&constrained_log_probs(model, task, constraint, device)).into();
    let conts: Vec<Vec<u32>> = (0..=MAX_VALUE).map(|k| task.spell(k)).collect();
    let lp: Vec<f64> = score_continuations(model, &task.prompt, &conts, device)
        .iter()
        .map(|v| v.iter().map(|&x| x as f64).sum())
        .collect();
    let unconstrained = RngMetrics::from_log_probs(&lp).into();
    let mut histogram = vec![0u64; (MAX_VALUE + 1) as usize];
    let mut invalid = 0;
    let chunk = 256;
    let mut left = samples;
    while left > 0 {
        let n = left.min(chunk);
        let draws = sample_trajectories(
            model,
            &task.prompt,
            n,
            constraint,
            Behaviour::ON_POLICY,
            None,
            rng,
            device,
        );
        for t in draws {
            match task.parse(&t.tokens) {
                Some(k) => histogram[k as usize] += 1,
                None => invalid += 1,
            }
        }
        left -= n;
    }
    RngEvaluation {
        constrained,
        unconstrained,
        histogram,
        invalid_samples: invalid,
        samples: samples as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> RngTask {
        RngTask::from_parts(
            vec![1, 2, 3],
            [32, 33, 34, 35, 36, 37, 38, 39, 40, 41],
            2,
            -20.0,
        )
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
