//! The one decode loop: batched, constrained, tempered, ε-uniform sampling of trajectories with a
//! shared prompt prefix and the KV cache, with an optional tool that inserts tokens after an
//! action; and the matching teacher-forced policy terms (log q of every action and of ⊤ at every
//! state) in one pass.
//!
//! `gfnlm sample` ([`crate::generate::sample`]), the trainer's sampler and every task's
//! evaluation go through [`sample_trajectories`]; the loss goes through [`policy_terms`], under
//! the same [`Constraint`], so the sampler and the loss see the same distribution.

use std::collections::VecDeque;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::causal_lm::LanguageModel;
use crate::generate::{rows_to_host, teacher_forced, tokens_tensor};

/// Vocabulary and length constraints applied identically when sampling and in the loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    /// Token that ends a sequence (⊤). An id outside the vocabulary means "no ⊤": sequences
    /// run to `max_len`.
    pub termination: u32,
    /// Tokens the policy may emit (⊤ included); `None` allows the whole vocabulary.
    pub allowed: Option<Vec<u32>>,
    /// Offset added to the logits of disallowed tokens (the paper's `vocab_alpha`, e.g. −99).
    pub vocab_alpha: f32,
    /// ⊤ is not sampled before this many actions.
    pub min_len: usize,
    /// ⊤ is forced after this many actions.
    pub max_len: usize,
}

impl Constraint {
    /// The whole vocabulary, ⊤ = `termination` allowed from the first step, at most `max_len`
    /// actions.
    pub fn unconstrained(termination: u32, max_len: usize) -> Self {
        Self {
            termination,
            allowed: None,
            vocab_alpha: 0.0,
            min_len: 0,
            max_len,
        }
    }

    /// The additive logit offsets `[vocab]`: 0 for allowed tokens, `vocab_alpha` otherwise.
    pub fn logit_offsets(&self, vocab: usize) -> Vec<f32> {
        match &self.allowed {
            None => vec![0.0; vocab],
            Some(allowed) => {
                let mut v = vec![self.vocab_alpha; vocab];
                for &t in allowed {
                    if (t as usize) < vocab {
                        v[t as usize] = 0.0;
                    }
                }
                v
            }
        }
    }
}

/// A tool that extends the state after an action (e.g. a calculator after "="). Its tokens are
/// part of the state the model and the reward see, but they are not actions: they carry no
/// log q and get no gradient.
pub trait Tool: Send + Sync {
    /// Tokens to append after the action that ended `state` (every token after the prompt so
    /// far, the new action last); empty when the tool has nothing to say.
    fn call(&self, state: &[u32]) -> Vec<u32>;

    /// The most tokens one [`Tool::call`] can return. Sampling ends a sequence (a forced ⊤)
    /// before an action whose tool output could pass the model's context
    /// ([`context_forces_stop`]).
    fn max_output_tokens(&self) -> usize;
}

/// Whether ⊤ is forced at a state of `tokens` tokens after a prompt of `prompt` tokens because
/// one more action and the most output of the tool (`tool_max`) would not fit in
/// `max_positions`: the state must stay readable by the teacher-forced pass, which feeds the
/// prompt and every token.
pub fn context_forces_stop(
    prompt: usize,
    tokens: usize,
    tool_max: usize,
    max_positions: usize,
) -> bool {
    prompt + tokens + 1 + tool_max > max_positions
}

/// One sampled continuation: its tokens before ⊤, which of them a tool inserted, and whether
/// ⊤ was forced at `max_len`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trajectory {
    /// Tokens before ⊤ (⊤ itself excluded), actions and tool output in order.
    pub tokens: Vec<u32>,
    /// True when the sequence reached `max_len` actions and ⊤ was forced.
    pub forced: bool,
    /// The policy mask's complement: `tool[i]` is true when a tool inserted `tokens[i]`. Empty
    /// when no tool ran (every token is an action).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool: Vec<bool>,
}

impl Trajectory {
    /// A trajectory of actions only.
    pub fn new(tokens: Vec<u32>, forced: bool) -> Self {
        Self {
            tokens,
            forced,
            tool: Vec::new(),
        }
    }

    /// The trajectory that taking `actions` in order produces when `tool` (if any) runs after
    /// each action, as the sampler would: a demonstration made state-for-state comparable with
    /// sampled trajectories. Not forced.
    pub fn replay(actions: &[u32], tool: Option<&dyn Tool>) -> Self {
        let mut t = Self::new(Vec::new(), false);
        for &a in actions {
            t.push(a, false);
            if let Some(tool) = tool {
                for x in tool.call(&t.tokens) {
                    t.push(x, true);
                }
            }
        }
        t
    }

    /// Whether `tokens[i]` was chosen by the policy (not inserted by a tool).
    pub fn is_action(&self, i: usize) -> bool {
        !self.tool.get(i).copied().unwrap_or(false)
    }

