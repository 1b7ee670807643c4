//! The training loop (design §3), the same for every task, architecture and update rule:
//! pick an example → rollout (replay or sample) → the task's per-state rewards → the update
//! rule's loss → backward → AdamW on the LoRA parameters; replay buffer, schedules,
//! checkpoints, exact resume.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use burn::module::{Module, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams};
use burn::tensor::Device;
use gfnlm_lora::{AdaptableModel, LoraConfig};
use gfnlm_models::CausalLm;
use gfnlm_models::decode::{Behaviour, sample_trajectories};
use gfnlm_objectives::ObjectiveError;
use gfnlm_tasks::{Constraint, Example, RewardContext, Split, Task, Trajectory};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::buffer::{Entry, ReplayBuffer};
use crate::collective::{
    Collective, CollectiveError, SingleProcess, adapter_params, average_gradients, fnv1a, fnv1a_f32,
};
use crate::config::TrainConfig;
use crate::schedule::{LrSchedule, RewardTemperature};
use crate::update::{Rollout, RolloutSource, Update, UpdateLoss};

/// What went wrong in a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad configuration.
    #[error("config: {0}")]
    Config(String),
    /// LoRA setup or files.
    #[error(transparent)]
    Lora(#[from] gfnlm_lora::LoraError),
    /// The objective refused its input.
    #[error("objective: {0}")]
    Objective(#[from] gfnlm_objectives::ObjectiveError),
    /// Too many non-finite losses in a row; the offending batch was saved.
    #[error(
        "{count} non-finite losses in a row at step {step} (lr = {lr:e}); the last batch is in {batch_file}. Lower lr or check the rewards."
    )]
    NonFinite {
        /// Consecutive non-finite losses.
        count: usize,
        /// Optimizer step.
        step: usize,
        /// Learning rate of that step.
        lr: f64,
        /// Where the batch was written.
        batch_file: PathBuf,
    },
    /// Checkpoint I/O.
    #[error("{path}: {message}")]
    Checkpoint {
        /// File or folder.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The ranks of a data-parallel run disagree, or a collective operation failed.
    #[error("ranks: {0}")]
    Ranks(String),
}

impl From<CollectiveError> for TrainError {
    fn from(e: CollectiveError) -> Self {
        TrainError::Ranks(e.0)
    }
}

/// Metrics of one optimizer step (one JSONL line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Optimizer step (1-based after the update).
    pub step: usize,
    /// Mean loss over the micro-batches (of every pass, for rules with several: PPO).
    pub loss: f64,
    /// Mean untempered terminal log R.
    pub mean_log_r: f64,
    /// Max untempered terminal log R.
    pub max_log_r: f64,
    /// Fraction of trajectories whose terminal reward is the best possible (task-valid).
    pub valid_frac: f64,
    /// Mean number of tokens before ⊤.
    pub mean_len: f64,
    /// Var(log R − log q(Z⊤)) of the last micro-batch (→ 0 at convergence).
    pub log_ratio_var: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Reward temperature used.
    pub reward_temp: f64,
    /// Behaviour policies used (`replay`, `tempered`, `on-policy`).
    pub behaviour: Vec<String>,
    /// Non-finite micro-batches skipped.
    pub skipped: usize,
    /// Wall-clock seconds of the step.
    pub seconds: f64,
    /// Of which: sampling trajectories from the policy.
    #[serde(default)]
    pub sample_s: f64,
    /// Of which: the task's rewards (and step metrics) of the sampled trajectories.
    #[serde(default)]
    pub reward_s: f64,
    /// Of which: the update rule's losses and their backward passes (all passes).
    #[serde(default)]
    pub update_s: f64,
    /// Ranks the step's figures were reduced over (absent in a single process): loss,
    /// rewards, valid fraction, lengths and `skipped` are over all ranks' micro-batches; the
    /// timings, `log_ratio_var`, `behaviour` and the task's metrics are rank 0's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<usize>,
    /// Seconds rank 0 spent in the gradient all-reduce, host copies included (data-parallel
    /// runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allreduce_s: Option<f64>,
    /// Seconds rank 0 waited for the slowest rank before the all-reduce (load imbalance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_wait_s: Option<f64>,
    /// log Z after the step (objective `tb` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_z: Option<f64>,
    /// The task's own metrics ([`Task::step_metrics`]) averaged over the step's freshly
    /// sampled micro-batches (e.g. next-sentence's unpenalised log-likelihood).
    #[serde(flatten)]
    pub task_metrics: BTreeMap<String, f64>,
    /// The update rule's own diagnostics ([`Update::step_metrics`], e.g. PPO's `ppo_kl`,
    /// `ppo_clip_frac`, `ppo_pg_loss`, `ppo_vf_loss`, `ppo_reward`).
    #[serde(flatten)]
    pub update_metrics: BTreeMap<String, f64>,
}

/// Serialisable state beside the adapters and optimizer in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    step: usize,
    rng: ChaCha8Rng,
    buffer: ReplayBuffer,
    nonfinite_streak: usize,
    config: TrainConfig,
    /// The update rule's own state (e.g. log Z per prompt).
    #[serde(default)]
    update: serde_json::Value,
    /// Ranks of the run that wrote it; ranks 1.. keep their own RNG and buffer in
    /// `ranks/rank-R.json` ([`RankState`]).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    world_size: usize,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// What differs between the ranks of a data-parallel run (rank 0's is in `state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RankState {
    rank: usize,
    rng: ChaCha8Rng,
    buffer: ReplayBuffer,
    nonfinite_streak: usize,
}

/// A fine-tuning run: any [`CausalLm`], any [`Task`], any [`Update`] rule.
pub struct Trainer {
    /// The configuration.
    pub cfg: TrainConfig,
    /// Policy (LoRA on the base model) on the autodiff device.
    pub model: CausalLm,
    /// The task.
    pub task: Box<dyn Task>,
    /// The learning rule.
    pub update: Box<dyn Update>,
    /// Replay buffer (per prompt).
    pub buffer: ReplayBuffer,
    /// Optimizer steps done.
    pub step: usize,
    optim: burn::optim::ModuleOptimizer,
    device: Device,
    rng: ChaCha8Rng,
    nonfinite_streak: usize,
    collective: Rc<dyn Collective>,
}

