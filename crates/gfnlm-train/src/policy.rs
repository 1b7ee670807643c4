//! One teacher-forced forward of the policy over prompt + trajectories: log q(token) and
//! log q(⊤) for every step, under the same constraint the sampler used.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use gfnlm_models::LlamaForCausalLm;
use gfnlm_models::generate::tokens_tensor;
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

/// Computes [`PolicyTerms`] for `trajectories` after `prompt` in one forward pass.
///
/// The prompt is run once (batch 1) and its KV cache broadcast to the batch, so its cost is
/// paid once; gradients flow through it when `model` is on an autodiff device. Logits get the
/// constraint's vocabulary offsets before the log-softmax (no temperature: the loss always uses
/// the untempered policy).
pub fn policy_terms(
    model: &LlamaForCausalLm,
    prompt: &[u32],
    trajectories: &[Trajectory],
    constraint: &Constraint,
    device: &Device,
) -> PolicyTerms {
    let b = trajectories.len();
    assert!(b > 0, "policy_terms: empty batch");
    let steps = trajectories
        .iter()
        .map(|t| t.tokens.len())
        .max()
        .unwrap_or(0);
    let vocab = model.vocab_size();
    let mut cache = model.new_cache();
    let h0 = model.forward_hidden(tokens_tensor(&[prompt.to_vec()], device), Some(&mut cache));
    let [_, p, d] = h0.dims();
    let h0 = h0.slice([0..1, p - 1..p, 0..d]).expand([b, 1, d]);
    let hidden = if steps > 0 {
        let padded: Vec<Vec<u32>> = trajectories
            .iter()
            .map(|t| {
                let mut r = t.tokens.clone();
                r.resize(steps, constraint.termination);
                r
            })
            .collect();
        let mut cache = cache.expand_batch(b);
        let h = model.forward_hidden(tokens_tensor(&padded, device), Some(&mut cache));
        Tensor::cat(vec![h0, h], 1)
    } else {
        h0
    };
    let offsets = Tensor::<1>::from_data(
        TensorData::new(constraint.logit_offsets(vocab), [vocab]),
        device,
    );
    let logits = model.logits(hidden) + offsets.reshape([1, 1, vocab]);
    let lp = log_softmax(logits, 2);
    let term = constraint.termination as usize;
    let log_pterm = lp
        .clone()
        .slice([0..b, 0..steps + 1, term..term + 1])
        .reshape([b, steps + 1]);
    let log_pf = if steps > 0 {
        let idx: Vec<i64> = trajectories
            .iter()
            .flat_map(|t| {
                (0..steps)
                    .map(move |k| t.tokens.get(k).copied().unwrap_or(constraint.termination) as i64)
            })
            .collect();
        let idx = Tensor::<3, Int>::from_data(TensorData::new(idx, [b, steps, 1]), device);
        lp.slice([0..b, 0..steps, 0..vocab])
            .gather(2, idx)
            .reshape([b, steps])
    } else {
        Tensor::zeros([b, 0], device)
    };
    PolicyTerms {
        log_pf,
        log_pterm,
        steps,
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