    /// Whether any token came from a tool.
    pub fn has_tool_tokens(&self) -> bool {
        self.tool.iter().any(|&t| t)
    }

    /// Number of actions (the trajectory's length as the objectives count it).
    pub fn num_actions(&self) -> usize {
        (0..self.tokens.len())
            .filter(|&i| self.is_action(i))
            .count()
    }

    /// How many times a tool inserted tokens (runs of tool tokens).
    pub fn tool_calls(&self) -> usize {
        (0..self.tool.len())
            .filter(|&i| self.tool[i] && (i == 0 || !self.tool[i - 1]))
            .count()
    }

    /// Positions of the actions in `tokens`.
    pub fn action_positions(&self) -> Vec<usize> {
        (0..self.tokens.len())
            .filter(|&i| self.is_action(i))
            .collect()
    }

    /// For each state k = 0..=num_actions, how many tokens it holds: the state after action k
    /// includes the tool tokens that followed it.
    pub fn state_ends(&self) -> Vec<usize> {
        // State k ends where action k+1 starts; the last state holds every token.
        let pos = self.action_positions();
        let mut out = Vec::with_capacity(pos.len() + 1);
        out.push(pos.first().copied().unwrap_or(self.tokens.len()));
        for k in 1..=pos.len() {
            out.push(pos.get(k).copied().unwrap_or(self.tokens.len()));
        }
        out
    }

    fn push(&mut self, token: u32, from_tool: bool) {
        if from_tool && self.tool.is_empty() {
            self.tool = vec![false; self.tokens.len()];
        }
        self.tokens.push(token);
        if !self.tool.is_empty() {
            self.tool.push(from_tool);
        }
    }
}

/// How actions are drawn from the policy's logits: `softmax((logits + offsets) / temperature)`
/// mixed with ε·uniform over the allowed tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// Softmax temperature (> 0).
    pub temperature: f64,
    /// ε of ε-uniform exploration over the allowed tokens.
    pub epsilon: f64,
}

impl Behaviour {
    /// The policy itself: temperature 1, no exploration.
    pub const ON_POLICY: Self = Self {
        temperature: 1.0,
        epsilon: 0.0,
    };
}

/// The behaviour distribution at one state after `k` actions, as probabilities over the
/// vocabulary: `logits + offsets`, ⊤ excluded before `min_len`, divided by the temperature,
/// mixed with ε·uniform over the allowed tokens.
pub fn behaviour_probs(
    logits: &[f32],
    offsets: &[f32],
    allowed: &[bool],
    constraint: &Constraint,
    k: usize,
    behaviour: Behaviour,
) -> Vec<f64> {
    let term = constraint.termination as usize;
    let has_term = term < logits.len();
    let mut z: Vec<f64> = logits
        .iter()
        .zip(offsets)
        .map(|(&l, &o)| (l as f64 + o as f64) / behaviour.temperature)
        .collect();
    if has_term && k < constraint.min_len {
        z[term] = f64::NEG_INFINITY;
    }
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    // One exp per entry: z becomes exp(z − m), then the probabilities.
    for x in z.iter_mut() {
        *x = (*x - m).exp();
    }
    let total: f64 = z.iter().sum();
    for x in z.iter_mut() {
        *x /= total;
    }
    let mut p = z;
    if behaviour.epsilon > 0.0 {
        let ok: Vec<usize> = (0..p.len())
            .filter(|&i| allowed[i] && !(i == term && k < constraint.min_len))
            .collect();
        let u = behaviour.epsilon / ok.len() as f64;
        for v in p.iter_mut() {
            *v *= 1.0 - behaviour.epsilon;
        }
        for i in ok {
            p[i] += u;
        }
    }
    p
}