/// The LoRA config of a training config.
pub fn lora_config(cfg: &TrainConfig) -> LoraConfig {
    let targets: Vec<&str> = cfg.lora.target_modules.iter().map(String::as_str).collect();
    let mut l = LoraConfig::new(cfg.lora.r, cfg.lora.alpha, &targets);
    l.dropout = cfg.lora.dropout;
    l
}

/// Replaces the freshly attached adapters by the PEFT adapter in `dir` (`init_adapter`),
/// which must have `[lora]`'s rank, alpha and target modules.
fn init_from_adapter(
    model: &mut CausalLm,
    cfg: &TrainConfig,
    dir: &Path,
    device: &Device,
) -> Result<(), TrainError> {
    let want = lora_config(cfg);
    let got = gfnlm_lora::load_peft(model, dir, device)?;
    let mut a: Vec<&String> = got.target_modules.iter().collect();
    let mut b: Vec<&String> = want.target_modules.iter().collect();
    a.sort();
    b.sort();
    if got.r != want.r || got.alpha != want.alpha || a != b {
        return Err(TrainError::Config(format!(
            "init_adapter {}: r = {}, alpha = {}, targets {:?}, but [lora] has r = {}, alpha = {}, targets {:?}",
            dir.display(),
            got.r,
            got.alpha,
            got.target_modules,
            want.r,
            want.alpha,
            want.target_modules
        )));
    }
    gfnlm_lora::freeze_all(model);
    Ok(())
}

/// Gives every adapter parameter a stable id derived from its layer name, so optimizer state
/// saved in one process matches the parameters of the next (resume).
fn stable_adapter_ids(model: &mut CausalLm) {
    let fnv = |s: &str| fnv1a(s.bytes());
    model.for_each_linear_mut(&mut |name, lin| {
        if let Some(l) = lin.lora.as_mut() {
            l.lora_a = Param::initialized(
                ParamId::from(fnv(&format!("{name}.lora_A"))),
                l.lora_a.val(),
            )
            .set_require_grad(true);
            l.lora_b = Param::initialized(
                ParamId::from(fnv(&format!("{name}.lora_B"))),
                l.lora_b.val(),
            )
            .set_require_grad(true);
        }
    });
}

/// One micro-batch's trajectories with their rewards and how they were obtained.
struct Sampled {
    trajectories: Vec<Trajectory>,
    log_rewards: Vec<Vec<f64>>,
    behaviour: &'static str,
    /// The task's metrics of a fresh sample (empty for replay).
    task_metrics: BTreeMap<String, f64>,
    /// Seconds spent sampling and scoring (0 for replay and demonstrations).
    sample_s: f64,
    reward_s: f64,
}

impl Trainer {
    /// Sets up a fresh run of `update` on `task`: LoRA on `base` (seeded), AdamW, empty buffer.
    ///
    /// `device` must be an autodiff device (`Device::…().autodiff()`); `base` must live on it.
    pub fn new(
        cfg: TrainConfig,
        mut base: CausalLm,
        task: Box<dyn Task>,
        update: Box<dyn Update>,
        device: Device,
    ) -> Result<Self, TrainError> {
        cfg.validate().map_err(TrainError::Config)?;
        assert!(
            device.is_autodiff(),
            "Trainer::new needs an autodiff device"
        );
        if task.examples(Split::Train).is_empty() {
            return Err(TrainError::Config(format!(
                "task '{}' has no training examples",
                task.name()
            )));
        }
        gfnlm_tasks::check_context(&*task, task.examples(Split::Train), base.max_positions())
            .map_err(|e| TrainError::Config(e.to_string()))?;
        gfnlm_lora::apply_lora_seeded(&mut base, &lora_config(&cfg), cfg.seed, &device)?;
        if let Some(dir) = &cfg.init_adapter {
            init_from_adapter(&mut base, &cfg, Path::new(dir), &device)?;
        }
        stable_adapter_ids(&mut base);
        base.set_weight_precision(cfg.precision)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        let optim = AdamWConfig::new()
            .with_weight_decay(cfg.weight_decay as f32)
            .init();
        let mut trainer = Self {
            buffer: ReplayBuffer::new(cfg.buffer_size, cfg.sim_tolerance),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            model: base,
            task,
            update,
            step: 0,
            optim,
            device,
            nonfinite_streak: 0,
            collective: Rc::new(SingleProcess),
        };
        if trainer.cfg.seed_buffer && trainer.update.source() == RolloutSource::Sample {
            trainer.seed_buffer();
        }
        Ok(trainer)
    }

    /// Makes this trainer one rank of a data-parallel run over `collective` (before the first
    /// step or resume): its sampling RNG takes the rank's own stream of the seed (rank 0 keeps
    /// the single-process stream), prompts are drawn per rank, gradients and the update rule's
    /// own parameters are averaged over the ranks before every optimizer step, and checkpoints
    /// are written by rank 0 with every rank's RNG and buffer. Refused for rules that cannot
    /// average their state yet (PPO's value head).
    pub fn set_collective(&mut self, collective: Rc<dyn Collective>) -> Result<(), TrainError> {
        if collective.size() > 1 && !self.update.data_parallel() {
            return Err(TrainError::Config(format!(
                "update '{}' does not run data-parallel yet (its own parameters are not averaged \
                 across ranks): run it in one process",
                self.update.name()
            )));
        }
        self.rng = ChaCha8Rng::seed_from_u64(self.cfg.seed);
        self.rng.set_stream(collective.rank() as u64);
        self.collective = collective;
        Ok(())
    }

    /// The collective this trainer runs over ([`SingleProcess`] unless
    /// [`Self::set_collective`] was called).
    pub fn collective(&self) -> &dyn Collective {
        &*self.collective
    }

