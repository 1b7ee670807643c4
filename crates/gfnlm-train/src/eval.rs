//! Exact and sampled evaluation on the random-integer task.

use burn::tensor::Device;
use gfnlm_models::LlamaForCausalLm;
use gfnlm_models::generate::score_continuations;
use gfnlm_tasks::rng::MAX_VALUE;
use gfnlm_tasks::{Constraint, RngMetrics, RngTask};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::policy::{policy_terms, sequence_log_probs};
use crate::sampler::{Trajectory, sample_trajectories};

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
    model: &LlamaForCausalLm,
    task: &RngTask,
    constraint: &Constraint,
    device: &Device,
) -> Vec<f64> {
    let trajs: Vec<Trajectory> = (0..=MAX_VALUE)
        .map(|k| {
            let mut tokens = task.spell(k);
            tokens.pop();
            let forced = tokens.len() == constraint.max_len;
            Trajectory { tokens, forced }
        })
        .collect();
    let terms = policy_terms(model, &task.prompt, &trajs, constraint, device);
    sequence_log_probs(&terms, &trajs)
}

/// Evaluates `model` (a no-grad snapshot) exactly, and from `samples` draws of the sampler.
pub fn evaluate_rng(
    model: &LlamaForCausalLm,
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
        for t in sample_trajectories(model, &task.prompt, n, constraint, 1.0, 0.0, rng, device) {
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
