//! The training loop (design §3): sample → one teacher-forced policy pass → per-prefix rewards →
//! objective → backward → AdamW on the LoRA parameters; replay buffer, schedules, checkpoints.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use gfnlm_lora::{AdaptableModel, LoraConfig};
use gfnlm_models::LlamaForCausalLm;
use gfnlm_objectives::{
    TrajectoryBatch, diagnostics, modified_db, modified_subtb, trajectory_balance, vargrad,
};
use gfnlm_tasks::{Constraint, RngTask};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::buffer::{Entry, ReplayBuffer};
use crate::config::{Objective, TrainConfig};
use crate::log_z::LogZ;
use crate::policy::policy_terms;
use crate::sampler::sample_trajectories;
use crate::schedule::{LrSchedule, RewardTemperature};

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
}

/// Serialisable state beside the adapters and optimizer in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    step: usize,
    rng: ChaCha8Rng,
    buffer: ReplayBuffer,
    nonfinite_streak: usize,
    config: TrainConfig,
    #[serde(default)]
    log_z: LogZ,
}

/// A GFlowNet fine-tuning run on the random-integer task.
pub struct Trainer {
    /// The configuration.
    pub cfg: TrainConfig,
    /// Policy (LoRA on the base model) on the autodiff device.
    pub model: LlamaForCausalLm,
    /// The task.
    pub task: RngTask,
    /// Constraint used by sampler and loss.
    pub constraint: Constraint,
    /// Replay buffer.
    pub buffer: ReplayBuffer,
    /// Optimizer steps done.
    pub step: usize,
    /// Learned log Z (used by objective `tb` only).
    pub log_z: LogZ,
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
fn stable_adapter_ids(model: &mut LlamaForCausalLm) {
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

impl Trainer {
    /// Sets up a fresh run: LoRA on `base` (seeded), AdamW, empty buffer.
    ///
    /// `device` must be an autodiff device (`Device::…().autodiff()`); `base` must live on it.
    pub fn new(
        cfg: TrainConfig,
        mut base: LlamaForCausalLm,
        task: RngTask,
        device: Device,
    ) -> Result<Self, TrainError> {
        cfg.validate().map_err(TrainError::Config)?;
        assert!(
            device.is_autodiff(),
            "Trainer::new needs an autodiff device"
        );
        gfnlm_lora::apply_lora_seeded(&mut base, &lora_config(&cfg), cfg.seed, &device)?;
        stable_adapter_ids(&mut base);
        base.set_weight_precision(cfg.precision)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        let constraint = task.constraint(cfg.task.vocab_alpha, cfg.task.restrict_vocab);
        let optim = AdamWConfig::new()
            .with_weight_decay(cfg.weight_decay as f32)
            .init();
        Ok(Self {
            buffer: ReplayBuffer::new(cfg.buffer_size, cfg.sim_tolerance),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            model: base,
            task,
            constraint,
            step: 0,
            log_z: LogZ::default(),
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
    pub fn policy(&self) -> LlamaForCausalLm {
        self.model.valid()
    }

    /// One optimizer step (`grad_accum` micro-batches). Non-finite losses are skipped with a
    /// warning; after `max_nonfinite_in_a_row` the run stops, saving the batch to `out_dir`.
    pub fn train_step(&mut self, out_dir: &Path) -> Result<StepStats, TrainError> {
        let t0 = Instant::now();
        let prompt = self.task.prompt.clone();
        let t_r = self.reward_temperature().at(self.step);
        let lr = self.lr_schedule().at(self.step);
        let mut accum = GradientsAccumulator::<LlamaForCausalLm>::new();
        let (mut losses, mut term_r, mut lens) = (Vec::new(), Vec::new(), Vec::new());
        let (mut behaviour, mut skipped, mut var) = (Vec::new(), 0, 0.0);
        let valid_device = self.device.clone().without_autodiff();
        let mut log_z_grad = 0.0;
        for _ in 0..self.cfg.grad_accum {
            let u: f64 = self.rng.random();
            let replay = (u < self.cfg.replay_prob)
                .then(|| {
                    self.buffer
                        .sample(&prompt, self.cfg.batch_size, &mut self.rng)
                })
                .flatten();
            let (trajs, rewards, kind) = match replay {
                Some(entries) => {
                    let r = entries.iter().map(|e| e.log_rewards.clone()).collect();
                    (
                        entries
                            .into_iter()
                            .map(|e| e.trajectory)
                            .collect::<Vec<_>>(),
                        r,
                        "replay",
                    )
                }
                None => {
                    let (temp, kind) = if u < self.cfg.replay_prob + self.cfg.tempered_prob {
                        (
                            self.rng
                                .random_range(self.cfg.temp_low..=self.cfg.temp_high),
                            "tempered",
                        )
                    } else {
                        (1.0, "on-policy")
                    };
                    let mut policy = self.policy();
                    if self.cfg.sample_merged {
                        gfnlm_lora::merge(&mut policy);
                    }
                    let trajs = sample_trajectories(
                        &policy,
                        &prompt,
                        self.cfg.batch_size,
                        &self.constraint,
                        temp,
                        self.cfg.epsilon,
                        &mut self.rng,
                        &valid_device,
                    );
                    let r: Vec<Vec<f64>> = trajs
                        .iter()
                        .map(|t| self.task.log_rewards(&t.tokens))
                        .collect();
                    for (t, r) in trajs.iter().zip(&r) {
                        self.buffer.add(
                            &prompt,
                            Entry {
                                trajectory: t.clone(),
                                log_rewards: r.clone(),
                            },
                        );
                    }
                    (trajs, r, kind)
                }
            };
            behaviour.push(kind.to_string());
            let terms = policy_terms(&self.model, &prompt, &trajs, &self.constraint, &self.device);
            let t = terms.steps;
            let b = trajs.len();
            let mut lr_host = vec![0f32; b * (t + 1)];
            for (i, r) in rewards.iter().enumerate() {
                for (k, v) in r.iter().enumerate() {
                    lr_host[i * (t + 1) + k] = (*v / t_r) as f32;
                }
            }
            let log_r = Tensor::<2>::from_data(TensorData::new(lr_host, [b, t + 1]), &self.device);
            let lengths: Vec<usize> = trajs.iter().map(|t| t.tokens.len()).collect();
            let mut batch =
                TrajectoryBatch::new(terms.log_pf, terms.log_pterm, log_r, lengths.clone())?;
            if t == self.constraint.max_len && trajs.iter().any(|t| t.forced) {
                batch = batch.with_forced_stop(self.constraint.max_len)?;
            }
            let mut log_z_t = None;
            let loss = match self.cfg.objective {
                Objective::Subtb => modified_subtb(&batch, self.cfg.subtb_lambda)?,
                Objective::Db => modified_db(&batch)?,
                Objective::Vargrad => vargrad(&batch)?,
                Objective::Tb => {
                    let z = TensorData::new(vec![self.log_z.value as f32], [1]);
                    let z = Tensor::<1>::from_data(z, &self.device).require_grad();
                    log_z_t = Some(z.clone());
                    trajectory_balance(&batch, z)?
                }
            };
            let value = loss.clone().into_scalar::<f32>() as f64;
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
                        serde_json::to_string_pretty(&(&trajs, &rewards)).unwrap_or_default(),
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
            var = diagnostics(&batch)
                .map(|d| d.log_ratio_var)
                .unwrap_or(f64::NAN);
            let grads = loss.div_scalar(self.cfg.grad_accum as f64).backward();
            if let Some(g) = log_z_t.and_then(|z| z.grad(&grads)) {
                log_z_grad += g.into_scalar::<f32>() as f64;
            }
            accum.accumulate(&self.model, GradientsParams::from_grads(grads, &self.model));
            losses.push(value);
            term_r.extend(rewards.iter().map(|r| *r.last().unwrap()));
            lens.extend(lengths);
        }
        let grads = accum.grads();
        if !grads.is_empty() {
            self.model = self.optim.step(lr, self.model.clone(), grads);
        }
        let tb = self.cfg.objective == Objective::Tb;
        if tb && !losses.is_empty() {
            self.log_z.step(log_z_grad, self.cfg.lr_log_z);
        }
        self.step += 1;
        let n = term_r.len().max(1) as f64;
        let best = term_r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        Ok(StepStats {
            step: self.step,
            loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
            mean_log_r: term_r.iter().sum::<f64>() / n,
            max_log_r: best,
            valid_frac: term_r.iter().filter(|&&r| r == 0.0).count() as f64 / n,
            mean_len: lens.iter().sum::<usize>() as f64 / n,
            log_ratio_var: var,
            lr,
            reward_temp: t_r,
            behaviour,
            skipped,
            seconds: t0.elapsed().as_secs_f64(),
            log_z: tb.then_some(self.log_z.value),
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
            log_z: self.log_z.clone(),
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
        self.log_z = state.log_z;
        Ok(())
    }
}
