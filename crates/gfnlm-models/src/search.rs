//! Decoding baselines for evaluation (the paper's next-sentence table): greedy, beam search,
//! diverse (group) beam search, nucleus, ancestral and tempered sampling, all under a task's
//! [`Constraint`] and all with the KV cache.
//!
//! The deterministic searches follow Hugging Face `generate` (transformers 4.55) step for step,
//! so that they return the same sequences in the same order (checked against recorded outputs
//! in `tests/decoding_parity.rs`):
//!
//! - [`beam_search`] is HF's vectorised beam search (`num_beams = k`, `num_return_sequences = n`,
//!   `length_penalty = 1.0`, `early_stopping = False`, `eos_token_id = ⊤`,
//!   `max_new_tokens = max_len`): at every step the best `2k` continuations of all beams (summed
//!   log-probs); those ending in ⊤ (or reaching `max_len`) among the first `k` of them enter the
//!   pool of finished hypotheses with score `sum / length` (⊤ counted in the length), the best
//!   `k` others continue. It stops at `max_len`, or when the pool holds `k` hypotheses and the
//!   best running beam, divided by the current length, cannot beat the worst of them.
//! - [`diverse_beam_search`] is HF's group beam search (Vijayakumar et al. 2018,
//!   `num_beam_groups = g`, `diversity_penalty = λ`): the `k` beams form `g` groups of `k/g`
//!   beams, each a beam search of its own with its own pool; at every step the groups choose in
//!   order, and group `j`'s log-probs are lowered by `λ` × the number of times each token was
//!   chosen by groups `< j` at this step (Hamming diversity; the penalties stay in the scores).
//!   A group whose pool is done stops; HF then counts its beams as choosing the pad token, which
//!   is ⊤ here (the fixtures set `pad_token_id = eos_token_id`). Finally the `n` best of all
//!   pools are returned.
//!
//! Both use the model's log-softmax of `logits + offsets` (the constraint's `vocab_alpha` for
//! disallowed tokens) and, like HF's `min_new_tokens`, set log q(⊤) to −∞ before `min_len`
//! actions without renormalising. All beams advance in one batched forward per step, the KV
//! cache reordered by parent beam ([`crate::KvCache::select_rows`]).
//!
//! The sampling methods draw from the same constrained distribution as
//! [`crate::decode::sample_trajectories`] (⊤ excluded and renormalised before `min_len`);
//! nucleus sampling keeps, at every step, the smallest set of most probable tokens whose mass
//! reaches `top_p` (HF's `TopPLogitsWarper`, at least one token).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::causal_lm::LanguageModel;
use crate::decode::{Behaviour, Constraint, behaviour_probs, draw, sample_trajectories};
use crate::generate::{rows_to_host, tokens_tensor};

/// HF's default `length_penalty`: finished scores are `sum log p / length^1`.
pub const LENGTH_PENALTY: f64 = 1.0;

/// The diversity penalty [`DecodeMethod::parse`] gives diverse beam search.
pub const DEFAULT_DIVERSITY_PENALTY: f64 = 1.0;

/// A decoding method of the evaluation baselines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DecodeMethod {
    /// The argmax at every step. Deterministic: [`decode`] returns the one greedy sequence `n`
    /// times (what HF's `num_return_sequences = n` gives).
    Greedy,
    /// Beam search of width `beams`, returning its `n` best finished hypotheses (`n ≤ beams`).
    Beam {
        /// Beam width `k`.
        beams: usize,
    },
    /// Diverse (group) beam search: `beams` beams in `groups` groups, Hamming diversity
    /// `penalty`; returns the `n` best hypotheses of all groups (`n ≤ beams`).
    DiverseBeam {
        /// Total beam width `k` (a multiple of `groups`).
        beams: usize,
        /// Number of groups `g` (1 = plain beam search).
        groups: usize,
        /// Diversity penalty λ (HF `diversity_penalty`).
        penalty: f64,
    },
    /// Nucleus (top-p) sampling at temperature 1.
    Nucleus {
        /// Probability mass kept at every step, in (0, 1].
        top_p: f64,
    },
    /// Ancestral sampling from the (constrained) model, T = 1.
    Ancestral,
    /// Sampling at a temperature.
    Tempered {
        /// Softmax temperature (> 0).
        temperature: f64,
    },
}

