//! The training loop (design §3), the same for every task, architecture and update rule:
//! pick an example → rollout (replay or sample) → the task's per-state rewards → the update
//! rule's loss → backward → AdamW on the LoRA parameters; replay buffer, schedules,
//! checkpoints, exact resume.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams};
use burn::tensor::Device;
use gfnlm_lora::{AdaptableModel, LoraConfig};
use gfnlm_models::CausalLm;
use gfnlm_models::decode::{Behaviour, sample_trajectories};
use gfnlm_tasks::{Constraint, Example, RewardContext, Split, Task, Trajectory};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::buffer::{Entry, ReplayBuffer};
use crate::config::TrainConfig;
use crate::schedule::{LrSchedule, RewardTemperature};
use crate::update::{Rollout, Update};

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
        "{count} non-finite losses in a row at step {step}; the last batch is in {batch_file}. Lower lr or check the rewards."
    )]
    NonFinite {
        /// Consecutive non-finite losses.
        count: usize,
        /// Optimizer step.
        step: usize,
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
}

/// Metrics of one optimizer step (one JSONL line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Optimizer step (1-based after the update).
    pub step: usize,
    /// Mean loss over the micro-batches.
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
    /// log Z after the step (objective `tb` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_z: Option<f64>,
    /// The task's own metrics ([`Task::step_metrics`]) averaged over the step's freshly
    /// sampled micro-batches (e.g. next-sentence's unpenalised log-likelihood).
    #[serde(flatten)]
    pub task_metrics: BTreeMap<String, f64>,
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
}

/// The LoRA config of a training config.
pub fn lora_config(cfg: &TrainConfig) -> LoraConfig {
    let targets: Vec<&str> = cfg.lora.target_modules.iter().map(String::as_str).collect();
    let mut l = LoraConfig::new(cfg.lora.r, cfg.lora.alpha, &targets);
    l.dropout = cfg.lora.dropout;
    l
}

