//! PPO as an [`Update`]: the TRL recipe on the same constrained policy, sampler and rewards as
//! the GFlowNet, so the baselines are sampled and evaluated identically.
//!
//! Per micro-batch (one prompt, `batch_size` on-policy trajectories):
//!
//! - **Decisions.** Each action of a trajectory is a decision, and so is ⊤ unless it was forced
//!   at `max_len` (then it is not the policy's choice). Tool tokens are not actions: they carry
//!   no term, as in [`gfnlm_models::decode::policy_terms`].
//! - **One forward** of the policy (LoRA on, autodiff) over prompt + tokens gives the final
//!   hidden states; the LM head and the constraint's vocabulary offsets give log q of each
//!   decision, and a value head `Linear(hidden, 1)` on the hidden state of each decision's state
//!   gives V(s). The value head therefore shares the policy's body (TRL's
//!   `AutoModelForCausalLMWithValueHead`): the value loss also trains the adapters.
//! - **Rewards** (first pass over a rollout only): per decision
//!   r_t = −`kl_coef`·(log q_old(a_t) − log p_base(a_t)), with p_base the same weights with the
//!   adapters off under the same constraint, plus the task's terminal reward on the last
//!   decision: log R / reward temperature (`ppo_reward = "log_r"`) or 1/0 from
//!   `Task::is_valid` (`"valid"`, the paper's correctness reward for arithmetic).
//! - **GAE**(γ, λ) over the decisions of each trajectory with the old values (V = 0 after the
//!   last decision); advantages whitened over the micro-batch's decisions; returns = advantages
//!   + old values.
//! - **Loss**: clipped policy loss max(−A·ρ, −A·clip(ρ, 1 ± ε)) with ρ = exp(log q − log q_old),
//!   plus `value_coef` × ½·max((V − R)², (clip(V, V_old ± ε_v) − R)²), each a mean over the
//!   decisions of the micro-batch.
//! - **Epochs**: [`Update::passes`] = `ppo_epochs`; the trainer runs every micro-batch of a step
//!   that many times, one optimizer step per pass. The first pass computes and caches the old
//!   log-probabilities, values, advantages and returns ([`Rollout::pass`] = 0); later passes
//!   reuse them.
//! - **Value head**: weights on the host (zero-initialised), its gradients read in
//!   [`Update::after_backward`] and stepped by its own Adam (`ppo_value_lr`) in
//!   [`Update::after_step`]; saved with its Adam moments in the checkpoint's `state.json`, so
//!   resume is exact.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};
use gfnlm_models::CausalLm;
use gfnlm_models::generate::tokens_tensor;
use gfnlm_tasks::{Constraint, Trajectory};
use serde::{Deserialize, Serialize};

use crate::config::{PpoReward, TrainConfig};
use crate::trainer::TrainError;
use crate::update::{Rollout, Update, UpdateLoss};

/// PPO hyper-parameters (the `ppo_*` keys of [`TrainConfig`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PpoSettings {
    /// Optimizer steps over each rollout.
    pub epochs: usize,
    /// ε of the clipped policy loss.
    pub clip: f64,
    /// ε_v of the clipped value loss.
    pub value_clip: f64,
    /// Discount γ.
    pub gamma: f64,
    /// GAE λ.
    pub lambda: f64,
    /// Per-token KL penalty coefficient.
    pub kl_coef: f64,
    /// Weight of the value loss.
    pub value_coef: f64,
    /// Adam learning rate of the value head.
    pub value_lr: f64,
    /// Which terminal reward.
    pub reward: PpoReward,
}

impl PpoSettings {
    /// The settings of a config.
    pub fn from_config(cfg: &TrainConfig) -> Self {
        Self {
            epochs: cfg.ppo_epochs,
            clip: cfg.ppo_clip,
            value_clip: cfg.ppo_value_clip,
            gamma: cfg.ppo_gamma,
            lambda: cfg.ppo_lambda,
            kl_coef: cfg.ppo_kl_coef,
            value_coef: cfg.ppo_value_coef,
            value_lr: cfg.ppo_value_lr,
            reward: cfg.ppo_reward,
        }
    }
}