    /// Checks that every rank is at the same step (after a resume); an error names the steps.
    pub fn check_ranks_at_same_step(&self) -> Result<(), TrainError> {
        if self.collective.size() == 1 {
            return Ok(());
        }
        let all = self
            .collective
            .all_gather_bytes(&(self.step as u64).to_le_bytes())?;
        let steps: Vec<u64> = all
            .iter()
            .map(|b| u64::from_le_bytes(b[..8].try_into().unwrap_or([0xff; 8])))
            .collect();
        if steps.iter().any(|&s| s != steps[0]) {
            return Err(TrainError::Ranks(format!(
                "the ranks resumed at different steps {steps:?}: every rank must see the same \
                 checkpoint folder (a shared file system)"
            )));
        }
        Ok(())
    }

    /// Every rank sends its best `exchange_top` replay entries per prompt to all others
    /// (all-gather), which offer them to their own buffers, in rank order.
    fn exchange_buffers(&mut self) -> Result<(), TrainError> {
        let top = self.cfg.distributed.exchange_top;
        let mine = serde_json::to_vec(&self.buffer.best(top)).expect("entries serialise");
        let all = self.collective.all_gather_bytes(&mine)?;
        let rank = self.collective.rank();
        for (r, bytes) in all.iter().enumerate().filter(|(r, _)| *r != rank) {
            let theirs: Vec<(Vec<u32>, Vec<Entry>)> = serde_json::from_slice(bytes)
                .map_err(|e| TrainError::Ranks(format!("replay entries of rank {r}: {e}")))?;
            for (prompt, entries) in theirs {
                for e in entries {
                    self.buffer.add(&prompt, e);
                }
            }
        }
        Ok(())
    }

    /// A digest of the adapters' and the update rule's state; the ranks compare theirs.
    fn check_ranks_agree(&self) -> Result<(), TrainError> {
        let values = adapter_params(&self.model)
            .into_iter()
            .flat_map(|(_, _, v)| {
                v.into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("f32 adapters")
            });
        let state = serde_json::to_vec(&self.update.state()).expect("state serialises");
        let digest = fnv1a_f32(values) ^ fnv1a(state);
        let all = self.collective.all_gather_bytes(&digest.to_le_bytes())?;
        if all.iter().any(|d| d[..] != all[0][..]) {
            let digests: Vec<String> = all
                .iter()
                .map(|d| d.iter().rev().map(|b| format!("{b:02x}")).collect())
                .collect();
            return Err(TrainError::Ranks(format!(
                "the adapters differ across ranks after step {} (digests by rank: {}); the \
                 ranks no longer run the same model — resume from the last checkpoint",
                self.step,
                digests.join(", ")
            )));
        }
        Ok(())
    }

    /// Offers every training example's demonstrations to the replay buffer, scored by the
    /// task's reward (untempered, like every buffer entry). A resumed run replaces the buffer
    /// by the checkpoint's.
    fn seed_buffer(&mut self) {
        let valid_device = self.device.clone().without_autodiff();
        let base = self.base_model();
        let ctx = RewardContext {
            base: &base,
            device: &valid_device,
        };
        let examples: Vec<Example> = self.task.examples(Split::Train).to_vec();
        for example in examples.iter().filter(|e| e.demonstration.is_some()) {
            let constraint = self.task.constraint(example);
            let trajectories: Vec<Trajectory> = example
                .demonstration
                .iter()
                .map(|d| {
                    let mut t = Trajectory::replay(d, self.task.tool());
                    t.forced = t.num_actions() >= constraint.max_len;
                    t
                })
                .filter(|t| t.num_actions() <= constraint.max_len)
                .collect();
            if trajectories.is_empty() {
                continue;
            }
            let log_rewards = self.task.log_rewards(example, &trajectories, &ctx);
            for (t, r) in trajectories.into_iter().zip(log_rewards) {
                self.buffer.add(
                    &example.prompt,
                    Entry {
                        trajectory: t,
                        log_rewards: r,
                    },
                );
            }
        }
    }

    /// The learning-rate schedule of this run.
    pub fn lr_schedule(&self) -> LrSchedule {
        LrSchedule {
            lr: self.cfg.lr,
            warmup_steps: self.cfg.warmup_steps,
            linear_decay: self.cfg.linear_decay,
            total_steps: self.cfg.steps,
        }
    }

    fn reward_temperature(&self) -> RewardTemperature {
        RewardTemperature {
            start: self.cfg.reward_temp_start,
            end: self.cfg.reward_temp_end,
            horizon: self.cfg.reward_temp_horizon,
        }
    }

    /// A no-grad snapshot of the policy for sampling and evaluation.
    pub fn policy(&self) -> CausalLm {
        self.model.valid()
    }

    /// The base model (adapters off, no grad) for rewards: the policy's weights, one copy.
    pub fn base_model(&self) -> CausalLm {
        let mut base = self.model.valid();
        gfnlm_lora::set_adapters_enabled(&mut base, false);
        base
    }

