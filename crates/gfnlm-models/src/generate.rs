//! Batched sampling with a shared prompt prefix and the KV cache, and teacher-forced scoring,
//! for any [`LanguageModel`] (a [`crate::CausalLm`] or one concrete architecture).

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::causal_lm::LanguageModel;
use crate::decode::{Behaviour, Constraint, decode};

/// Options for [`sample`].
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Number of sequences.
    pub num_samples: usize,
    /// Most new tokens per sequence.
    pub max_new_tokens: usize,
    /// Softmax temperature of the behaviour distribution (> 0).
    pub temperature: f64,
    /// RNG seed; the same seed gives the same samples.
    pub seed: u64,
    /// A sequence stops after emitting this token (included in its tokens).
    pub stop_token: Option<u32>,
}

/// One sampled continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// New token ids (the stop token included when emitted).
    pub tokens: Vec<u32>,
    /// Per-token log-probabilities under the model at temperature 1.
    pub token_logprobs: Vec<f32>,
}

impl Sample {
    /// Sum of the per-token log-probabilities: log p(tokens | prompt).
    pub fn logprob(&self) -> f64 {
        self.token_logprobs.iter().map(|&x| x as f64).sum()
    }
}

/// Host-side copy of a `[rows, vocab]` tensor.
pub fn rows_to_host(t: Tensor<2>) -> Vec<Vec<f32>> {
    let [r, v] = t.dims();
    let flat: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("f32 data");
    (0..r).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

/// Samples `num_samples` continuations of `prompt` with the one decode loop
/// ([`crate::decode::sample_trajectories`]): the whole vocabulary at `temperature`, a sequence
/// ends after `stop_token` (kept in its tokens) or `max_new_tokens`.
///
/// The prompt is run once (batch 1) and its KV cache shared by every row; rows then decode in
/// lockstep, one token per step, and finished rows are dropped from the batch.
pub fn sample(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    opts: &SampleOptions,
    device: &Device,
) -> Vec<Sample> {
    assert!(
        !prompt.is_empty(),
        "sample: the prompt must have at least one token"
    );
    assert!(opts.temperature > 0.0, "sample: temperature must be > 0");
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    // No stop token: an id no vocabulary has, so nothing is masked or ends a row early.
    let stop = opts.stop_token.unwrap_or(u32::MAX);
    let constraint = Constraint::unconstrained(stop, opts.max_new_tokens);
    let behaviour = Behaviour {
        temperature: opts.temperature,
        epsilon: 0.0,
    };
    let d = decode(
        model,
        prompt,
        opts.num_samples,
        &constraint,
        behaviour,
        None,
        true,
        &mut rng,
        device,
    );
    d.trajectories
        .into_iter()
        .zip(d.model_logprobs)
        .map(|(t, token_logprobs)| {
            let mut tokens = t.tokens;
            if tokens.len() < token_logprobs.len() {
                tokens.push(stop); // the stop token was drawn
            }
            Sample {
                tokens,
                token_logprobs,
            }
        })
        .collect()
}

/// `[rows, len]` int tensor from equal-length rows.
pub fn tokens_tensor(rows: &[Vec<u32>], device: &Device) -> Tensor<2, Int> {
    let len = rows.first().map(|r| r.len()).unwrap_or(0);
    assert!(
        rows.iter().all(|r| r.len() == len),
        "tokens_tensor: rows differ in length"
    );
    let flat: Vec<i64> = rows.iter().flatten().map(|&t| t as i64).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), len]), device)
}

/// Teacher-forced scores of `continuation` after `prompt`.
#[derive(Debug, Clone)]
pub struct Score {
    /// log p(continuation\[i\] | prompt, continuation\[..i\]).
    pub token_logprobs: Vec<f32>,
    /// For each continuation position and one past the end: the top-k next tokens `(id, log-prob)`.
    pub top_next: Vec<Vec<(u32, f32)>>,
}

impl Score {
    /// Sum of the token log-probabilities (f64 accumulation).
    pub fn total(&self) -> f64 {
        self.token_logprobs.iter().map(|&x| x as f64).sum()
    }
}

/// Log-probabilities `[seq, vocab]` of the next token at every position of `tokens`.
pub fn position_logprobs(
    model: &(impl LanguageModel + ?Sized),
    tokens: &[u32],
    device: &Device,
) -> Tensor<2> {
    let logits = model.forward(tokens_tensor(&[tokens.to_vec()], device), None);
    let [_, t, v] = logits.dims();
    log_softmax(logits.reshape([t, v]), 1)
}