/// Draws an index from probabilities by inverse CDF.
pub fn draw(p: &[f64], rng: &mut ChaCha8Rng) -> usize {
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

/// log softmax(logits)[token] at temperature 1, in f64 (one pass, no allocation).
pub(crate) fn log_softmax_at(logits: &[f32], token: usize) -> f64 {
    let m = logits
        .iter()
        .map(|&x| x as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let lse = m + logits
        .iter()
        .map(|&x| (x as f64 - m).exp())
        .sum::<f64>()
        .ln();
    logits[token] as f64 - lse
}

/// Trajectories and, on request, the untempered model log-probability of every drawn token
/// (⊤ included when drawn).
pub(crate) struct Decoded {
    pub trajectories: Vec<Trajectory>,
    pub model_logprobs: Vec<Vec<f32>>,
}

/// Samples `n` trajectories after `prompt` (use a no-grad model, e.g. `model.valid()`).
///
/// The prompt runs once and its KV cache is shared by all rows; rows decode in lockstep, one
/// token per step, and finished rows leave the batch. ⊤ cannot be drawn before `min_len`
/// actions and is forced at `max_len`. After each action `tool` (if any) may insert tokens;
/// they are fed to the model one per step like actions but drawn from nothing.
#[allow(clippy::too_many_arguments)]
pub fn sample_trajectories(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    n: usize,
    constraint: &Constraint,
    behaviour: Behaviour,
    tool: Option<&dyn Tool>,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Vec<Trajectory> {
    decode(
        model, prompt, n, constraint, behaviour, tool, false, rng, device,
    )
    .trajectories
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn decode(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    n: usize,
    constraint: &Constraint,
    behaviour: Behaviour,
    tool: Option<&dyn Tool>,
    record: bool,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Decoded {
    assert!(
        behaviour.temperature > 0.0,
        "decode: temperature must be > 0"
    );
    assert!(
        !prompt.is_empty(),
        "decode: the prompt must have at least one token"
    );
    let mut out = vec![Trajectory::new(Vec::new(), false); n];
    let mut lps = vec![Vec::new(); if record { n } else { 0 }];
    if n == 0 || constraint.max_len == 0 {
        // Nothing to decide: every (empty) sequence is forced to end.
        for t in &mut out {
            t.forced = true;
        }
        return Decoded {
            trajectories: out,
            model_logprobs: lps,
        };
    }
    let mut cache = model.new_cache();
    let last = model.forward_last(tokens_tensor(&[prompt.to_vec()], device), Some(&mut cache));
    let first = rows_to_host(last).remove(0);
    let offsets = constraint.logit_offsets(first.len());
    let allowed: Vec<bool> = offsets.iter().map(|&o| o == 0.0).collect();
    let mut cache = cache.expand_batch(n);
    let mut logits = vec![first; n];
    let mut active: Vec<usize> = (0..n).collect();
    let mut pending: Vec<VecDeque<u32>> = vec![VecDeque::new(); n];
    let mut actions = vec![0usize; n];
    let tool_max = tool.map_or(0, |t| t.max_output_tokens());
    let max_positions = model.max_positions();
    loop {
        let (mut keep, mut next, mut still) = (Vec::new(), Vec::new(), Vec::new());
        for (row, &seq) in active.iter().enumerate() {
            let tok = if let Some(t) = pending[seq].pop_front() {
                out[seq].push(t, true);
                t
            } else {
                if context_forces_stop(prompt.len(), out[seq].tokens.len(), tool_max, max_positions)
                {
                    // The next action and its tool output might not fit the context: end here
                    // (the teacher-forced pass then reads this state as a forced stop).
                    out[seq].forced = true;
                    continue;
                }
                let p = behaviour_probs(
                    &logits[row],
                    &offsets,
                    &allowed,
                    constraint,
                    actions[seq],
                    behaviour,
                );
                let tok = draw(&p, rng) as u32;
                if record {
                    // When the behaviour is the model itself, p already holds its probabilities.
                    let lp = if behaviour == Behaviour::ON_POLICY
                        && constraint.allowed.is_none()
                        && actions[seq] >= constraint.min_len
                    {
                        p[tok as usize].ln()
                    } else {
                        log_softmax_at(&logits[row], tok as usize)
                    };
                    lps[seq].push(lp as f32);
                }
                if tok == constraint.termination {
                    continue;
                }
                out[seq].push(tok, false);
                actions[seq] += 1;
                if let Some(tool) = tool {
                    pending[seq].extend(tool.call(&out[seq].tokens));
                }
                if actions[seq] == constraint.max_len {
                    // No more decisions: the state (with any tool output) is forced to end.
                    for t in std::mem::take(&mut pending[seq]) {
                        out[seq].push(t, true);
                    }
                    out[seq].forced = true;
                    continue;
                }
                tok
            };
            keep.push(row as i64);
            next.push(vec![tok]);
            still.push(seq);
        }
        if still.is_empty() {
            break;
        }
        if still.len() != active.len() {
            let rows = Tensor::<1, Int>::from_data(TensorData::new(keep, [still.len()]), device);
            cache = cache.select_rows(rows);
        }
        logits = rows_to_host(model.forward_last(tokens_tensor(&next, device), Some(&mut cache)));
        active = still;
    }
    Decoded {
        trajectories: out,
        model_logprobs: lps,
    }
}

/// Per-action policy terms of a batch, in the layout of `gfnlm_objectives::TrajectoryBatch`.
#[derive(Debug, Clone)]
pub struct PolicyTerms {
    /// log q(a_{k+1} | s_k), `[B, A]` (entries past a trajectory's end are meaningless).
    pub log_pf: Tensor<2>,
    /// log q(⊤ | s_k), `[B, A+1]`.
    pub log_pterm: Tensor<2>,
    /// A: the most actions of any trajectory in the batch.
    pub steps: usize,
}

/// Computes [`PolicyTerms`] for `trajectories` after `prompt` in ONE teacher-forced pass
/// ([`teacher_forced`]): the prompt runs once at batch 1 and its KV cache is broadcast;
/// gradients flow when `model` is on an autodiff device. Logits get the constraint's vocabulary
/// offsets before the log-softmax (no temperature: the loss uses the untempered policy). Tool
/// tokens are fed to the model but contribute no term: the action terms are gathered at the
/// action positions and ⊤ at the end of each state.
pub fn policy_terms(
    model: &(impl LanguageModel + ?Sized),
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
    if !trajectories.iter().any(Trajectory::has_tool_tokens) {
        return PolicyTerms {
            log_pf: tf.token,
            log_pterm: tf.termination,
            steps: tf.steps,
        };
    }
    let b = trajectories.len();
    let a = trajectories
        .iter()
        .map(Trajectory::num_actions)
        .max()
        .unwrap_or(0);
    let index = |rows: Vec<Vec<usize>>, width: usize| {
        let flat: Vec<i64> = rows
            .into_iter()
            .flat_map(|mut r| {
                r.resize(width, 0);
                r.into_iter().map(|i| i as i64)
            })
            .collect();
        Tensor::<2, Int>::from_data(TensorData::new(flat, [b, width]), device)
    };
    let log_pf = if a > 0 {
        let pos = trajectories.iter().map(|t| t.action_positions()).collect();
        tf.token.gather(1, index(pos, a))
    } else {
        Tensor::zeros([b, 0], device)
    };
    let ends = trajectories.iter().map(|t| t.state_ends()).collect();
    let log_pterm = tf.termination.gather(1, index(ends, a + 1));
    PolicyTerms {
        log_pf,
        log_pterm,
        steps: a,
    }
}

/// log q(Z⊤) of each trajectory under the constrained policy: Σ log q(a) + log q(⊤ | s_n), with
/// the forced stop at `max_len` counted as probability 1.
pub fn sequence_log_probs(terms: &PolicyTerms, trajectories: &[Trajectory]) -> Vec<f64> {
    let host = |t: &Tensor<2>| -> Vec<f32> {
        t.clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .expect("f32")
    };
    let (pf, pt) = (host(&terms.log_pf), host(&terms.log_pterm));
    let t = terms.steps;
    trajectories
        .iter()
        .enumerate()
        .map(|(i, tr)| {
            let n = tr.num_actions();
            let s: f64 = (0..n).map(|k| pf[i * t + k] as f64).sum();
            s + if tr.forced {
                0.0
            } else {
                pt[i * (t + 1) + n] as f64
            }
        })
        .collect()
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
        let p = behaviour_probs(&logits, &offsets, &allowed, &c, 0, Behaviour::ON_POLICY);
        assert_eq!(p[0], 0.0, "⊤ before min_len");
        assert!(
            (p[2] - 1.0).abs() < 1e-6,
            "only token 2 is allowed and not masked: {p:?}"
        );
        let b = Behaviour {
            temperature: 1.0,
            epsilon: 0.5,
        };
        let p = behaviour_probs(&logits, &offsets, &allowed, &c, 1, b);
        let s: f64 = p.iter().sum();
        assert!((s - 1.0).abs() < 1e-12);
        assert!(
            p[0] > 0.25 && p[2] > 0.25,
            "ε spreads mass over the allowed tokens: {p:?}"
        );
        assert!(p[1] < 1e-30 && p[3] < 1e-30);
    }

    #[test]
    fn no_termination_token_means_none_is_masked() {
        let c = Constraint::unconstrained(u32::MAX, 4);
        let logits = [0.0f32, 0.0];
        let offsets = c.logit_offsets(2);
        let p = behaviour_probs(
            &logits,
            &offsets,
            &[true, true],
            &c,
            0,
            Behaviour::ON_POLICY,
        );
        assert_eq!(p, vec![0.5, 0.5]);
    }

    #[test]
    fn state_ends_and_action_positions_skip_tool_tokens() {
        let mut t = Trajectory::new(Vec::new(), false);
        for (tok, tool) in [(5, false), (6, false), (7, true), (8, true), (9, false)] {
            t.push(tok, tool);
        }
        assert_eq!(t.tokens, vec![5, 6, 7, 8, 9]);
        assert_eq!(t.action_positions(), vec![0, 1, 4]);
        assert_eq!(t.num_actions(), 3);
        // States: "" | 5 | 5 6 7 8 | 5 6 7 8 9.
        assert_eq!(t.state_ends(), vec![0, 1, 4, 5]);
        let plain = Trajectory::new(vec![1, 2], true);
        assert_eq!(plain.state_ends(), vec![0, 1, 2]);
        assert!(!plain.has_tool_tokens());
    }
}