    /// The training example of micro-batch `micro` of the current step: drawn from the task's
    /// training split (uniformly, or ∝ `Example::weight` when weights differ) by a generator derived from (seed, step, micro), so a resumed
    /// run draws the same prompts and the trajectory sampler's stream is untouched.
    fn pick_example(&self, micro: usize) -> Example {
        let train = self.task.examples(Split::Train);
        if train.len() == 1 {
            return train[0].clone();
        }
        // Rank r of N draws the prompts single-process step (step·N + r) would.
        let (world, rank) = (self.collective.size(), self.collective.rank());
        let stream = ((self.step * world + rank) * self.cfg.grad_accum + micro) as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0x9e37_79b9_7f4a_7c15);
        rng.set_stream(stream);
        if train.iter().all(|e| e.weight == train[0].weight) {
            return train[rng.random_range(0..train.len())].clone();
        }
        // Draw ∝ weight (labelled vs homework queries).
        let total: f64 = train.iter().map(|e| e.weight.max(0.0)).sum();
        let mut u = rng.random::<f64>() * total;
        for e in train {
            u -= e.weight.max(0.0);
            if u < 0.0 {
                return e.clone();
            }
        }
        train[train.len() - 1].clone()
    }

    /// Rollout of one micro-batch: replay from the buffer (with probability `replay_prob`), or
    /// sample from the policy at a tempered or the policy's own temperature, then score every
    /// state with the task's reward (the base model is the policy with its adapters off).
    fn rollout(&mut self, example: &Example, constraint: &Constraint) -> Sampled {
        if self.update.source() == RolloutSource::Demonstration {
            // Supervised rules learn from the example's demonstration, replayed through the
            // task's tool so the state matches what sampling would produce; no reward.
            let trajectories: Vec<Trajectory> = example
                .demonstration
                .iter()
                .map(|d| {
                    let mut t = Trajectory::replay(d, self.task.tool());
                    t.forced = t.num_actions() >= constraint.max_len;
                    t
                })
                .collect();
            let log_rewards = trajectories
                .iter()
                .map(|t| vec![0.0; t.num_actions() + 1])
                .collect();
            return Sampled {
                trajectories,
                log_rewards,
                behaviour: "demonstration",
                task_metrics: BTreeMap::new(),
                sample_s: 0.0,
                reward_s: 0.0,
            };
        }
        let prompt = &example.prompt;
        let u: f64 = self.rng.random();
        let replay = (u < self.cfg.replay_prob)
            .then(|| {
                self.buffer
                    .sample(prompt, self.cfg.batch_size, &mut self.rng)
            })
            .flatten();
        if let Some(entries) = replay {
            let log_rewards = entries.iter().map(|e| e.log_rewards.clone()).collect();
            return Sampled {
                trajectories: entries.into_iter().map(|e| e.trajectory).collect(),
                log_rewards,
                behaviour: "replay",
                task_metrics: BTreeMap::new(),
                sample_s: 0.0,
                reward_s: 0.0,
            };
        }
        let (temperature, kind) = if u < self.cfg.replay_prob + self.cfg.tempered_prob {
            (
                self.rng
                    .random_range(self.cfg.temp_low..=self.cfg.temp_high),
                "tempered",
            )
        } else {
            (1.0, "on-policy")
        };
        let valid_device = self.device.clone().without_autodiff();
        let mut policy = self.policy();
        if self.cfg.sample_merged {
            gfnlm_lora::merge(&mut policy);
        }
        let behaviour = Behaviour {
            temperature,
            epsilon: self.cfg.epsilon,
        };
        let t_sample = Instant::now();
        let trajectories = sample_trajectories(
            &policy,
            prompt,
            self.cfg.batch_size,
            constraint,
            behaviour,
            self.task.tool(),
            &mut self.rng,
            &valid_device,
        );
        drop(policy);
        let sample_s = t_sample.elapsed().as_secs_f64();
        let t_reward = Instant::now();
        let base = self.base_model();
        let ctx = RewardContext {
            base: &base,
            device: &valid_device,
        };
        let log_rewards = self.task.log_rewards(example, &trajectories, &ctx);
        let task_metrics = self
            .task
            .step_metrics(example, &trajectories, &log_rewards, &ctx);
        let reward_s = t_reward.elapsed().as_secs_f64();
        for (t, r) in trajectories.iter().zip(&log_rewards) {
            self.buffer.add(
                prompt,
                Entry {
                    trajectory: t.clone(),
                    log_rewards: r.clone(),
                },
            );
        }
        Sampled {
            trajectories,
            log_rewards,
            behaviour: kind,
            task_metrics,
            sample_s,
            reward_s,
        }
    }

    /// The update's loss of one rollout and its value; `None` when it is not finite. A NaN/Inf
    /// the objective refuses in its inputs (e.g. `log_pf` after a huge lr) counts as a
    /// non-finite loss, not as an error.
    fn finite_loss(
        &mut self,
        rollout: &Rollout<'_>,
    ) -> Result<(Option<UpdateLoss>, f64), TrainError> {
        let out = match self.update.loss(&self.model, rollout, &self.device) {
            Err(TrainError::Objective(e @ ObjectiveError::NonFinite { .. })) => {
                eprintln!("warning: {e}");
                None
            }
            other => Some(other?),
        };
        let value = out
            .as_ref()
            .map_or(f64::NAN, |o| o.loss.clone().into_scalar::<f32>() as f64);
        Ok((out.filter(|_| value.is_finite()), value))
    }

    /// One optimizer step (`grad_accum` micro-batches: rollout → rewards → update). Non-finite
    /// losses are skipped with a warning; after `max_nonfinite_in_a_row` the run stops, saving
    /// the batch to `out_dir`.
    pub fn train_step(&mut self, out_dir: &Path) -> Result<StepStats, TrainError> {
        let t0 = Instant::now();
        let t_r = self.reward_temperature().at(self.step);
        let lr = self.lr_schedule().at(self.step);
        let mut accum = GradientsAccumulator::<CausalLm>::new();
        let (mut losses, mut term_r, mut lens) = (Vec::new(), Vec::new(), Vec::new());
        let (mut behaviour, mut skipped, mut var) = (Vec::new(), 0, 0.0);
        let mut valid = 0usize;
        // Σ of the finite micro-batches' loss normalisers: this rank's weight among the ranks.
        let mut weight = 0.0;
        let (mut sample_s, mut reward_s, mut update_s) = (0.0, 0.0, 0.0);
        let mut task_sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        // Rules with several passes (PPO epochs) see this step's finite micro-batches again.
        let passes = self.update.passes();
        let mut kept = Vec::new();
        for micro in 0..self.cfg.grad_accum {
            let example = self.pick_example(micro);
            let constraint = self.task.constraint(&example);
            let s = self.rollout(&example, &constraint);
            behaviour.push(s.behaviour.to_string());
            sample_s += s.sample_s;
            reward_s += s.reward_s;
            for (k, v) in &s.task_metrics {
                let e = task_sums.entry(k.clone()).or_insert((0.0, 0));
                e.0 += v;
                e.1 += 1;
            }
            let flags: Vec<bool> = s
                .trajectories
                .iter()
                .zip(&s.log_rewards)
                .map(|(t, r)| {
                    let last = *r.last().expect("a reward per state");
                    self.task.is_valid(&example, t, last)
                })
                .collect();
            let rollout = Rollout {
                example: &example,
                constraint: &constraint,
                trajectories: &s.trajectories,
                log_rewards: &s.log_rewards,
                reward_temperature: t_r,
                valid: &flags,
                pass: 0,
                micro,
            };
            let t_update = Instant::now();
            let (out, value) = self.finite_loss(&rollout)?;
            let Some(out) = out else {
                skipped += 1;
                self.nonfinite_streak += 1;
                eprintln!(
                    "warning: non-finite loss ({value}) at step {}, micro-batch skipped",
                    self.step
                );
                if self.nonfinite_streak >= self.cfg.max_nonfinite_in_a_row {
                    let batch_file =
                        out_dir.join(format!("nonfinite-batch-step{}.json", self.step));
                    let _ = fs::create_dir_all(out_dir);
                    let _ = fs::write(
                        &batch_file,
                        serde_json::to_string_pretty(&(&s.trajectories, &s.log_rewards))
                            .unwrap_or_default(),
                    );
                    return Err(TrainError::NonFinite {
                        count: self.nonfinite_streak,
                        step: self.step,
                        lr,
                        batch_file,
                    });
                }
                continue;
            };
            self.nonfinite_streak = 0;
            var = out.log_ratio_var.unwrap_or(f64::NAN);
            weight += out.weight;
            let grads = out.loss.div_scalar(self.cfg.grad_accum as f64).backward();
            self.update.after_backward(&grads);
            accum.accumulate(&self.model, GradientsParams::from_grads(grads, &self.model));
            update_s += t_update.elapsed().as_secs_f64();
            losses.push(value);
            for (r, &ok) in s.log_rewards.iter().zip(&flags) {
                valid += ok as usize;
                term_r.push(*r.last().expect("a reward per state"));
            }
            lens.extend(s.trajectories.iter().map(Trajectory::num_actions));
            if passes > 1 {
                kept.push((micro, example, constraint, s, flags));
            }
        }
        let averaged = average_gradients(
            &self.model,
            accum.grads(),
            losses.len(),
            weight,
            &*self.collective,
            &self.device,
        )?;
        let dp = self.collective.size() > 1;
        let allreduce_s = dp.then_some(averaged.reduce_s);
        let rank_wait_s = dp.then_some(averaged.wait_s);
        let any_finite = averaged.any_finite;
        if let Some(grads) = averaged.grads {
            self.model = self.optim.step(lr, self.model.clone(), grads);
        }
        if self.collective.size() > 1 {
            self.update.all_reduce(&*self.collective)?;
        }
        if any_finite {
            self.update.after_step();
        }
        // Passes 1.. over the same rollouts (PPO epochs), one optimizer step each at this
        // step's lr; a non-finite loss skips its micro-batch (counted in `skipped`).
        for pass in 1..passes {
            let mut accum = GradientsAccumulator::<CausalLm>::new();
            let mut finite = false;
            for (micro, example, constraint, s, flags) in &kept {
                let rollout = Rollout {
                    example,
                    constraint,
                    trajectories: &s.trajectories,
                    log_rewards: &s.log_rewards,
                    reward_temperature: t_r,
                    valid: flags,
                    pass,
                    micro: *micro,
                };
                let t_update = Instant::now();
                let (out, value) = self.finite_loss(&rollout)?;
                let Some(out) = out else {
                    skipped += 1;
                    eprintln!(
                        "warning: non-finite loss ({value}) at step {} pass {pass}, micro-batch skipped",
                        self.step
                    );
                    continue;
                };
                let grads = out.loss.div_scalar(self.cfg.grad_accum as f64).backward();
                self.update.after_backward(&grads);
                accum.accumulate(&self.model, GradientsParams::from_grads(grads, &self.model));
                update_s += t_update.elapsed().as_secs_f64();
                losses.push(value);
                finite = true;
            }
            let grads = accum.grads();
            if !grads.is_empty() {
                self.model = self.optim.step(lr, self.model.clone(), grads);
            }
            if finite {
                self.update.after_step();
            }
        }
        self.step += 1;
        // Sums over every rank's micro-batches (a single process: its own).
        let mut sums = [
            losses.iter().sum::<f64>(),
            losses.len() as f64,
            term_r.iter().sum::<f64>(),
            term_r.len() as f64,
            valid as f64,
            lens.iter().sum::<usize>() as f64,
            skipped as f64,
        ];
        let mut best = term_r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let world = self.collective.size();
        if world > 1 {
            self.collective.all_reduce_sum_f64(&mut sums)?;
            let all = self.collective.all_gather_bytes(&best.to_le_bytes())?;
            best = all
                .iter()
                .map(|b| f64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])))
                .fold(f64::NEG_INFINITY, f64::max);
            let d = self.cfg.distributed.clone();
            if d.exchange_every > 0 && self.step.is_multiple_of(d.exchange_every) {
                self.exchange_buffers()?;
            }
            if d.check_every > 0 && self.step.is_multiple_of(d.check_every) {
                self.check_ranks_agree()?;
            }
        }
        let [loss_sum, n_loss, r_sum, n_r, valid, len_sum, skipped] = sums;
        let n = n_r.max(1.0);
        Ok(StepStats {
            step: self.step,
            loss: loss_sum / n_loss.max(1.0),
            mean_log_r: r_sum / n,
            max_log_r: best,
            valid_frac: valid / n,
            mean_len: len_sum / n,
            log_ratio_var: var,
            lr,
            reward_temp: t_r,
            behaviour,
            skipped: skipped as usize,
            ranks: (world > 1).then_some(world),
            allreduce_s,
            rank_wait_s,
            seconds: t0.elapsed().as_secs_f64(),
            sample_s,
            reward_s,
            update_s,
            log_z: self.update.log_z(),
            task_metrics: task_sums
                .into_iter()
                .map(|(k, (sum, n))| (k, sum / n as f64))
                .collect(),
            update_metrics: self.update.step_metrics(),
        })
    }

    /// Writes a checkpoint `dir/step-N` atomically (adapters in PEFT layout, optimizer state,
    /// buffer, RNG, step, and last a [`MANIFEST`] with the size and SHA-256 of every file),
    /// points `dir/latest` at it, and removes all but the newest `keep_checkpoints`.
    ///
    /// The files are written into `dir/.tmp-step-N`, flushed to disk and renamed into place, so
    /// a killed run leaves either the whole checkpoint or none of it.
    ///
    /// In a data-parallel run every rank calls it: the ranks send their RNG and buffer to
    /// rank 0 (all-gather), which alone writes the folder, with `ranks/rank-R.json` for
    /// ranks 1.. beside the shared adapters, optimizer and `state.json`.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<PathBuf, TrainError> {
        let err = |path: &Path, e: &dyn std::fmt::Display| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let name = format!("step-{}", self.step);
        let world = self.collective.size();
        let rank_states = if world > 1 {
            let mine = RankState {
                rank: self.collective.rank(),
                rng: self.rng.clone(),
                buffer: self.buffer.clone(),
                nonfinite_streak: self.nonfinite_streak,
            };
            let all = self
                .collective
                .all_gather_bytes(&serde_json::to_vec_pretty(&mine).expect("state serialises"))?;
            if self.collective.rank() != 0 {
                return Ok(dir.join(&name));
            }
            all
        } else {
            Vec::new()
        };
        fs::create_dir_all(dir).map_err(|e| err(dir, &e))?;
        // Leftovers of a run killed while writing or pruning (one trainer per folder: the
        // CLI holds a lock on the run folder).
        remove_leftovers(dir);
        let tmp = dir.join(format!(".tmp-{name}"));
        fs::create_dir_all(&tmp).map_err(|e| err(&tmp, &e))?;
        gfnlm_lora::save_peft(&self.model, &lora_config(&self.cfg), &tmp.join("adapter"))?;
        let opt = tmp.join("optimizer");
        self.optim
            .save(&opt)
            .map_err(|e| err(&opt, &format!("{e:?}")))?;
        let state = RunState {
            step: self.step,
            rng: self.rng.clone(),
            buffer: self.buffer.clone(),
            nonfinite_streak: self.nonfinite_streak,
            config: self.cfg.clone(),
            update: self.update.state(),
            world_size: world,
        };
        let sp = tmp.join("state.json");
        fs::write(
            &sp,
            serde_json::to_vec_pretty(&state).expect("state serialises"),
        )
        .map_err(|e| err(&sp, &e))?;
        if world > 1 {
            let ranks = tmp.join("ranks");
            fs::create_dir_all(&ranks).map_err(|e| err(&ranks, &e))?;
            for (r, bytes) in rank_states.iter().enumerate().skip(1) {
                let rp = ranks.join(format!("rank-{r}.json"));
                fs::write(&rp, bytes).map_err(|e| err(&rp, &e))?;
            }
        }
        let manifest = Manifest {
            format: 1,
            step: self.step,
            files: digest_folder(&tmp, true).map_err(|(p, e)| err(&p, &e))?,
        };
        let mp = tmp.join(MANIFEST);
        fs::write(
            &mp,
            serde_json::to_vec_pretty(&manifest).expect("manifest serialises"),
        )
        .map_err(|e| err(&mp, &e))?;
        sync_path(&mp).map_err(|e| err(&mp, &e))?;
        sync_path(&tmp).map_err(|e| err(&tmp, &e))?;
        let final_dir = dir.join(&name);
        if final_dir.exists() {
            // A checkpoint of this step that failed verification (the run fell back past it).
            let old = dir.join(format!(".del-{name}"));
            fs::rename(&final_dir, &old).map_err(|e| err(&final_dir, &e))?;
            let _ = fs::remove_dir_all(&old);
        }
        fs::rename(&tmp, &final_dir).map_err(|e| err(&final_dir, &e))?;
        let latest_tmp = dir.join(".latest.tmp");
        fs::write(&latest_tmp, &name).map_err(|e| err(&latest_tmp, &e))?;
        fs::rename(&latest_tmp, dir.join("latest")).map_err(|e| err(&dir.join("latest"), &e))?;
        sync_path(dir).map_err(|e| err(dir, &e))?;
        if self.cfg.keep_checkpoints > 0 {
            prune_checkpoints(dir, self.step, self.cfg.keep_checkpoints);
        }
        Ok(final_dir)
    }

    /// The newest checkpoint in `dir` that passes [`verify_checkpoint`] (whatever
    /// `dir/latest` says), if any.
    pub fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
        checkpoint_folders(dir)
            .into_iter()
            .map(|(_, p)| p)
            .find(|p| verify_checkpoint(p).is_ok())
    }

    /// Resumes from the newest checkpoint in `dir` that verifies and loads, skipping (and
    /// reporting) newer ones that are truncated, corrupted or incomplete. `Ok(None)` when `dir`
    /// holds no `step-N` folder at all; an error when it holds some but none can be used, or
    /// when the run's config differs from the checkpoint's.
    pub fn resume_latest(&mut self, dir: &Path) -> Result<Option<Resumed>, TrainError> {
        let found = checkpoint_folders(dir);
        if found.is_empty() {
            return Ok(None);
        }
        let mut skipped = Vec::new();
        for (_, ckpt) in &found {
            match self.resume(ckpt) {
                Ok(verification) => {
                    let latest = latest_pointer_note(dir, ckpt);
                    return Ok(Some(Resumed {
                        checkpoint: ckpt.clone(),
                        verification,
                        skipped,
                        latest,
                    }));
                }
                Err(e @ TrainError::Config(_)) => return Err(e),
                Err(e) => skipped.push((ckpt.clone(), e.to_string())),
            }
        }
        let reasons: Vec<String> = skipped
            .iter()
            .map(|(p, why)| format!("  {}: {why}", p.display()))
            .collect();
        Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            message: format!(
                "none of the {} checkpoints can be resumed:\n{}",
                found.len(),
                reasons.join("\n")
            ),
        })
    }

    /// Restores adapters, optimizer state, buffer, RNG and step from a checkpoint folder,
    /// after checking its files against its [`MANIFEST`] (a checkpoint written before
    /// manifests existed is loaded unverified). On error the trainer is left unchanged.
    pub fn resume(&mut self, ckpt: &Path) -> Result<Verification, TrainError> {
        let err = |path: &Path, e: &dyn std::fmt::Display| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("{e} (the checkpoint is incomplete or from another version)"),
        };
        let verification = verify_checkpoint(ckpt).map_err(|message| TrainError::Checkpoint {
            path: ckpt.to_path_buf(),
            message,
        })?;
        let sp = ckpt.join("state.json");
        let text = fs::read_to_string(&sp).map_err(|e| err(&sp, &e))?;
        let state: RunState = serde_json::from_str(&text).map_err(|e| err(&sp, &e))?;
        // Extending a run (a larger `steps`) is allowed, and how many checkpoints are kept
        // changes nothing in the run; anything else must match.
        let same = TrainConfig {
            steps: self.cfg.steps,
            keep_checkpoints: self.cfg.keep_checkpoints,
            ..state.config.clone()
        } == self.cfg;
        if !same {
            return Err(TrainError::Config(format!(
                "{} was written with a different config; resume with the same config file",
                sp.display()
            )));
        }
        let (world, rank) = (self.collective.size(), self.collective.rank());
        if state.world_size != world {
            return Err(TrainError::Config(format!(
                "{} was written by a run of {} rank(s), this run has {world}: resume with \
                 `mpirun -np {}` (each rank restores its own RNG and replay buffer), or --restart",
                sp.display(),
                state.world_size,
                state.world_size
            )));
        }
        let own = if rank > 0 {
            let rp = ckpt.join("ranks").join(format!("rank-{rank}.json"));
            let text = fs::read_to_string(&rp).map_err(|e| err(&rp, &e))?;
            let r: RankState = serde_json::from_str(&text).map_err(|e| err(&rp, &e))?;
            if r.rank != rank {
                return Err(err(&rp, &format!("holds rank {}'s state", r.rank)));
            }
            Some(r)
        } else {
            None
        };
        // Everything is loaded into copies first, so a failure leaves the trainer as it was.
        let mut model = self.model.clone();
        gfnlm_lora::load_peft(&mut model, &ckpt.join("adapter"), &self.device)?;
        gfnlm_lora::freeze_all(&mut model);
        stable_adapter_ids(&mut model);
        let opt = ckpt.join("optimizer");
        let optim = self
            .optim
            .clone()
            .load(&opt)
            .map_err(|e| err(&opt, &format!("{e:?}")))?;
        self.update
            .load_state(state.update)
            .map_err(|e| err(&sp, &e))?;
        self.model = model;
        self.optim = optim;
        self.step = state.step;
        match own {
            Some(r) => {
                self.rng = r.rng;
                self.buffer = r.buffer;
                self.nonfinite_streak = r.nonfinite_streak;
            }
            None => {
                self.rng = state.rng;
                self.buffer = state.buffer;
                self.nonfinite_streak = state.nonfinite_streak;
            }
        }
        Ok(verification)
    }
}