/// Scores `continuation` after `prompt` in one forward pass, with the top-`k` alternatives.
pub fn score(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    continuation: &[u32],
    k: usize,
    device: &Device,
) -> Score {
    assert!(
        !prompt.is_empty(),
        "score: the prompt must have at least one token"
    );
    let all: Vec<u32> = prompt.iter().chain(continuation).copied().collect();
    let lp = position_logprobs(model, &all, device);
    let [t, v] = lp.dims();
    let p = prompt.len();
    // Rows p-1 .. t-1 predict continuation[0..] and the token after the end.
    let rows = lp.slice([p - 1..t, 0..v]);
    let host = rows_to_host(rows);
    let token_logprobs = continuation
        .iter()
        .enumerate()
        .map(|(i, &tok)| host[i][tok as usize])
        .collect();
    let top_next = host
        .iter()
        .map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            let k = k.min(row.len());
            idx.select_nth_unstable_by(k.saturating_sub(1).min(row.len() - 1), |&a, &b| {
                row[b].total_cmp(&row[a])
            });
            let mut top: Vec<(u32, f32)> = idx[..k].iter().map(|&i| (i as u32, row[i])).collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            top
        })
        .collect();
    Score {
        token_logprobs,
        top_next,
    }
}

/// Teacher-forced log-probabilities of many continuations of one prompt, batched.
///
/// The prompt is run once and its KV cache shared; the continuations are right-padded into one
/// `[n, max_len]` batch. Returns, for each continuation, log p(c\[j\] | prompt, c\[..j\]) for every j.
pub fn score_continuations(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    continuations: &[Vec<u32>],
    device: &Device,
) -> Vec<Vec<f32>> {
    assert!(
        !prompt.is_empty(),
        "score_continuations: the prompt must have at least one token"
    );
    let n = continuations.len();
    let max_len = continuations.iter().map(Vec::len).max().unwrap_or(0);
    if n == 0 || max_len == 0 {
        return vec![Vec::new(); n];
    }
    let mut cache = model.new_cache();
    let first = log_softmax(
        model.forward_last(tokens_tensor(&[prompt.to_vec()], device), Some(&mut cache)),
        1,
    );
    let first = rows_to_host(first).remove(0);
    let mut cache = cache.expand_batch(n);
    // Positions 0..max_len-1 of the padded batch predict tokens 1..max_len.
    let mut rest = Vec::new();
    if max_len > 1 {
        let padded: Vec<Vec<u32>> = continuations
            .iter()
            .map(|c| {
                let mut r = c[..c.len().min(max_len - 1)].to_vec();
                r.resize(max_len - 1, 0);
                r
            })
            .collect();
        let logits = model.forward(tokens_tensor(&padded, device), Some(&mut cache));
        let lp = log_softmax(logits, 2);
        let targets: Vec<i64> = continuations
            .iter()
            .flat_map(|c| (1..max_len).map(move |j| c.get(j).copied().unwrap_or(0) as i64))
            .collect();
        let idx =
            Tensor::<3, Int>::from_data(TensorData::new(targets, [n, max_len - 1, 1]), device);
        rest = lp
            .gather(2, idx)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 data");
    }
    continuations
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.iter()
                .enumerate()
                .map(|(j, &tok)| {
                    if j == 0 {
                        first[tok as usize]
                    } else {
                        rest[i * (max_len - 1) + j - 1]
                    }
                })
                .collect()
        })
        .collect()
}

/// Per-step log-probabilities of sequences after one prompt, from ONE teacher-forced pass.
#[derive(Debug, Clone)]
pub struct TeacherForced {
    /// log p(seq\[k\] | prompt, seq\[..k\]), `[B, T]` (T = longest sequence; padding meaningless).
    pub token: Tensor<2>,
    /// log p(`termination` | prompt, seq\[..k\]) for every prefix k = 0..=T, `[B, T+1]`.
    pub termination: Tensor<2>,
    /// T.
    pub steps: usize,
}