impl DecodeMethod {
    /// A short label for tables: `greedy`, `beam (k = 100)`, `diverse beam (k = 100, g = 5,
    /// λ = 1)`, `nucleus (p = 0.95)`, `ancestral (T = 1)`, `tempered (T = 0.8)`.
    pub fn label(&self) -> String {
        match self {
            Self::Greedy => "greedy".into(),
            Self::Beam { beams } => format!("beam (k = {beams})"),
            Self::DiverseBeam {
                beams,
                groups,
                penalty,
            } => format!("diverse beam (k = {beams}, g = {groups}, λ = {penalty})"),
            Self::Nucleus { top_p } => format!("nucleus (p = {top_p})"),
            Self::Ancestral => "ancestral (T = 1)".into(),
            Self::Tempered { temperature } => format!("tempered (T = {temperature})"),
        }
    }

    /// [`Self::label`] with the beam width written relative to the `n` samples per prompt when
    /// it is a multiple of it: `beam (5n = 100)`, `diverse beam (5n = 100, g = 5, λ = 1)`.
    pub fn label_for(&self, n: usize) -> String {
        let width = |beams: usize| {
            if n > 0 && beams.is_multiple_of(n) {
                match beams / n {
                    1 => format!("n = {beams}"),
                    m => format!("{m}n = {beams}"),
                }
            } else {
                format!("k = {beams}")
            }
        };
        match self {
            Self::Beam { beams } => format!("beam ({})", width(*beams)),
            Self::DiverseBeam {
                beams,
                groups,
                penalty,
            } => format!(
                "diverse beam ({}, g = {groups}, λ = {penalty})",
                width(*beams)
            ),
            other => other.label(),
        }
    }

    /// Builds a method from its CLI name (`greedy`, `beam`, `diverse-beam`, `nucleus`,
    /// `ancestral`, `tempered`) and the flags that apply to it. Diverse beam search gets
    /// [`DEFAULT_DIVERSITY_PENALTY`]. The parameters are checked.
    pub fn parse(
        name: &str,
        beams: usize,
        groups: usize,
        top_p: f64,
        temperature: f64,
    ) -> Result<Self, String> {
        let m = match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "greedy" => Self::Greedy,
            "beam" | "beam-search" => Self::Beam { beams },
            "diverse-beam" | "diverse" | "group-beam" | "diverse-beam-search" => {
                Self::DiverseBeam {
                    beams,
                    groups,
                    penalty: DEFAULT_DIVERSITY_PENALTY,
                }
            }
            "nucleus" | "top-p" => Self::Nucleus { top_p },
            "ancestral" | "sample" | "sampling" => Self::Ancestral,
            "tempered" | "temperature" => Self::Tempered { temperature },
            other => {
                return Err(format!(
                    "unknown decoding method {other:?} (greedy, beam, diverse-beam, nucleus, \
                     ancestral, tempered)"
                ));
            }
        };
        m.validate()?;
        Ok(m)
    }

    /// Checks the method's own parameters.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Self::Beam { beams: 0 } => Err("beam search needs at least 1 beam".into()),
            Self::DiverseBeam {
                beams,
                groups,
                penalty,
            } => {
                if groups == 0 || beams == 0 || !beams.is_multiple_of(groups) {
                    Err(format!(
                        "diverse beam search needs beams ({beams}) to be a positive multiple of \
                         groups ({groups})"
                    ))
                } else if !(penalty >= 0.0 && penalty.is_finite()) {
                    Err(format!(
                        "the diversity penalty must be ≥ 0 and finite, got {penalty}"
                    ))
                } else {
                    Ok(())
                }
            }
            Self::Nucleus { top_p } if !(top_p > 0.0 && top_p <= 1.0) => {
                Err(format!("top_p must be in (0, 1], got {top_p}"))
            }
            Self::Tempered { temperature } if !(temperature > 0.0 && temperature.is_finite()) => {
                Err(format!(
                    "the temperature must be positive and finite, got {temperature}"
                ))
            }
            _ => Ok(()),
        }
    }

    /// Checks the method and that it can return `n` sequences (`n ≤ beams` for the beam
    /// searches).
    pub fn check(&self, n: usize) -> Result<(), String> {
        self.validate()?;
        match *self {
            Self::Beam { beams } | Self::DiverseBeam { beams, .. } if n > beams => Err(format!(
                "{} returns at most {beams} sequences, {n} asked",
                self.label()
            )),
            _ => Ok(()),
        }
    }

    /// True for greedy and the beam searches (no randomness: the RNG is not used).
    pub fn is_deterministic(&self) -> bool {
        matches!(
            self,
            Self::Greedy | Self::Beam { .. } | Self::DiverseBeam { .. }
        )
    }
}