/// Gives every adapter parameter a stable id derived from its layer name, so optimizer state
/// saved in one process matches the parameters of the next (resume).
fn stable_adapter_ids(model: &mut CausalLm) {
    fn fnv(s: &str) -> u64 {
        s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        })
    }
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
        gfnlm_lora::apply_lora_seeded(&mut base, &lora_config(&cfg), cfg.seed, &device)?;
        stable_adapter_ids(&mut base);
        base.set_weight_precision(cfg.precision)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        let optim = AdamWConfig::new()
            .with_weight_decay(cfg.weight_decay as f32)
            .init();
        Ok(Self {
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
        })
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

    /// The training example of micro-batch `micro` of the current step: drawn uniformly from
    /// the task's training split by a generator derived from (seed, step, micro), so a resumed
    /// run draws the same prompts and the trajectory sampler's stream is untouched.
    fn pick_example(&self, micro: usize) -> Example {
        let train = self.task.examples(Split::Train);
        if train.len() == 1 {
            return train[0].clone();
        }
        let stream = (self.step * self.cfg.grad_accum + micro) as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0x9e37_79b9_7f4a_7c15);
        rng.set_stream(stream);
        train[rng.random_range(0..train.len())].clone()
    }

    /// Rollout of one micro-batch: replay from the buffer (with probability `replay_prob`), or
    /// sample from the policy at a tempered or the policy's own temperature, then score every
    /// state with the task's reward (the base model is the policy with its adapters off).
    fn rollout(&mut self, example: &Example, constraint: &Constraint) -> Sampled {
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
        let base = self.base_model();
        let ctx = RewardContext {
            base: &base,
            device: &valid_device,
        };
        let log_rewards = self.task.log_rewards(example, &trajectories, &ctx);
        let task_metrics = self
            .task
            .step_metrics(example, &trajectories, &log_rewards, &ctx);
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
        }
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
        let mut task_sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for micro in 0..self.cfg.grad_accum {
            let example = self.pick_example(micro);
            let constraint = self.task.constraint(&example);
            let s = self.rollout(&example, &constraint);
            behaviour.push(s.behaviour.to_string());
            for (k, v) in &s.task_metrics {
                let e = task_sums.entry(k.clone()).or_insert((0.0, 0));
                e.0 += v;
                e.1 += 1;
            }
            let rollout = Rollout {
                example: &example,
                constraint: &constraint,
                trajectories: &s.trajectories,
                log_rewards: &s.log_rewards,
                reward_temperature: t_r,
            };
            let out = self.update.loss(&self.model, &rollout, &self.device)?;
            let value = out.loss.clone().into_scalar::<f32>() as f64;
            if !value.is_finite() {
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
                        batch_file,
                    });
                }
                continue;
            }
            self.nonfinite_streak = 0;
            var = out.log_ratio_var.unwrap_or(f64::NAN);
            let grads = out.loss.div_scalar(self.cfg.grad_accum as f64).backward();
            self.update.after_backward(&grads);
            accum.accumulate(&self.model, GradientsParams::from_grads(grads, &self.model));
            losses.push(value);
            for (t, r) in s.trajectories.iter().zip(&s.log_rewards) {
                let last = *r.last().expect("a reward per state");
                valid += self.task.is_valid(&example, t, last) as usize;
                term_r.push(last);
            }
            lens.extend(s.trajectories.iter().map(Trajectory::num_actions));
        }
        let grads = accum.grads();
        if !grads.is_empty() {
            self.model = self.optim.step(lr, self.model.clone(), grads);
        }
        if !losses.is_empty() {
            self.update.after_step();
        }
        self.step += 1;
        let n = term_r.len().max(1) as f64;
        let best = term_r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        Ok(StepStats {
            step: self.step,
            loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
            mean_log_r: term_r.iter().sum::<f64>() / n,
            max_log_r: best,
            valid_frac: valid as f64 / n,
            mean_len: lens.iter().sum::<usize>() as f64 / n,
            log_ratio_var: var,
            lr,
            reward_temp: t_r,
            behaviour,
            skipped,
            seconds: t0.elapsed().as_secs_f64(),
            log_z: self.update.log_z(),
            task_metrics: task_sums
                .into_iter()
                .map(|(k, (sum, n))| (k, sum / n as f64))
                .collect(),
        })
    }

    /// Writes a checkpoint `dir/step-N` atomically (adapters in PEFT layout, optimizer state,
    /// buffer, RNG, step) and points `dir/latest` at it.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<PathBuf, TrainError> {
        let err = |path: &Path, e: &dyn std::fmt::Display| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let name = format!("step-{}", self.step);
        let tmp = dir.join(format!(".tmp-{name}"));
        let _ = fs::remove_dir_all(&tmp);
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
        };
        let sp = tmp.join("state.json");
        fs::write(
            &sp,
            serde_json::to_vec_pretty(&state).expect("state serialises"),
        )
        .map_err(|e| err(&sp, &e))?;
        let final_dir = dir.join(&name);
        let _ = fs::remove_dir_all(&final_dir);
        fs::rename(&tmp, &final_dir).map_err(|e| err(&final_dir, &e))?;
        let latest_tmp = dir.join(".latest.tmp");
        fs::write(&latest_tmp, &name).map_err(|e| err(&latest_tmp, &e))?;
        fs::rename(&latest_tmp, dir.join("latest")).map_err(|e| err(&dir.join("latest"), &e))?;
        Ok(final_dir)
    }

    /// The checkpoint `dir/latest` points at, if any.
    pub fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
        let name = fs::read_to_string(dir.join("latest")).ok()?;
        let p = dir.join(name.trim());
        p.join("state.json").is_file().then_some(p)
    }

    /// Restores adapters, optimizer state, buffer, RNG and step from a checkpoint folder.
    pub fn resume(&mut self, ckpt: &Path) -> Result<(), TrainError> {
        let err = |path: &Path, e: &dyn std::fmt::Display| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!(
                "{e} (the checkpoint is incomplete or from another version; start a fresh run)"
            ),
        };
        let sp = ckpt.join("state.json");
        let text = fs::read_to_string(&sp).map_err(|e| err(&sp, &e))?;
        let state: RunState = serde_json::from_str(&text).map_err(|e| err(&sp, &e))?;
        // Extending a run (a larger `steps`) is allowed; anything else must match.
        let same = TrainConfig {
            steps: self.cfg.steps,
            ..state.config.clone()
        } == self.cfg;
        if !same {
            return Err(TrainError::Config(format!(
                "{} was written with a different config; resume with the same config file",
                sp.display()
            )));
        }
        gfnlm_lora::load_peft(&mut self.model, &ckpt.join("adapter"), &self.device)?;
        gfnlm_lora::freeze_all(&mut self.model);
        stable_adapter_ids(&mut self.model);
        let opt = ckpt.join("optimizer");
        let optim = std::mem::replace(&mut self.optim, AdamWConfig::new().init());
        self.optim = optim.load(&opt).map_err(|e| err(&opt, &format!("{e:?}")))?;
        self.step = state.step;
        self.rng = state.rng;
        self.buffer = state.buffer;
        self.nonfinite_streak = state.nonfinite_streak;
        self.update
            .load_state(state.update)
            .map_err(|e| err(&sp, &e))?;
        Ok(())
    }
}