/// The file, written last into every checkpoint, that lists the size and SHA-256 of each of
/// its other files.
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: u32,
    step: usize,
    /// Path relative to the checkpoint folder (`/`-separated) → digest.
    files: BTreeMap<String, FileDigest>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDigest {
    bytes: u64,
    sha256: String,
}

/// How a checkpoint was checked before it was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Every file matched the size and SHA-256 its manifest records.
    Verified,
    /// No manifest: written by a gfnlm from before checksums; loaded unchecked.
    Unverified,
}

/// What [`Trainer::resume_latest`] resumed from, and what it had to skip on the way.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// The checkpoint folder used.
    pub checkpoint: PathBuf,
    /// Whether its files were checked against a manifest.
    pub verification: Verification,
    /// Newer checkpoints that could not be used, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Set when `latest` was missing, unreadable or named another checkpoint.
    pub latest: Option<String>,
}

/// The `step-N` checkpoint folders of `dir`, newest first (whatever `dir/latest` says: a
/// missing or damaged pointer must not hide them).
pub fn checkpoint_folders(dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step: usize = name.strip_prefix("step-")?.parse().ok()?;
            (name == format!("step-{step}")).then(|| (step, e.path()))
        })
        .collect();
    found.sort_by_key(|c| std::cmp::Reverse(c.0));
    found
}