/// A finished beam-search hypothesis: its tokens (⊤ excluded) and HF's sequence score (summed
/// log-probs, diversity penalties included, divided by the length with ⊤ counted).
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens, ⊤ excluded.
    pub tokens: Vec<u32>,
    /// HF's `sequences_scores`.
    pub score: f64,
}

/// `n` continuations of `prompt` (token ids, no BOS) on `model`, each ended by the
/// constraint's termination token (excluded from the result) or by `constraint.max_len` new
/// tokens. Honours the constraint's logit offsets and `min_len` (⊤ banned before it).
///
/// Greedy returns the greedy sequence `n` times; the beam searches return their `n` best
/// hypotheses, best first; the samplers return `n` independent draws. `rng` is used by the
/// samplers only.
///
/// # Panics
/// If the method's parameters are invalid or `n` exceeds the beam width
/// ([`DecodeMethod::check`]), or the prompt is empty.
pub fn decode(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    n: usize,
    method: &DecodeMethod,
    constraint: &Constraint,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Vec<Vec<u32>> {
    if let Err(e) = method.check(n) {
        panic!("search::decode: {e}");
    }
    assert!(
        !prompt.is_empty(),
        "search::decode: the prompt must have at least one token"
    );
    if n == 0 {
        return Vec::new();
    }
    let sample = |temperature: f64, rng: &mut ChaCha8Rng| {
        let behaviour = Behaviour {
            temperature,
            epsilon: 0.0,
        };
        sample_trajectories(model, prompt, n, constraint, behaviour, None, rng, device)
            .into_iter()
            .map(|t| t.tokens)
            .collect()
    };
    let tokens = |h: Vec<Hypothesis>| h.into_iter().map(|h| h.tokens).collect();
    match *method {
        DecodeMethod::Greedy => vec![greedy(model, prompt, constraint, device); n],
        DecodeMethod::Beam { beams } => {
            tokens(beam_search(model, prompt, n, beams, constraint, device))
        }
        DecodeMethod::DiverseBeam {
            beams,
            groups,
            penalty,
        } => tokens(diverse_beam_search(
            model, prompt, n, beams, groups, penalty, constraint, device,
        )),
        DecodeMethod::Nucleus { top_p } => {
            nucleus(model, prompt, n, top_p, constraint, rng, device)
        }
        DecodeMethod::Ancestral => sample(1.0, rng),
        DecodeMethod::Tempered { temperature } => sample(temperature, rng),
    }
}

/// The greedy continuation: argmax of `logits + offsets` at every step (⊤ excluded before
/// `min_len`; the lowest id wins a tie, like `torch.argmax`).
pub fn greedy(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    constraint: &Constraint,
    device: &Device,
) -> Vec<u32> {
    let offsets = constraint.logit_offsets(model.vocab_size());
    let term = constraint.termination as usize;
    let pick = |logits: &[f32], k: usize| {
        let mut best = (f64::NEG_INFINITY, usize::MAX);
        for (t, (&l, &o)) in logits.iter().zip(&offsets).enumerate() {
            if t == term && k < constraint.min_len {
                continue;
            }
            let v = l as f64 + o as f64;
            if best.1 == usize::MAX || v > best.0 {
                best = (v, t);
            }
        }
        best.1 as u32
    };
    sample_loop(model, prompt, 1, constraint, device, pick).remove(0)
}

/// `n` nucleus samples: at every step the smallest set of most probable tokens whose
/// probability reaches `top_p` ([`top_p_filter`]), renormalised, over the constrained
/// distribution at temperature 1.
pub fn nucleus(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    n: usize,
    top_p: f64,
    constraint: &Constraint,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Vec<Vec<u32>> {
    let offsets = constraint.logit_offsets(model.vocab_size());
    let allowed: Vec<bool> = offsets.iter().map(|&o| o == 0.0).collect();
    let pick = |logits: &[f32], k: usize| {
        let mut p = behaviour_probs(
            logits,
            &offsets,
            &allowed,
            constraint,
            k,
            Behaviour::ON_POLICY,
        );
        top_p_filter(&mut p, top_p);
        draw(&p, rng) as u32
    };
    sample_loop(model, prompt, n, constraint, device, pick)
}

/// HF's top-p rule on probabilities `p` (in place): keeps the most probable tokens while the
/// mass of the ones kept before is below `top_p` (so the smallest set whose mass reaches
/// `top_p`, and always at least one), zeroes the rest and renormalises. `top_p ≥ 1` keeps
/// everything.
pub fn top_p_filter(p: &mut [f64], top_p: f64) {
    if top_p >= 1.0 || p.is_empty() {
        return;
    }
    let by_prob = |a: &usize, b: &usize| p[*b].total_cmp(&p[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..p.len()).collect();
    // Most of the mass usually sits in a few hundred tokens: sort those first, the rest only
    // when they do not reach top_p.
    let head = idx.len().min(256);
    if head < idx.len() {
        idx.select_nth_unstable_by(head - 1, by_prob);
    }
    idx[..head].sort_unstable_by(by_prob);
    let kept = |idx: &[usize]| {
        let (mut mass, mut keep) = (0.0, 0);
        for (r, &i) in idx.iter().enumerate() {
            if r > 0 && mass >= top_p {
                break;
            }
            mass += p[i];
            keep += 1;
        }
        (mass, keep)
    };
    let (mut mass, mut keep) = kept(&idx[..head]);
    if keep == head && mass < top_p && head < idx.len() {
        idx.sort_unstable_by(by_prob);
        (mass, keep) = kept(&idx);
    }
    let mut mask = vec![false; p.len()];
    for &i in &idx[..keep] {
        mask[i] = true;
    }
    for (v, m) in p.iter_mut().zip(mask) {
        *v = if m { *v / mass } else { 0.0 };
    }
}

/// The batched sampling loop of greedy and nucleus: the prompt runs once and its cache is
/// shared by `n` rows; `pick(logits, k)` chooses each row's next token after `k` actions;
/// rows end at ⊤ (excluded) or `max_len` and leave the batch.
fn sample_loop(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    n: usize,
    constraint: &Constraint,
    device: &Device,
    mut pick: impl FnMut(&[f32], usize) -> u32,
) -> Vec<Vec<u32>> {
    assert!(
        !prompt.is_empty(),
        "search: the prompt must have at least one token"
    );
    let mut out = vec![Vec::new(); n];
    if n == 0 || constraint.max_len == 0 {
        return out;
    }
    let mut cache = model.new_cache();
    let first = rows_to_host(
        model.forward_last(tokens_tensor(&[prompt.to_vec()], device), Some(&mut cache)),
    )
    .remove(0);
    let mut cache = cache.expand_batch(n);
    let mut logits = vec![first; n];
    let mut active: Vec<usize> = (0..n).collect();
    loop {
        let (mut keep, mut next, mut still) = (Vec::new(), Vec::new(), Vec::new());
        for (row, &seq) in active.iter().enumerate() {
            let tok = pick(&logits[row], out[seq].len());
            if tok == constraint.termination {
                continue;
            }
            out[seq].push(tok);
            if out[seq].len() == constraint.max_len {
                continue;
            }
            keep.push(row);
            next.push(vec![tok]);
            still.push(seq);
        }
        if still.is_empty() {
            break;
        }
        if still.len() != active.len() {
            cache = cache.select_rows(index_tensor(&keep, device));
        }
        logits = rows_to_host(model.forward_last(tokens_tensor(&next, device), Some(&mut cache)));
        active = still;
    }
    out
}

fn index_tensor(rows: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    Tensor::from_data(TensorData::new(v, [rows.len()]), device)
}

/// One continuation of a beam: accumulated score, the parent's row in the logits/cache and the
/// token.
#[derive(Debug, Clone, Copy)]
struct Cand {
    score: f64,
    row: usize,
    token: u32,
    /// Position in the flattened `[rows, vocab]` scores (the tie-break, lower first).
    flat: usize,
}

/// Heap order: the greater entry is the *worse* candidate, so a max-heap keeps the worst on top.
struct Worst(Cand);

impl PartialEq for Worst {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Worst {
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.score
            .total_cmp(&self.0.score)
            .then(self.0.flat.cmp(&o.0.flat))
    }
}

/// Scores beams' next tokens as HF's beam searches do and returns the best `k`, best first:
/// `base[r] + log_softmax(logits[r] + offsets)[t] − penalty[t]`, skipping `banned`.
fn top_candidates(
    rows: &[&[f32]],
    base: &[f64],
    offsets: &[f32],
    banned: Option<usize>,
    penalty: Option<&[f64]>,
    k: usize,
) -> Vec<Cand> {
    let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(k + 1);
    for (r, row) in rows.iter().enumerate() {
        let vocab = row.len();
        let m = row
            .iter()
            .zip(offsets)
            .map(|(&l, &o)| l as f64 + o as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row
            .iter()
            .zip(offsets)
            .map(|(&l, &o)| (l as f64 + o as f64 - m).exp())
            .sum::<f64>()
            .ln();
        let c = base[r] - lse;
        for (t, (&l, &o)) in row.iter().zip(offsets).enumerate() {
            if Some(t) == banned {
                continue;
            }
            let mut s = c + (l as f64 + o as f64);
            if let Some(p) = penalty {
                s -= p[t];
            }
            if heap.len() == k {
                let worst = heap.peek().expect("k > 0").0.score;
                if s <= worst {
                    continue;
                }
                heap.pop();
            }
            heap.push(Worst(Cand {
                score: s,
                row: r,
                token: t as u32,
                flat: r * vocab + t,
            }));
        }
    }
    // into_sorted_vec is ascending in `Worst` order, i.e. best first.
    heap.into_sorted_vec().into_iter().map(|w| w.0).collect()
}

/// HF's finished-hypothesis score: `sum / length^LENGTH_PENALTY`.
fn normalise(sum: f64, length: usize) -> f64 {
    sum / (length as f64).powf(LENGTH_PENALTY)
}

/// The first step's logits: the prompt at batch 1, its cache.
fn prefill(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    device: &Device,
) -> (Vec<Vec<f32>>, crate::KvCache) {
    assert!(
        !prompt.is_empty(),
        "search: the prompt must have at least one token"
    );
    let mut cache = model.new_cache();
    let first = rows_to_host(
        model.forward_last(tokens_tensor(&[prompt.to_vec()], device), Some(&mut cache)),
    );
    (first, cache)
}

/// Advances the beams: the cache rows of `parents`, then one batched forward of `tokens`.
fn advance(
    model: &(impl LanguageModel + ?Sized),
    cache: &mut crate::KvCache,
    parents: &[usize],
    tokens: &[u32],
    device: &Device,
) -> Vec<Vec<f32>> {
    *cache = cache.select_rows(index_tensor(parents, device));
    let next: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
    rows_to_host(model.forward_last(tokens_tensor(&next, device), Some(cache)))
}

/// Beam search with `beams` beams, returning the `n` best finished hypotheses, best first (HF
/// `generate(num_beams = beams, num_return_sequences = n)` semantics, see the module docs).
///
/// # Panics
/// If `beams == 0`, `n > beams` or the prompt is empty.
pub fn beam_search(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    n: usize,
    beams: usize,
    constraint: &Constraint,
    device: &Device,
) -> Vec<Hypothesis> {
    assert!(
        beams > 0 && n <= beams,
        "beam_search: need 0 < n ({n}) ≤ beams ({beams})"
    );
    if constraint.max_len == 0 {
        return vec![
            Hypothesis {
                tokens: Vec::new(),
                score: 0.0,
            };
            n
        ];
    }
    let (mut logits, mut cache) = prefill(model, prompt, device);
    let vocab = logits[0].len();
    let offsets = constraint.logit_offsets(vocab);
    let term = constraint.termination as usize;
    let has_term = term < vocab;
    // Running beams: (score, tokens); row i of `logits` / the cache belongs to beam i.
    let mut running: Vec<(f64, Vec<u32>)> = vec![(0.0, Vec::new())];
    // Finished hypotheses, best first, at most `beams`.
    let mut pool: Vec<Hypothesis> = Vec::new();
    for step in 0..constraint.max_len {
        let len = step + 1;
        let banned = (has_term && step < constraint.min_len).then_some(term);
        let rows: Vec<&[f32]> = logits.iter().map(Vec::as_slice).collect();
        let base: Vec<f64> = running.iter().map(|b| b.0).collect();
        let cands = top_candidates(&rows, &base, &offsets, banned, None, 2 * beams);
        let last = len >= constraint.max_len;
        let hits = |c: &Cand| (has_term && c.token as usize == term) || last;
        let extend = |c: &Cand| {
            let mut t = running[c.row].1.clone();
            if !(has_term && c.token as usize == term) {
                t.push(c.token);
            }
            t
        };
        // Only the first `beams` candidates may finish (HF's top_num_beam_mask).
        for c in cands.iter().take(beams).filter(|c| hits(c)) {
            pool.push(Hypothesis {
                tokens: extend(c),
                score: normalise(c.score, len),
            });
        }
        // Stable: an older hypothesis stays ahead of a new one with the same score.
        pool.sort_by(|a, b| b.score.total_cmp(&a.score));
        pool.truncate(beams);
        if cands.iter().all(hits) {
            break;
        }
        let next: Vec<Cand> = cands
            .iter()
            .filter(|c| !hits(c))
            .take(beams)
            .copied()
            .collect();
        // HF's early-stop heuristic: the pool is full and the best running beam, at the
        // current length, cannot beat its worst hypothesis.
        if pool.len() == beams
            && normalise(next[0].score, len) <= pool.last().expect("full pool").score
        {
            break;
        }
        let parents: Vec<usize> = next.iter().map(|c| c.row).collect();
        let toks: Vec<u32> = next.iter().map(|c| c.token).collect();
        running = next.iter().map(|c| (c.score, extend(c))).collect();
        logits = advance(model, &mut cache, &parents, &toks, device);
    }
    pool.truncate(n);
    pool
}

/// HF's `BeamHypotheses`: the best `size` finished hypotheses of one group, in insertion order.
struct Pool {
    size: usize,
    items: Vec<Hypothesis>,
    worst: f64,
}

impl Pool {
    fn new(size: usize) -> Self {
        Self {
            size,
            items: Vec::new(),
            worst: 1e9,
        }
    }

    fn add(&mut self, tokens: Vec<u32>, sum: f64, length: usize) {
        let score = normalise(sum, length);
        if self.items.len() < self.size || score > self.worst {
            self.items.push(Hypothesis { tokens, score });
            if self.items.len() > self.size {
                let mut order: Vec<(f64, usize)> = self
                    .items
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (h.score, i))
                    .collect();
                order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                self.items.remove(order[0].1);
                self.worst = order[1].0;
            } else {
                self.worst = self.worst.min(score);
            }
        }
    }

    fn is_done(&self, best_sum: f64, length: usize) -> bool {
        self.items.len() >= self.size && self.worst >= normalise(best_sum, length)
    }
}

/// Diverse (group) beam search: `beams` beams in `groups` groups of `beams / groups`, Hamming
/// diversity `penalty`, returning the `n` best hypotheses of all groups, best first (HF
/// `generate(num_beams, num_beam_groups, diversity_penalty, num_return_sequences = n)`, see the
/// module docs). One group is plain [`beam_search`], as in HF.
///
/// # Panics
/// If `groups` does not divide `beams`, `n > beams` or the prompt is empty.
#[allow(clippy::too_many_arguments)]
pub fn diverse_beam_search(
    model: &(impl LanguageModel + ?Sized),
    prompt: &[u32],
    n: usize,
    beams: usize,
    groups: usize,
    penalty: f64,
    constraint: &Constraint,
    device: &Device,
) -> Vec<Hypothesis> {
    assert!(
        groups > 0 && beams > 0 && beams.is_multiple_of(groups) && n <= beams,
        "diverse_beam_search: need groups ({groups}) dividing beams ({beams}) and n ({n}) ≤ beams"
    );
    if groups == 1 {
        return beam_search(model, prompt, n, beams, constraint, device);
    }
    if constraint.max_len == 0 {
        return vec![
            Hypothesis {
                tokens: Vec::new(),
                score: 0.0,
            };
            n
        ];
    }
    let size = beams / groups;
    let (mut logits, mut cache) = prefill(model, prompt, device);
    let vocab = logits[0].len();
    let offsets = constraint.logit_offsets(vocab);
    let term = constraint.termination as usize;
    let has_term = term < vocab;
    // Per group: running beams (score, tokens, row in `logits` / the cache); its pool; done.
    // At the start each group has one live beam on the prompt (HF's others score −1e9 and
    // never reach the top 2·size).
    let mut running: Vec<Vec<(f64, Vec<u32>, usize)>> = vec![vec![(0.0, Vec::new(), 0)]; groups];
    let mut pools: Vec<Pool> = (0..groups).map(|_| Pool::new(size)).collect();
    let mut done = vec![false; groups];
    let mut pen = vec![0.0f64; vocab];
    let mut length = 0;
    for step in 0..constraint.max_len {
        let len = step + 1;
        length = len;
        let banned = (has_term && step < constraint.min_len).then_some(term);
        pen.iter_mut().for_each(|p| *p = 0.0);
        let mut next_running = vec![Vec::new(); groups];
        for g in 0..groups {
            if done[g] {
                // HF: a finished group's beams "choose" the pad token (⊤ here).
                if has_term {
                    pen[term] += penalty * size as f64;
                }
                continue;
            }
            let rows: Vec<&[f32]> = running[g].iter().map(|b| logits[b.2].as_slice()).collect();
            let base: Vec<f64> = running[g].iter().map(|b| b.0).collect();
            let p = (g > 0 && penalty != 0.0).then_some(pen.as_slice());
            let cands = top_candidates(&rows, &base, &offsets, banned, p, 2 * size);
            let mut chosen = Vec::with_capacity(size);
            for (rank, c) in cands.iter().enumerate() {
                let parent = &running[g][c.row];
                if has_term && c.token as usize == term {
                    if rank < size {
                        pools[g].add(parent.1.clone(), c.score, len);
                    }
                } else {
                    let mut t = parent.1.clone();
                    t.push(c.token);
                    chosen.push((c.score, t, parent.2, c.token));
                    if chosen.len() == size {
                        break;
                    }
                }
            }
            if let Some(best) = cands.first() {
                done[g] = pools[g].is_done(best.score, len);
            }
            for c in &chosen {
                pen[c.3 as usize] += penalty;
            }
            next_running[g] = chosen;
        }
        if done.iter().all(|&d| d) || len >= constraint.max_len {
            // Finalize below: the groups still running add their beams at this length.
            for (g, beams) in next_running.into_iter().enumerate() {
                running[g] = beams.into_iter().map(|b| (b.0, b.1, 0)).collect();
            }
            break;
        }
        // One forward for the beams of the groups still running.
        let (mut parents, mut toks) = (Vec::new(), Vec::new());
        for (g, beams) in next_running.into_iter().enumerate() {
            running[g] = if done[g] {
                Vec::new()
            } else {
                beams
                    .into_iter()
                    .map(|(score, tokens, parent, tok)| {
                        parents.push(parent);
                        toks.push(tok);
                        (score, tokens, parents.len() - 1)
                    })
                    .collect()
            };
        }
        logits = advance(model, &mut cache, &parents, &toks, device);
    }
    // HF's finalize: groups not done add their running beams, then the best n of all pools
    // (a stable ascending sort popped from the end: among equal scores the later one first).
    for g in 0..groups {
        if !done[g] {
            for (score, tokens, _) in std::mem::take(&mut running[g]) {
                pools[g].add(tokens, score, length);
            }
        }
    }
    let mut all: Vec<Hypothesis> = pools.into_iter().flat_map(|p| p.items).collect();
    all.reverse();
    all.sort_by(|a, b| b.score.total_cmp(&a.score));
    all.truncate(n);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        let mut p = vec![0.1, 0.5, 0.15, 0.25];
        top_p_filter(&mut p, 0.7);
        // 0.5 (< 0.7 before it) and 0.25 (0.5 < 0.7 before it); then 0.75 ≥ 0.7 stops.
        assert!((p[1] - 0.5 / 0.75).abs() < 1e-12 && (p[3] - 0.25 / 0.75).abs() < 1e-12);
        assert_eq!((p[0], p[2]), (0.0, 0.0));
        let mut q = vec![0.2, 0.3, 0.5];
        top_p_filter(&mut q, 1e-9);
        assert_eq!(q, vec![0.0, 0.0, 1.0], "always at least the top token");
        let mut r = vec![0.2, 0.3, 0.5];
        top_p_filter(&mut r, 1.0);
        assert_eq!(r, vec![0.2, 0.3, 0.5]);
        // More than the sorted head (256) needed: a flat distribution over 1000 tokens.
        let mut f = vec![1e-3; 1000];
        top_p_filter(&mut f, 0.5);
        assert_eq!(f.iter().filter(|&&x| x > 0.0).count(), 500);
    }

    #[test]
    fn top_candidates_are_sorted_and_penalised() {
        let rows: Vec<&[f32]> = vec![&[0.0, 1.0, 2.0], &[2.0, 0.0, 0.0]];
        let offsets = [0.0f32; 3];
        let c = top_candidates(&rows, &[0.0, -1.0], &offsets, None, None, 3);
        assert_eq!(
            c.iter().map(|c| (c.row, c.token)).collect::<Vec<_>>(),
            vec![(0, 2), (1, 0), (0, 1)],
            "−0.41, −1 − 0.24, −1.41"
        );
        let pen = [0.0, 0.0, 10.0];
        let c = top_candidates(&rows, &[0.0, -1.0], &offsets, Some(1), Some(&pen), 2);
        assert_eq!(
            c.iter().map(|c| (c.row, c.token)).collect::<Vec<_>>(),
            vec![(1, 0), (0, 0)]
        );
    }

    #[test]
    fn parse_and_labels() {
        let m = DecodeMethod::parse("diverse-beam", 100, 5, 0.95, 1.0).unwrap();
        assert_eq!(
            m,
            DecodeMethod::DiverseBeam {
                beams: 100,
                groups: 5,
                penalty: 1.0
            }
        );
        assert_eq!(m.label_for(20), "diverse beam (5n = 100, g = 5, λ = 1)");
        assert_eq!(
            DecodeMethod::parse("beam", 100, 1, 0.95, 1.0)
                .unwrap()
                .label_for(20),
            "beam (5n = 100)"
        );
        assert_eq!(
            DecodeMethod::parse("nucleus", 1, 1, 0.9, 1.0)
                .unwrap()
                .label(),
            "nucleus (p = 0.9)"
        );
        assert!(DecodeMethod::parse("diverse-beam", 10, 3, 0.9, 1.0).is_err());
        assert!(DecodeMethod::parse("nucleus", 1, 1, 0.0, 1.0).is_err());
        assert!(DecodeMethod::parse("tempered", 1, 1, 0.9, 0.0).is_err());
        assert!(DecodeMethod::parse("bogus", 1, 1, 0.9, 1.0).is_err());
        assert!(DecodeMethod::Beam { beams: 4 }.check(5).is_err());
        assert!(DecodeMethod::Greedy.is_deterministic());
        assert!(!DecodeMethod::Ancestral.is_deterministic());
    }
}