/// Diagnostics of the last micro-batch PPO computed a loss for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PpoStats {
    /// Clipped policy loss.
    pub pg_loss: f64,
    /// Clipped value loss (before `value_coef`).
    pub vf_loss: f64,
    /// Mean of log q_old − log p_base over the decisions (k1 KL estimate) of the rollout.
    pub kl: f64,
    /// Mean terminal reward of the rollout (as PPO sees it: tempered log R, or 0/1).
    pub mean_reward: f64,
    /// Fraction of decisions whose ratio lies outside [1 − ε, 1 + ε].
    pub clip_frac: f64,
}

/// Host-side Adam state of one parameter vector (β₁ = 0.9, β₂ = 0.999, ε = 1e-8). Saved as the
/// IEEE-754 bit patterns of the f64 values: serde_json's default float parser may be off by one
/// unit in the last place, and resume must be exact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct AdamVec {
    #[serde(with = "crate::exact_f64::vec")]
    value: Vec<f64>,
    #[serde(with = "crate::exact_f64::vec")]
    m: Vec<f64>,
    #[serde(with = "crate::exact_f64::vec")]
    v: Vec<f64>,
}

impl AdamVec {
    fn zeros(n: usize) -> Self {
        Self {
            value: vec![0.0; n],
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    fn step(&mut self, grad: &[f64], lr: f64, t: u64) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        let c1 = 1.0 - B1.powi(t as i32);
        let c2 = 1.0 - B2.powi(t as i32);
        for (i, &g) in grad.iter().enumerate() {
            self.m[i] = B1 * self.m[i] + (1.0 - B1) * g;
            self.v[i] = B2 * self.v[i] + (1.0 - B2) * g * g;
            let (m_hat, v_hat) = (self.m[i] / c1, self.v[i] / c2);
            self.value[i] -= lr * m_hat / (v_hat.sqrt() + 1e-8);
        }
    }
}

/// The value head `Linear(hidden, 1)` and its Adam state, as saved in checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ValueHead {
    /// Weight `[hidden]` (empty until the first forward tells the hidden size).
    weight: AdamVec,
    /// Bias `[1]`.
    bias: AdamVec,
    /// Adam steps taken.
    t: u64,
}

#[derive(Serialize, Deserialize)]
struct PpoState {
    value_head: ValueHead,
}

/// Where the decisions of a micro-batch sit in the teacher-forced pass: `[B, D]` row-major with
/// D = the most decisions of any trajectory; padding has mask 0 and index 0.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionPlan {
    /// Trajectories B.
    pub batch: usize,
    /// Width D.
    pub width: usize,
    /// Tokens after the prompt in the padded pass (T; positions run 0..=T).
    pub steps: usize,
    /// Per entry: the position (state length, 0..=T) the decision is taken at.
    pub positions: Vec<usize>,
    /// Per entry: the token chosen (an action, or ⊤).
    pub tokens: Vec<u32>,
    /// Per entry: 1 for a real decision, 0 for padding.
    pub mask: Vec<f32>,
    /// Decisions per trajectory.
    pub counts: Vec<usize>,
}

impl DecisionPlan {
    /// The decisions of `trajectories` under `constraint`: every action at the position where it
    /// was taken (state ends skip tool tokens), then ⊤ at the end of the last state unless it
    /// was forced (or the constraint has no ⊤ in a `vocab`-sized vocabulary).
    pub fn new(trajectories: &[Trajectory], constraint: &Constraint, vocab: usize) -> Self {
        let has_term = (constraint.termination as usize) < vocab;
        let mut rows: Vec<Vec<(usize, u32)>> = Vec::with_capacity(trajectories.len());
        for t in trajectories {
            let ends = t.state_ends();
            let n = t.num_actions();
            let mut row: Vec<(usize, u32)> = (0..n).map(|k| (ends[k], t.tokens[ends[k]])).collect();
            if !t.forced && has_term {
                row.push((ends[n], constraint.termination));
            }
            rows.push(row);
        }
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        let steps = trajectories
            .iter()
            .map(|t| t.tokens.len())
            .max()
            .unwrap_or(0);
        let b = trajectories.len();
        let (mut positions, mut tokens, mut mask) = (
            vec![0; b * width],
            vec![0u32; b * width],
            vec![0f32; b * width],
        );
        for (i, row) in rows.iter().enumerate() {
            for (d, &(p, tok)) in row.iter().enumerate() {
                positions[i * width + d] = p;
                tokens[i * width + d] = tok;
                mask[i * width + d] = 1.0;
            }
        }
        Self {
            batch: b,
            width,
            steps,
            positions,
            tokens,
            mask,
            counts: rows.iter().map(Vec::len).collect(),
        }
    }