/// Teacher-forces `sequences` (right-padded) after `prompt` in one pass: the prompt runs once
/// at batch 1 and its KV cache is broadcast, so gradients (on an autodiff device) flow through
/// it once. `logit_offsets` `[vocab]` are added to the logits before the log-softmax (a
/// vocabulary constraint); no temperature.
pub fn teacher_forced(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    sequences: &[Vec<u32>],
    termination: u32,
    logit_offsets: Option<&[f32]>,
    device: &Device,
) -> TeacherForced {
    let b = sequences.len();
    assert!(b > 0, "teacher_forced: empty batch");
    assert!(
        !prompt.is_empty(),
        "teacher_forced: the prompt must have at least one token"
    );
    let steps = sequences.iter().map(Vec::len).max().unwrap_or(0);
    let mut cache = model.new_cache();
    let first = model.forward_last(tokens_tensor(&[prompt.to_vec()], device), Some(&mut cache));
    let vocab = first.dims()[1];
    let first = first.reshape([1, 1, vocab]).expand([b, 1, vocab]);
    let logits = if steps > 0 {
        let padded: Vec<Vec<u32>> = sequences
            .iter()
            .map(|s| {
                let mut r = s.clone();
                r.resize(steps, termination);
                r
            })
            .collect();
        let mut cache = cache.expand_batch(b);
        let rest = model.forward(tokens_tensor(&padded, device), Some(&mut cache));
        Tensor::cat(vec![first, rest], 1)
    } else {
        first
    };
    let logits = match logit_offsets {
        Some(o) => {
            assert_eq!(
                o.len(),
                vocab,
                "teacher_forced: one offset per vocabulary entry"
            );
            let o = Tensor::<1>::from_data(TensorData::new(o.to_vec(), [vocab]), device);
            logits + o.reshape([1, 1, vocab])
        }
        None => logits,
    };
    let lp = log_softmax(logits, 2);
    let t = termination as usize;
    let termination = lp
        .clone()
        .slice([0..b, 0..steps + 1, t..t + 1])
        .reshape([b, steps + 1]);
    let token = if steps > 0 {
        let idx: Vec<i64> = sequences
            .iter()
            .flat_map(|s| (0..steps).map(move |k| s.get(k).copied().unwrap_or(0) as i64))
            .collect();
        let idx = Tensor::<3, Int>::from_data(TensorData::new(idx, [b, steps, 1]), device);
        lp.slice([0..b, 0..steps, 0..vocab])
            .gather(2, idx)
            .reshape([b, steps])
    } else {
        Tensor::zeros([b, 0], device)
    };
    TeacherForced {
        token,
        termination,
        steps,
    }
}

/// Scores of [`score_suffix_after_prefixes`].
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixSuffixScores {
    /// log p(seq\[k\] | context, seq\[..k\]) of every token of every sequence, with the
    /// offsets added to the logits.
    pub tokens: Vec<Vec<f32>>,
    /// log p(suffix | context, seq\[..e\]) (no offsets) for every requested end e, in the
    /// order of `ends[i]`.
    pub suffix: Vec<Vec<f64>>,
}

