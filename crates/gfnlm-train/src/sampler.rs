//! Constrained, tempered, ε-uniform sampling of trajectories with a shared prompt prefix.

use burn::tensor::{Device, Int, Tensor, TensorData};
use gfnlm_models::LlamaForCausalLm;
use gfnlm_models::generate::{rows_to_host, tokens_tensor};
use gfnlm_tasks::Constraint;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One sampled continuation: its non-terminal tokens, and whether ⊤ was forced at `max_len`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trajectory {
    /// Tokens before ⊤ (⊤ itself excluded).
    pub tokens: Vec<u32>,
    /// True when the sequence reached `max_len` and ⊤ was forced.
    pub forced: bool,
}

/// The behaviour distribution at one state, as log-probabilities over the vocabulary.
///
/// `logits + offsets`, ⊤ excluded before `min_len`, divided by `temperature`, mixed with
/// ε·uniform over the allowed tokens.
fn behaviour(
    logits: &[f32],
    offsets: &[f32],
    allowed: &[bool],
    constraint: &Constraint,
    k: usize,
    temperature: f64,
    epsilon: f64,
) -> Vec<f64> {
    let term = constraint.termination as usize;
    let mut z: Vec<f64> = logits
        .iter()
        .zip(offsets)
        .map(|(&l, &o)| (l as f64 + o as f64) / temperature)
        .collect();
    if k < constraint.min_len {
        z[term] = f64::NEG_INFINITY;
    }
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = z.iter().map(|x| (x - m).exp()).sum();
    let mut p: Vec<f64> = z.iter().map(|x| (x - m).exp() / total).collect();
    if epsilon > 0.0 {
        let ok: Vec<usize> = (0..p.len())
            .filter(|&i| allowed[i] && !(i == term && k < constraint.min_len))
            .collect();
        let u = epsilon / ok.len() as f64;
        for v in p.iter_mut() {
            *v *= 1.0 - epsilon;
        }
        for i in ok {
            p[i] += u;
        }
    }
    p
}

fn draw(p: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (i, &x) in p.iter().enumerate() {
        acc += x;
        if u < acc {
            return i;
        }
    }
    p.iter().rposition(|&x| x > 0.0).unwrap_or(0)
}

/// Samples `n` trajectories after `prompt` from `model` (use a no-grad copy: `model.valid()`).
///
/// The prompt is run once and its KV cache shared by all rows; rows decode in lockstep and
/// finished rows leave the batch. ⊤ cannot be drawn before `min_len` tokens and is forced at
/// `max_len`.
#[allow(clippy::too_many_arguments)]
pub fn sample_trajectories(
    model: &LlamaForCausalLm,
    prompt: &[u32],
    n: usize,
    constraint: &Constraint,
    temperature: f64,
    epsilon: f64,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Vec<Trajectory> {
    assert!(temperature > 0.0, "temperature must be > 0");
    let vocab = model.vocab_size();
    let offsets = constraint.logit_offsets(vocab);
    let allowed: Vec<bool> = offsets.iter().map(|&o| o == 0.0).collect();
    let mut out = vec![
        Trajectory {
            tokens: Vec::new(),
            forced: false,
        };
        n
    ];
    if n == 0 {
        return out;
    }
    let mut cache = model.new_cache();
    let last = model.forward_last(tokens_tensor(&[prompt.to_vec()], device), Some(&mut cache));
    let first = rows_to_host(last).remove(0);
    let mut cache = cache.expand_batch(n);
    let mut logits = vec![first; n];
    let mut active: Vec<usize> = (0..n).collect();
    for k in 0..=constraint.max_len {
        if k == constraint.max_len {
            for &seq in &active {
                out[seq].forced = true;
            }
            break;
        }
        let (mut keep, mut next, mut still) = (Vec::new(), Vec::new(), Vec::new());
        for (row, &seq) in active.iter().enumerate() {
            let p = behaviour(
                &logits[row],
                &offsets,
                &allowed,
                constraint,
                k,
                temperature,
                epsilon,
            );
            let tok = draw(&p, rng) as u32;
            if tok == constraint.termination {
                continue;
            }
            out[seq].tokens.push(tok);
            keep.push(row as i64);
            next.push(vec![tok]);
            still.push(seq);
        }
        if still.is_empty() {
            break;
        }
        if k + 1 == constraint.max_len {
            // No more decisions to take: the next state is forced to terminate.
            for &seq in &still {
                out[seq].forced = true;
            }
            break;
        }
        if still.len() != active.len() {
            let rows = Tensor::<1, Int>::from_data(TensorData::new(keep, [still.len()]), device);
            cache = cache.select_rows(rows);
        }
        logits = rows_to_host(model.forward_last(tokens_tensor(&next, device), Some(&mut cache)));
        active = still;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_respects_min_len_mask_and_epsilon() {
        let c = Constraint {
            termination: 0,
            allowed: Some(vec![0, 2]),
            vocab_alpha: -99.0,
            min_len: 1,
            max_len: 3,
        };
        let offsets = c.logit_offsets(4);
        let allowed: Vec<bool> = offsets.iter().map(|&o| o == 0.0).collect();
        let logits = [1.0f32, 5.0, 0.0, 2.0];
        let p = behaviour(&logits, &offsets, &allowed, &c, 0, 1.0, 0.0);
        assert_eq!(p[0], 0.0, "⊤ before min_len");
        assert!(
            (p[2] - 1.0).abs() < 1e-6,
            "only token 2 is allowed and not masked: {p:?}"
        );
        let p = behaviour(&logits, &offsets, &allowed, &c, 1, 1.0, 0.5);
        let s: f64 = p.iter().sum();
        assert!((s - 1.0).abs() < 1e-12);
        assert!(
            p[0] > 0.25 && p[2] > 0.25,
            "ε spreads mass over the allowed tokens: {p:?}"
        );
        assert!(p[1] < 1e-30 && p[3] < 1e-30);
    }
}