/// Checks a checkpoint folder's files against its [`MANIFEST`]: every listed file present,
/// of the recorded size and SHA-256, and `state.json` among them. A folder without a manifest
/// but with a `state.json` (written before manifests existed) is [`Verification::Unverified`].
pub fn verify_checkpoint(ckpt: &Path) -> Result<Verification, String> {
    let mp = ckpt.join(MANIFEST);
    let text = match fs::read(&mp) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if ckpt.join("state.json").is_file() {
                Ok(Verification::Unverified)
            } else {
                Err("no manifest.json and no state.json: not a checkpoint".into())
            };
        }
        Err(e) => return Err(format!("{}: {e}", mp.display())),
    };
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("{} is damaged: {e}", mp.display()))?;
    let expected = ckpt
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("step-"))
        .and_then(|n| n.parse::<usize>().ok());
    if expected.is_some_and(|s| s != manifest.step) {
        return Err(format!(
            "{} records step {}, not this folder's",
            mp.display(),
            manifest.step
        ));
    }
    if !manifest.files.contains_key("state.json") {
        return Err(format!("{} does not list state.json", mp.display()));
    }
    for (rel, want) in &manifest.files {
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!("{} lists a bad path {rel:?}", mp.display()));
        }
        let p = ckpt.join(rel);
        let got = digest_file(&p, false).map_err(|e| format!("{}: {e}", p.display()))?;
        if got.bytes != want.bytes {
            return Err(format!(
                "{}: {} bytes, the manifest records {} (truncated or partly written)",
                p.display(),
                got.bytes,
                want.bytes
            ));
        }
        if got.sha256 != want.sha256 {
            return Err(format!(
                "{}: SHA-256 differs from the manifest's (the file is corrupted)",
                p.display()
            ));
        }
    }
    Ok(Verification::Verified)
}