/// The two parts of a reward log p(seq\[..e\] Y | context) at many prefix ends e of many
/// sequences: every token's log-probability (under `token_offsets`, a vocabulary constraint),
/// and log p(Y | context, seq\[..e\]) for each requested end.
///
/// One pass runs the context (batch 1) and all sequences (right-padded, the context's cache
/// broadcast); then, for each distinct end e, the rows that ask for it continue from their own
/// cache cut at `context + e` with Y\[..|Y|−1\] — so Y is run once per (sequence, end), never
/// the prefix again. The first token of Y comes from the full pass's logits at position e.
///
/// # Panics
/// If the context is empty or an end exceeds its sequence's length.
pub fn score_suffix_after_prefixes(
    model: &(impl LanguageModel + ?Sized),
    context: &[u32],
    sequences: &[Vec<u32>],
    ends: &[Vec<usize>],
    suffix: &[u32],
    token_offsets: Option<&[f32]>,
    device: &Device,
) -> PrefixSuffixScores {
    assert!(
        !context.is_empty(),
        "score_suffix_after_prefixes: the context must have at least one token"
    );
    assert_eq!(sequences.len(), ends.len(), "one list of ends per sequence");
    for (s, e) in sequences.iter().zip(ends) {
        assert!(e.iter().all(|&e| e <= s.len()), "an end past its sequence");
    }
    let n = sequences.len();
    let steps = sequences.iter().map(Vec::len).max().unwrap_or(0);
    let mut cache = model.new_cache();
    let first = model.forward_last(tokens_tensor(&[context.to_vec()], device), Some(&mut cache));
    let vocab = first.dims()[1];
    let offsets = token_offsets.map(|o| {
        assert_eq!(o.len(), vocab, "one offset per vocabulary entry");
        Tensor::<1>::from_data(TensorData::new(o.to_vec(), [vocab]), device).reshape([1, 1, vocab])
    });
    let first = first.reshape([1, 1, vocab]).expand([n.max(1), 1, vocab]);
    let context_cache = cache.clone();
    let (logits, full_cache) = if steps > 0 && n > 0 {
        let padded: Vec<Vec<u32>> = sequences
            .iter()
            .map(|s| {
                let mut r = s.clone();
                r.resize(steps, 0);
                r
            })
            .collect();
        let mut cache = cache.expand_batch(n);
        let rest = model.forward(tokens_tensor(&padded, device), Some(&mut cache));
        (Tensor::cat(vec![first, rest], 1), Some(cache))
    } else {
        (first, None)
    };
    // logits[:, k] predicts the token after seq[..k], k = 0..=steps.
    let width = logits.dims()[1];
    let rows = logits.dims()[0];
    let tokens: Vec<Vec<f32>> = if steps > 0 {
        let shifted = match &offsets {
            Some(o) => logits.clone().slice([0..rows, 0..steps, 0..vocab]) + o.clone(),
            None => logits.clone().slice([0..rows, 0..steps, 0..vocab]),
        };
        let idx: Vec<i64> = sequences
            .iter()
            .flat_map(|s| (0..steps).map(move |k| s.get(k).copied().unwrap_or(0) as i64))
            .collect();
        let idx = Tensor::<3, Int>::from_data(TensorData::new(idx, [n, steps, 1]), device);
        let got = rows_to_host(log_softmax(shifted, 2).gather(2, idx).reshape([n, steps]));
        got.into_iter()
            .zip(sequences)
            .map(|(row, s)| row[..s.len()].to_vec())
            .collect()
    } else {
        vec![Vec::new(); n]
    };
    let Some(&y0) = suffix.first() else {
        return PrefixSuffixScores {
            tokens,
            suffix: ends.iter().map(|e| vec![0.0; e.len()]).collect(),
        };
    };
    let y0 = y0 as usize;
    let first_y = rows_to_host(
        log_softmax(logits, 2)
            .slice([0..rows, 0..width, y0..y0 + 1])
            .reshape([rows, width]),
    );
    let mut suffix_lp: Vec<Vec<f64>> = ends
        .iter()
        .enumerate()
        .map(|(i, e)| e.iter().map(|&e| first_y[i][e] as f64).collect())
        .collect();
    if suffix.len() > 1 {
        let mut distinct: Vec<usize> = ends.iter().flatten().copied().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let input = suffix[..suffix.len() - 1].to_vec();
        let k = input.len();
        let targets: Vec<i64> = suffix[1..].iter().map(|&t| t as i64).collect();
        for e in distinct {
            let who: Vec<usize> = (0..n).filter(|&i| ends[i].contains(&e)).collect();
            let mut cache = match (&full_cache, e) {
                (Some(full), e) if e > 0 => {
                    let sel: Vec<i64> = who.iter().map(|&i| i as i64).collect();
                    let sel =
                        Tensor::<1, Int>::from_data(TensorData::new(sel, [who.len()]), device);
                    full.select_rows(sel).truncate(context.len() + e)
                }
                _ => context_cache.expand_batch(who.len()),
            };
            let out = model.forward(
                tokens_tensor(&vec![input.clone(); who.len()], device),
                Some(&mut cache),
            );
            let idx: Vec<i64> = (0..who.len())
                .flat_map(|_| targets.iter().copied())
                .collect();
            let idx = Tensor::<3, Int>::from_data(TensorData::new(idx, [who.len(), k, 1]), device);
            let lp = rows_to_host(log_softmax(out, 2).gather(2, idx).reshape([who.len(), k]));
            for (row, &i) in lp.iter().zip(&who) {
                let rest: f64 = row.iter().map(|&x| x as f64).sum();
                for (slot, &end) in suffix_lp[i].iter_mut().zip(&ends[i]) {
                    if end == e {
                        *slot += rest;
                    }
                }
            }
        }
    }
    PrefixSuffixScores {
        tokens,
        suffix: suffix_lp,
    }
}
