//! One teacher-forced forward of the policy over prompt + trajectories: log q(token) and
//! log q(⊤) for every step, under the same constraint the sampler used.

use burn::tensor::{Device, Tensor};
use gfnlm_models::LlamaForCausalLm;
use gfnlm_models::generate::teacher_forced;
use gfnlm_tasks::Constraint;

use crate::sampler::Trajectory;

/// Per-step policy terms of a batch, in the layout of `gfnlm_objectives::TrajectoryBatch`.
#[derive(Debug, Clone)]
pub struct PolicyTerms {
    /// log q(z_{k+1} | s_k), `[B, T]` (entries past a trajectory's end are meaningless).
    pub log_pf: Tensor<2>,
    /// log q(⊤ | s_k), `[B, T+1]`.
    pub log_pterm: Tensor<2>,
    /// T: the longest trajectory in the batch.
    pub steps: usize,
}

/// Computes [`PolicyTerms`] for `trajectories` after `prompt` in one forward pass
/// ([`gfnlm_models::generate::teacher_forced`]): the prompt runs once at batch 1 and its KV
/// cache is broadcast; gradients flow when `model` is on an autodiff device. Logits get the
/// constraint's vocabulary offsets before the log-softmax (no temperature: the loss always uses
/// the untempered policy).
pub fn policy_terms(
    model: &LlamaForCausalLm,
    prompt: &[u32],
    trajectories: &[Trajectory],
    constraint: &Constraint,
    device: &Device,
) -> PolicyTerms {
    let seqs: Vec<Vec<u32>> = trajectories.iter().map(|t| t.tokens.clone()).collect();
    let offsets = constraint.logit_offsets(model.vocab_size());
    let tf = teacher_forced(
        model,
        prompt,
        &seqs,
        constraint.termination,
        Some(&offsets),
        device,
    );
    PolicyTerms {
        log_pf: tf.token,
        log_pterm: tf.termination,
        steps: tf.steps,
    }
}

/// log q(Z⊤) of each trajectory under the constrained policy: Σ log q(z) + log q(⊤ | s_n), with
/// the forced stop at `max_len` counted as probability 1.
pub fn sequence_log_probs(terms: &PolicyTerms, trajectories: &[Trajectory]) -> Vec<f64> {
    let pf: Vec<f32> = terms
        .log_pf
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("f32");
    let pt: Vec<f32> = terms
        .log_pterm
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("f32");
    let t = terms.steps;
    trajectories
        .iter()
        .enumerate()
        .map(|(i, tr)| {
            let n = tr.tokens.len();
            let s: f64 = (0..n).map(|k| pf[i * t + k] as f64).sum();
            s + if tr.forced {
                0.0
            } else {
                pt[i * (t + 1) + n] as f64
            }
        })
        .collect()
}