/// Size and SHA-256 of one file, optionally flushing it to disk first.
fn digest_file(path: &Path, sync: bool) -> std::io::Result<FileDigest> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = fs::File::open(path)?;
    if sync {
        f.sync_all()?;
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(FileDigest { bytes, sha256 })
}

/// Digests of every file under `root` (recursively), keyed by `/`-separated relative path.
fn digest_folder(
    root: &Path,
    sync: bool,
) -> Result<BTreeMap<String, FileDigest>, (PathBuf, std::io::Error)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| (dir.clone(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| (dir.clone(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{prefix}{name}");
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| (path.clone(), e))?;
            if kind.is_dir() {
                if sync {
                    sync_path(&path).map_err(|e| (path.clone(), e))?;
                }
                stack.push((path, format!("{rel}/")));
            } else {
                let d = digest_file(&path, sync).map_err(|e| (path.clone(), e))?;
                out.insert(rel, d);
            }
        }
    }
    Ok(out)
}

/// Flushes a file or folder to disk (folders: their entries, so renames survive a crash).
/// Folders cannot be opened for syncing on Windows; there it is a no-op.
fn sync_path(path: &Path) -> std::io::Result<()> {
    if path.is_dir() && cfg!(windows) {
        return Ok(());
    }
    fs::File::open(path)?.sync_all()
}