    /// Number of real decisions.
    pub fn decisions(&self) -> usize {
        self.counts.iter().sum()
    }
}

/// log q of every decision `[B, D]` and the final hidden state of every decision's state
/// `[B, D, H]`, from ONE teacher-forced pass of `model` over prompt + tokens (the prompt run once
/// at batch 1 and its KV cache broadcast, as `teacher_forced` does). Logits are the LM head of
/// the hidden states plus the constraint's vocabulary offsets, untempered.
pub fn decision_terms(
    model: &CausalLm,
    prompt: &[u32],
    trajectories: &[Trajectory],
    constraint: &Constraint,
    plan: &DecisionPlan,
    device: &Device,
) -> (Tensor<2>, Tensor<3>) {
    assert!(!prompt.is_empty(), "ppo: the prompt must have a token");
    let (b, t, d) = (plan.batch, plan.steps, plan.width);
    let vocab = model.vocab_size();
    let mut cache = model.new_cache();
    let hp = model.forward_hidden(tokens_tensor(&[prompt.to_vec()], device), Some(&mut cache));
    let [_, p, h] = hp.dims();
    let first = hp.slice([0..1, p - 1..p, 0..h]).expand([b, 1, h]);
    let hidden = if t > 0 {
        let pad = constraint.termination.min(vocab as u32 - 1);
        let padded: Vec<Vec<u32>> = trajectories
            .iter()
            .map(|tr| {
                let mut r = tr.tokens.clone();
                r.resize(t, pad);
                r
            })
            .collect();
        let mut cache = cache.expand_batch(b);
        let rest = model.forward_hidden(tokens_tensor(&padded, device), Some(&mut cache));
        Tensor::cat(vec![first, rest], 1)
    } else {
        first
    };
    let offsets = Tensor::<1>::from_data(
        TensorData::new(constraint.logit_offsets(vocab), [vocab]),
        device,
    );
    let logits = model.logits(hidden.clone()) + offsets.reshape([1, 1, vocab]);
    let lp = log_softmax(logits, 2).reshape([b * (t + 1) * vocab]);
    let index = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [b * d]), device);
    let flat: Vec<i64> = (0..b * d)
        .map(|e| {
            let row = (e / d.max(1)) * (t + 1) + plan.positions[e];
            (row * vocab + plan.tokens[e] as usize) as i64
        })
        .collect();
    let lq = lp.select(0, index(flat)).reshape([b, d]);
    let rows: Vec<i64> = (0..b * d)
        .map(|e| ((e / d.max(1)) * (t + 1) + plan.positions[e]) as i64)
        .collect();
    let states = hidden
        .reshape([b * (t + 1), h])
        .select(0, index(rows))
        .reshape([b, d, h]);
    (lq, states)
}

/// Per-decision rewards of one trajectory: −kl_coef·(log q_old − log p_base) on every decision
/// and `terminal` added to the last.
pub fn shaped_rewards(lq_old: &[f64], lp_base: &[f64], kl_coef: f64, terminal: f64) -> Vec<f64> {
    let mut r: Vec<f64> = lq_old
        .iter()
        .zip(lp_base)
        .map(|(q, p)| -kl_coef * (q - p))
        .collect();
    if let Some(last) = r.last_mut() {
        *last += terminal;
    }
    r
}

/// GAE(γ, λ) of one trajectory: advantages and returns (= advantages + values), with the value
/// after the last step taken as 0 (the episode ends).
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lambda: f64) -> (Vec<f64>, Vec<f64>) {
    let n = rewards.len();
    assert_eq!(values.len(), n, "gae: one value per reward");
    let mut adv = vec![0.0; n];
    let mut last = 0.0;
    for k in (0..n).rev() {
        let next = if k + 1 < n { values[k + 1] } else { 0.0 };
        let delta = rewards[k] + gamma * next - values[k];
        last = delta + gamma * lambda * last;
        adv[k] = last;
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

/// Whitens the entries with `mask` = 1 in place (TRL's `masked_whiten`: mean removed, divided by
/// the square root of the unbiased variance + 1e-8); masked-out entries are set to 0.
pub fn whiten(values: &mut [f64], mask: &[f32]) {
    let n: f64 = mask.iter().map(|&m| m as f64).sum();
    if n == 0.0 {
        return;
    }
    let mean = values
        .iter()
        .zip(mask)
        .map(|(v, &m)| v * m as f64)
        .sum::<f64>()
        / n;
    let mut var = values
        .iter()
        .zip(mask)
        .map(|(v, &m)| (v - mean).powi(2) * m as f64)
        .sum::<f64>()
        / n;
    if n > 1.0 {
        var *= n / (n - 1.0);
    }
    let scale = 1.0 / (var + 1e-8).sqrt();
    for (v, &m) in values.iter_mut().zip(mask) {
        *v = if m > 0.0 { (*v - mean) * scale } else { 0.0 };
    }
}

/// The clipped policy loss per entry: max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε)).
pub fn clipped_policy_loss(ratio: Tensor<2>, adv: Tensor<2>, clip: f64) -> Tensor<2> {
    let l1 = adv.clone().neg() * ratio.clone();
    let l2 = adv.neg() * ratio.clamp(1.0 - clip, 1.0 + clip);
    l1.max_pair(l2)
}

/// The clipped value loss per entry: ½·max((V − R)², (V_old + clip(V − V_old, ±ε_v) − R)²).
pub fn clipped_value_loss(
    values: Tensor<2>,
    old: Tensor<2>,
    returns: Tensor<2>,
    clip: f64,
) -> Tensor<2> {
    let clipped = old.clone() + (values.clone() - old).clamp(-clip, clip);
    let l1 = (values - returns.clone()).square();
    let l2 = (clipped - returns).square();
    l1.max_pair(l2).mul_scalar(0.5)
}

/// What the first pass over a micro-batch fixes for the later ones.
#[derive(Debug, Clone)]
struct Cached {
    lq_old: Vec<f32>,
    v_old: Vec<f32>,
    adv: Vec<f32>,
    ret: Vec<f32>,
}

/// PPO with a value head, per-token KL penalty to the base model, GAE and clipped losses.
pub struct Ppo {
    settings: PpoSettings,
    head: ValueHead,
    /// The first pass's quantities of each micro-batch of the current step.
    cache: BTreeMap<usize, Cached>,
    /// The value head's tensors of the last loss (their gradients are read after backward).
    pending: Option<(Tensor<2>, Tensor<1>)>,
    grad_w: Vec<f64>,
    grad_b: f64,
    has_grad: bool,
    stats: PpoStats,
    /// Sums and counts of the diagnostics over the current step ([`Update::step_metrics`]).
    step_sums: BTreeMap<&'static str, (f64, usize)>,
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor")
}

impl Ppo {
    /// PPO with the config's `ppo_*` settings and a zero value head.
    pub fn new(cfg: &TrainConfig) -> Self {
        Self::with_settings(PpoSettings::from_config(cfg))
    }

    /// PPO with explicit settings.
    pub fn with_settings(settings: PpoSettings) -> Self {
        Self {
            settings,
            head: ValueHead::default(),
            cache: BTreeMap::new(),
            pending: None,
            grad_w: Vec::new(),
            grad_b: 0.0,
            has_grad: false,
            stats: PpoStats::default(),
            step_sums: BTreeMap::new(),
        }
    }

    fn record(&mut self, key: &'static str, value: f64) {
        let e = self.step_sums.entry(key).or_insert((0.0, 0));
        e.0 += value;
        e.1 += 1;
    }

    /// Diagnostics of the last micro-batch.
    pub fn stats(&self) -> &PpoStats {
        &self.stats
    }

    /// The value head's weights (empty before the first loss) and bias.
    pub fn value_head(&self) -> (&[f64], f64) {
        (
            &self.head.weight.value,
            self.head.bias.value.first().copied().unwrap_or(0.0),
        )
    }

    /// First pass over a micro-batch: rewards from the old policy and the base model, GAE,
    /// whitened advantages, returns.
    fn prepare(
        &mut self,
        policy: &CausalLm,
        rollout: &Rollout<'_>,
        plan: &DecisionPlan,
        lq_old: Vec<f32>,
        v_old: Vec<f32>,
        device: &Device,
    ) -> Cached {
        let s = &self.settings;
        let d = plan.width;
        let lp_base = if s.kl_coef != 0.0 {
            let valid_device = device.clone().without_autodiff();
            let mut base = policy.valid();
            gfnlm_lora::set_adapters_enabled(&mut base, false);
            let (lp, _) = decision_terms(
                &base,
                &rollout.example.prompt,
                rollout.trajectories,
                rollout.constraint,
                plan,
                &valid_device,
            );
            host(lp)
        } else {
            lq_old.clone()
        };
        let mut adv = vec![0f64; plan.batch * d];
        let mut ret = vec![0f64; plan.batch * d];
        let (mut kl, mut reward) = (0.0, 0.0);
        for (i, &n) in plan.counts.iter().enumerate() {
            let row =
                |v: &[f32]| -> Vec<f64> { v[i * d..i * d + n].iter().map(|&x| x as f64).collect() };
            let (q, p, v) = (row(&lq_old), row(&lp_base), row(&v_old));
            kl += q.iter().zip(&p).map(|(a, b)| a - b).sum::<f64>();
            let terminal = match s.reward {
                PpoReward::LogR => {
                    rollout.log_rewards[i]
                        .last()
                        .copied()
                        .unwrap_or(f64::NEG_INFINITY)
                        / rollout.reward_temperature
                }
                PpoReward::Valid => {
                    if rollout.valid.get(i).copied().unwrap_or(false) {
                        1.0
                    } else {
                        0.0
                    }
                }
            };
            reward += terminal;
            let r = shaped_rewards(&q, &p, s.kl_coef, terminal);
            let (a, rt) = gae(&r, &v, s.gamma, s.lambda);
            adv[i * d..i * d + n].copy_from_slice(&a);
            ret[i * d..i * d + n].copy_from_slice(&rt);
        }
        whiten(&mut adv, &plan.mask);
        self.stats.kl = kl / plan.decisions().max(1) as f64;
        self.stats.mean_reward = reward / plan.batch.max(1) as f64;
        self.record("ppo_kl", self.stats.kl);
        self.record("ppo_reward", self.stats.mean_reward);
        Cached {
            lq_old,
            v_old,
            adv: adv.into_iter().map(|x| x as f32).collect(),
            ret: ret.into_iter().map(|x| x as f32).collect(),
        }
    }
}

impl Update for Ppo {
    /// The value head's gradients and PPO's several passes are not averaged across ranks yet.
    fn data_parallel(&self) -> bool {
        false
    }

    fn name(&self) -> String {
        "ppo".into()
    }

    fn passes(&self) -> usize {
        self.settings.epochs.max(1)
    }

    fn loss(
        &mut self,
        policy: &CausalLm,
        rollout: &Rollout<'_>,
        device: &Device,
    ) -> Result<UpdateLoss, TrainError> {
        self.pending = None;
        let trajs = rollout.trajectories;
        if trajs.is_empty() {
            return Err(TrainError::Config("ppo: empty rollout".into()));
        }
        let plan = DecisionPlan::new(trajs, rollout.constraint, policy.vocab_size());
        let (b, d) = (plan.batch, plan.width);
        if d == 0 {
            return Err(TrainError::Config(
                "ppo: the rollout holds no decision (max_len = 0?)".into(),
            ));
        }
        let (lq, states) = decision_terms(
            policy,
            &rollout.example.prompt,
            trajs,
            rollout.constraint,
            &plan,
            device,
        );
        let hsize = states.dims()[2];
        if self.head.weight.value.is_empty() {
            self.head.weight = AdamVec::zeros(hsize);
            self.head.bias = AdamVec::zeros(1);
        }
        if self.head.weight.value.len() != hsize {
            return Err(TrainError::Config(format!(
                "ppo: the value head has {} inputs but the model's hidden size is {hsize}",
                self.head.weight.value.len()
            )));
        }
        let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let w = Tensor::<2>::from_data(
            TensorData::new(to32(&self.head.weight.value), [hsize, 1]),
            device,
        )
        .require_grad();
        let bias =
            Tensor::<1>::from_data(TensorData::new(to32(&self.head.bias.value), [1]), device)
                .require_grad();
        let values = (states.reshape([b * d, hsize]).matmul(w.clone())
            + bias.clone().reshape([1, 1]))
        .reshape([b, d]);
        self.pending = Some((w, bias));
        let cached = if rollout.pass == 0 {
            let c = self.prepare(
                policy,
                rollout,
                &plan,
                host(lq.clone()),
                host(values.clone()),
                device,
            );
            self.cache.insert(rollout.micro, c.clone());
            c
        } else {
            self.cache.get(&rollout.micro).cloned().ok_or_else(|| {
                TrainError::Config(format!(
                    "ppo: pass {} of micro-batch {} has no first pass",
                    rollout.pass, rollout.micro
                ))
            })?
        };
        let t2 = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [b, d]), device);
        let n = plan.decisions().max(1) as f64;
        let mask = t2(plan.mask.clone());
        let ratio = (lq - t2(cached.lq_old)).exp();
        let pg = (clipped_policy_loss(ratio.clone(), t2(cached.adv), self.settings.clip)
            * mask.clone())
        .sum()
        .div_scalar(n);
        let vf = (clipped_value_loss(
            values,
            t2(cached.v_old),
            t2(cached.ret),
            self.settings.value_clip,
        ) * mask)
            .sum()
            .div_scalar(n);
        let ratio_host = host(ratio);
        let clipped = ratio_host
            .iter()
            .zip(&plan.mask)
            .filter(|&(r, &m)| m > 0.0 && (*r as f64 - 1.0).abs() > self.settings.clip)
            .count();
        self.stats.clip_frac = clipped as f64 / n;
        self.stats.pg_loss = pg.clone().into_scalar::<f32>() as f64;
        self.stats.vf_loss = vf.clone().into_scalar::<f32>() as f64;
        self.record("ppo_clip_frac", self.stats.clip_frac);
        self.record("ppo_pg_loss", self.stats.pg_loss);
        self.record("ppo_vf_loss", self.stats.vf_loss);
        let loss = pg + vf.mul_scalar(self.settings.value_coef);
        Ok(UpdateLoss {
            loss,
            log_ratio_var: None,
            weight: 1.0,
        })
    }

    fn after_backward(&mut self, grads: &Gradients) {
        let Some((w, b)) = self.pending.take() else {
            return;
        };
        if self.grad_w.len() != self.head.weight.value.len() {
            self.grad_w = vec![0.0; self.head.weight.value.len()];
        }
        if let Some(g) = w.grad(grads) {
            for (acc, x) in self.grad_w.iter_mut().zip(host(g)) {
                *acc += x as f64;
            }
            self.has_grad = true;
        }
        if let Some(g) = b.grad(grads) {
            self.grad_b += g.into_scalar::<f32>() as f64;
            self.has_grad = true;
        }
    }

    fn step_metrics(&mut self) -> BTreeMap<String, f64> {
        std::mem::take(&mut self.step_sums)
            .into_iter()
            .map(|(k, (sum, n))| (k.to_string(), sum / n.max(1) as f64))
            .collect()
    }

    fn after_step(&mut self) {
        if !std::mem::take(&mut self.has_grad) {
            return;
        }
        let gw = std::mem::take(&mut self.grad_w);
        let gb = std::mem::take(&mut self.grad_b);
        self.head.t += 1;
        let (lr, t) = (self.settings.value_lr, self.head.t);
        self.head.weight.step(&gw, lr, t);
        self.head.bias.step(&[gb], lr, t);
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(PpoState {
            value_head: self.head.clone(),
        })
        .expect("state serialises")
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), String> {
        if state.is_null() {
            return Ok(());
        }
        let s: PpoState = serde_json::from_value(state).map_err(|e| e.to_string())?;
        let h = &s.value_head;
        if h.weight.m.len() != h.weight.value.len()
            || h.weight.v.len() != h.weight.value.len()
            || h.bias.value.len() > 1
        {
            return Err("ppo: damaged value head in state.json".into());
        }
        self.head = s.value_head;
        self.cache.clear();
        self.pending = None;
        self.grad_w.clear();
        self.grad_b = 0.0;
        self.has_grad = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < tol, "{a:?} vs {b:?}");
        }
    }

    const R: [f64; 4] = [0.1, -0.2, 0.0, 1.0];
    const V: [f64; 4] = [0.5, 0.4, 0.3, 0.2];

    #[test]
    fn gae_matches_hand_computation_gamma_1() {
        // δ = r_k + γ V_{k+1} − V_k = [0.0, −0.3, −0.1, 0.8] (V_4 = 0);
        // A_3 = 0.8, A_2 = −0.1 + 0.95·0.8 = 0.66, A_1 = −0.3 + 0.95·0.66 = 0.327,
        // A_0 = 0 + 0.95·0.327 = 0.31065.
        let (a, r) = gae(&R, &V, 1.0, 0.95);
        close(&a, &[0.31065, 0.327, 0.66, 0.8], 1e-12);
        close(&r, &[0.81065, 0.727, 0.96, 1.0], 1e-12);
    }

    #[test]
    fn gae_matches_hand_computation_discounted() {
        // γ = 0.9, λ = 0.8 (γλ = 0.72): δ = [0.1 + 0.36 − 0.5, −0.2 + 0.27 − 0.4, 0 + 0.18 − 0.3,
        // 1 − 0.2] = [−0.04, −0.33, −0.12, 0.8]; A_3 = 0.8, A_2 = −0.12 + 0.72·0.8 = 0.456,
        // A_1 = −0.33 + 0.72·0.456 = −0.00168, A_0 = −0.04 + 0.72·(−0.00168) = −0.0412096.
        let (a, r) = gae(&R, &V, 0.9, 0.8);
        close(&a, &[-0.0412096, -0.00168, 0.456, 0.8], 1e-12);
        close(&r, &[0.4587904, 0.39832, 0.756, 1.0], 1e-12);
        // λ = 0: one-step TD errors; λ = 1, γ = 1: Monte-Carlo return minus the value.
        let (a, _) = gae(&R, &V, 0.9, 0.0);
        close(&a, &[-0.04, -0.33, -0.12, 0.8], 1e-12);
        let (a, r) = gae(&R, &V, 1.0, 1.0);
        close(&r, &[0.9, 0.8, 1.0, 1.0], 1e-12);
        close(&a, &[0.4, 0.4, 0.7, 0.8], 1e-12);
    }

    #[test]
    fn whitening_uses_only_masked_entries() {
        let mut v = vec![1.0, 2.0, 3.0, 4.0, 100.0];
        whiten(&mut v, &[1.0, 1.0, 1.0, 1.0, 0.0]);
        // mean 2.5, unbiased variance 5/3.
        let s = (5.0f64 / 3.0 + 1e-8).sqrt();
        close(&v, &[-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s, 0.0], 1e-12);
        let mean: f64 = v[..4].iter().sum::<f64>() / 4.0;
        assert!(mean.abs() < 1e-12);
    }

    #[test]
    fn kl_shaping_puts_the_terminal_reward_on_the_last_decision() {
        let r = shaped_rewards(&[-1.0, -2.0, -0.5], &[-1.5, -1.0, -0.5], 0.1, 2.0);
        close(&r, &[-0.05, 0.1, 2.0], 1e-12);
        assert!(shaped_rewards(&[], &[], 0.1, 2.0).is_empty());
    }

    fn row(v: &[f32], device: &Device) -> Tensor<2> {
        Tensor::<2>::from_data(TensorData::new(v.to_vec(), [1, v.len()]), device)
    }

    #[test]
    fn policy_loss_clips_only_in_the_advantage_direction() {
        let device = Device::default().autodiff();
        // (ratio, advantage) → expected loss, and whether the gradient is cut.
        let cases: [(f32, f32, f32, bool); 6] = [
            (1.1, 1.0, -1.1, false), // inside the clip
            (1.5, 1.0, -1.2, true),  // A > 0, ρ above 1 + ε: clipped, no gradient
            (0.5, 1.0, -0.5, false), // A > 0, ρ below 1 − ε: the pessimistic unclipped term
            (1.5, -1.0, 1.5, false), // A < 0, ρ above 1 + ε: unclipped
            (0.5, -1.0, 0.8, true),  // A < 0, ρ below 1 − ε: clipped, no gradient
            (0.9, -2.0, 1.8, false), // inside
        ];
        let ratios: Vec<f32> = cases.iter().map(|c| c.0).collect();
        let advs: Vec<f32> = cases.iter().map(|c| c.1).collect();
        let log_ratio =
            row(&ratios.iter().map(|r| r.ln()).collect::<Vec<_>>(), &device).require_grad();
        let loss = clipped_policy_loss(log_ratio.clone().exp(), row(&advs, &device), 0.2);
        let got = host(loss.clone());
        let grads = loss.sum().backward();
        let g = host(log_ratio.grad(&grads).unwrap());
        for (k, &(r, a, want, cut)) in cases.iter().enumerate() {
            assert!(
                (got[k] - want).abs() < 1e-5,
                "case {k}: {} vs {want}",
                got[k]
            );
            // d/d log ρ of −A·ρ is −A·ρ.
            let want_g = if cut { 0.0 } else { -a * r };
            assert!(
                (g[k] - want_g).abs() < 1e-5,
                "case {k}: grad {} vs {want_g}",
                g[k]
            );
        }
    }

    #[test]
    fn value_loss_takes_the_larger_of_clipped_and_unclipped() {
        let device = Device::default();
        // V_old = 0, R = 1, ε_v = 0.2.
        let v = row(&[0.5, 0.1, -0.5], &device);
        let old = row(&[0.0, 0.0, 0.0], &device);
        let ret = row(&[1.0, 1.0, 1.0], &device);
        let got = host(clipped_value_loss(v, old, ret, 0.2));
        // 0.5: clipped to 0.2 → ½·0.64 (larger than ½·0.25); 0.1: inside → ½·0.81;
        // −0.5: clipped −0.2 → 1.44 < 2.25 unclipped → ½·2.25.
        let want = [0.32f32, 0.405, 1.125];
        for (x, y) in got.iter().zip(want) {
            assert!((x - y).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn decisions_skip_tool_tokens_and_forced_stops() {
        let c = Constraint {
            termination: 2,
            allowed: None,
            vocab_alpha: 0.0,
            min_len: 0,
            max_len: 3,
        };
        let tool = Trajectory {
            tokens: vec![5, 6, 7, 8, 9],
            forced: false,
            tool: vec![false, false, true, true, false],
        };
        let forced = Trajectory::new(vec![5, 6, 9], true);
        let plan = DecisionPlan::new(&[tool, forced], &c, 32);
        assert_eq!((plan.width, plan.steps), (4, 5));
        assert_eq!(plan.counts, vec![4, 3]);
        assert_eq!(plan.positions, vec![0, 1, 4, 5, 0, 1, 2, 0]);
        assert_eq!(plan.tokens, vec![5, 6, 9, 2, 5, 6, 9, 0]);
        assert_eq!(plan.mask, vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn value_head_adam_and_state_round_trip() {
        let mut p = Ppo::with_settings(PpoSettings {
            epochs: 2,
            clip: 0.2,
            value_clip: 0.2,
            gamma: 1.0,
            lambda: 0.95,
            kl_coef: 0.05,
            value_coef: 0.1,
            value_lr: 0.1,
            reward: PpoReward::LogR,
        });
        p.head.weight = AdamVec::zeros(2);
        p.head.bias = AdamVec::zeros(1);
        p.grad_w = vec![1.0, -2.0];
        p.grad_b = 0.5;
        p.has_grad = true;
        p.after_step();
        // Adam's first step moves every parameter by lr against its gradient's sign.
        close(p.value_head().0, &[-0.1, 0.1], 1e-6);
        assert!((p.value_head().1 + 0.1).abs() < 1e-6);
        let mut q = Ppo::with_settings(p.settings.clone());
        q.load_state(p.state()).unwrap();
        assert_eq!(q.head, p.head);
        assert_eq!(q.passes(), 2);
        // No gradient since the last step: nothing moves.
        q.after_step();
        assert_eq!(q.head, p.head);
    }
}