/// Removes the `.tmp-step-N` / `.del-step-N` folders a killed run may leave in `dir`.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-step-") || name.starts_with(".del-step-") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Keeps the newest `keep` checkpoints of step ≤ `step` (the one just written among them);
/// newer folders (left by a run that fell back past them) are rewritten as the run gets there.
/// Each folder is renamed before it is deleted, so a half-deleted one never looks like a
/// checkpoint.
fn prune_checkpoints(dir: &Path, step: usize, keep: usize) {
    let old = checkpoint_folders(dir)
        .into_iter()
        .filter(|(s, _)| *s <= step)
        .skip(keep);
    for (s, path) in old {
        let del = dir.join(format!(".del-step-{s}"));
        if fs::rename(&path, &del).is_ok() {
            let _ = fs::remove_dir_all(&del);
        }
    }
}

/// A note when `dir/latest` is missing, damaged or names another checkpoint than `used`.
fn latest_pointer_note(dir: &Path, used: &Path) -> Option<String> {
    let pointer = dir.join("latest");
    let used_name = used.file_name()?.to_string_lossy().into_owned();
    match fs::read(&pointer) {
        Err(e) => Some(format!(
            "{} is unreadable ({e}); found {used_name} by scanning the folder",
            pointer.display()
        )),
        Ok(bytes) => {
            let named = String::from_utf8_lossy(&bytes).trim().to_string();
            if named == used_name {
                None
            } else if dir.join(&named).is_dir() && named.starts_with("step-") {
                Some(format!(
                    "{} names {named}; resumed from {used_name}, the newest checkpoint that verifies",
                    pointer.display()
                ))
            } else {
                Some(format!(
                    "{} is damaged (it does not name a checkpoint folder); found {used_name} by scanning the folder",
                    pointer.display()
                ))
            }
        }
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;

    /// A fake checkpoint: a state.json and an adapter file, with a manifest.
    fn fake(dir: &Path, step: usize) -> PathBuf {
        let c = dir.join(format!("step-{step}"));
        fs::create_dir_all(c.join("adapter")).unwrap();
        fs::write(c.join("state.json"), format!("{{\"step\": {step}}}")).unwrap();
        fs::write(c.join("adapter/w.bin"), vec![step as u8; 1000]).unwrap();
        let m = Manifest {
            format: 1,
            step,
            files: digest_folder(&c, false).unwrap(),
        };
        fs::write(c.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        c
    }

    #[test]
    fn folders_are_scanned_verified_and_pruned() {
        let dir = std::env::temp_dir().join(format!("gfnlm-ckpt-scan-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for s in [2, 4, 10, 6] {
            fake(&dir, s);
        }
        // Not checkpoints: a leading zero, a file, a temporary folder.
        fs::create_dir_all(dir.join("step-012")).unwrap();
        fs::write(dir.join("step-20"), b"").unwrap();
        fs::create_dir_all(dir.join(".tmp-step-12")).unwrap();
        let steps: Vec<usize> = checkpoint_folders(&dir).iter().map(|c| c.0).collect();
        assert_eq!(steps, [10, 6, 4, 2]);
        assert_eq!(
            verify_checkpoint(&dir.join("step-10")),
            Ok(Verification::Verified)
        );

        // Damage: truncation, a flipped bit, a missing file, a manifest from another step.
        let w = dir.join("step-10/adapter/w.bin");
        fs::write(&w, vec![10u8; 999]).unwrap();
        assert!(
            verify_checkpoint(&dir.join("step-10"))
                .unwrap_err()
                .contains("999 bytes")
        );
        let mut b = vec![6u8; 1000];
        b[500] ^= 1;
        fs::write(dir.join("step-6/adapter/w.bin"), b).unwrap();
        assert!(
            verify_checkpoint(&dir.join("step-6"))
                .unwrap_err()
                .contains("SHA-256")
        );
        fs::remove_file(dir.join("step-4/state.json")).unwrap();
        assert!(verify_checkpoint(&dir.join("step-4")).is_err());
        fs::rename(dir.join("step-2"), dir.join("step-8")).unwrap();
        assert!(
            verify_checkpoint(&dir.join("step-8"))
                .unwrap_err()
                .contains("records step 2")
        );
        assert_eq!(Trainer::latest_checkpoint(&dir), None);
        // No manifest but a state.json: an older gfnlm's checkpoint.
        fs::remove_file(dir.join("step-8").join(MANIFEST)).unwrap();
        assert_eq!(
            verify_checkpoint(&dir.join("step-8")),
            Ok(Verification::Unverified)
        );

        // Pruning keeps the newest `keep` at or below the current step and leaves newer ones.
        for s in [12, 14, 16] {
            fake(&dir, s);
        }
        prune_checkpoints(&dir, 14, 2);
        let steps: Vec<usize> = checkpoint_folders(&dir).iter().map(|c| c.0).collect();
        assert_eq!(steps, [16, 14, 12]);
        remove_leftovers(&dir);
        assert!(!dir.join(".tmp-step-12").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
