//! Training configuration (TOML). Every field has a documented default; unknown keys are errors.

use std::path::Path;

use gfnlm_models::WeightPrecision;
pub use gfnlm_tasks::TaskSection;
use serde::{Deserialize, Serialize};

/// Which GFlowNet objective to minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Modified sub-trajectory balance (the paper's default).
    Subtb,
    /// Modified detailed balance (adjacent pairs only).
    Db,
    /// Trajectory balance with a learned scalar log Z.
    Tb,
    /// VarGrad: trajectory balance with the batch estimate of log Z.
    Vargrad,
}

/// LoRA settings (PEFT semantics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    /// Rank r.
    pub r: usize,
    /// α (scaling α/r).
    pub alpha: f64,
    /// Adapter input dropout.
    pub dropout: f64,
    /// Module-name patterns to adapt.
    pub target_modules: Vec<String>,
}

impl Default for LoraSection {
    fn default() -> Self {
        Self {
            r: 64,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Data-parallel runs (several ranks under `mpirun`, see docs/scale-out.md); ignored by a
/// single process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedSection {
    /// Every N steps each rank offers its best `exchange_top` replay entries per prompt to
    /// every other rank (all-gather); 0 never.
    pub exchange_every: usize,
    /// Entries per prompt each rank sends in an exchange.
    pub exchange_top: usize,
    /// Every N steps the ranks compare a digest of their adapters (8 bytes each) and stop the
    /// run if they differ; 0 never.
    pub check_every: usize,
}

impl Default for DistributedSection {
    fn default() -> Self {
        Self {
            exchange_every: 10,
            exchange_top: 4,
            check_every: 10,
        }
    }
}

/// Most entries per prompt a rank sends in one replay exchange.
pub const MAX_EXCHANGE_TOP: usize = 10_000;

/// The learning rule applied to each rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateRule {
    /// GFlowNet fine-tuning with `objective` (the paper's method).
    #[default]
    Gflownet,
    /// Supervised fine-tuning: maximum likelihood of the task's demonstrations.
    Sft,
    /// PPO (the TRL recipe): value head, per-token KL penalty to the base model, GAE, clipped
    /// policy and value losses, `ppo_epochs` passes over each rollout.
    Ppo,
}

/// PPO's terminal reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PpoReward {
    /// The task's untempered terminal log R divided by the reward temperature.
    #[default]
    LogR,
    /// 1 when `Task::is_valid` accepts the trajectory (e.g. a correct arithmetic answer), else 0.
    Valid,
}

/// Every hyper-parameter of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Seed of every random generator of the run.
    pub seed: u64,
    /// Optimizer steps.
    pub steps: usize,
    /// Trajectories per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate of the LoRA parameters.
    pub lr: f64,
    /// Learning rate of log Z (objective `tb`).
    pub lr_log_z: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Linear decay to 0 after warm-up.
    pub linear_decay: bool,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Learning rule (`gflownet`, `sft`, `ppo`).
    pub update: UpdateRule,
    /// PPO: optimizer steps (passes) over each step's rollouts.
    pub ppo_epochs: usize,
    /// PPO: ε of the clipped policy loss.
    pub ppo_clip: f64,
    /// PPO: ε_v of the clipped value loss.
    pub ppo_value_clip: f64,
    /// PPO: discount γ.
    pub ppo_gamma: f64,
    /// PPO: GAE λ.
    pub ppo_lambda: f64,
    /// PPO: coefficient of the per-token KL penalty to the base model.
    pub ppo_kl_coef: f64,
    /// PPO: weight of the value loss.
    pub ppo_value_coef: f64,
    /// PPO: Adam learning rate of the value head (constant).
    pub ppo_value_lr: f64,
    /// PPO: terminal reward (`log_r` or `valid`).
    pub ppo_reward: PpoReward,
    /// GFlowNet objective.
    pub objective: Objective,
    /// λ of modified SubTB.
    pub subtb_lambda: f64,
    /// Probability of replaying a batch from the buffer.
    pub replay_prob: f64,
    /// Probability of sampling at a temperature drawn from U[temp_low, temp_high].
    pub tempered_prob: f64,
    /// Lowest behaviour temperature.
    pub temp_low: f64,
    /// Highest behaviour temperature.
    pub temp_high: f64,
    /// ε of ε-uniform exploration over the allowed tokens.
    pub epsilon: f64,
    /// Replay-buffer size per prompt.
    pub buffer_size: usize,
    /// Near-duplicate tolerance of the buffer.
    pub sim_tolerance: f64,
    /// Seed the replay buffer with the task's demonstrations (e.g. arithmetic's worked
    /// rationales), scored by the task's reward, before the first step (the reference's
    /// `load_replay_buffer`).
    pub seed_buffer: bool,
    /// Reward temperature at step 0.
    pub reward_temp_start: f64,
    /// Reward temperature after `reward_temp_horizon` steps.
    pub reward_temp_end: f64,
    /// Steps of the reward-temperature ramp.
    pub reward_temp_horizon: usize,
    /// Write a checkpoint every N optimizer steps (and at the end).
    pub checkpoint_every: usize,
    /// Keep only the newest N checkpoints, deleting older ones as new ones are written
    /// (0: keep all, the behaviour before this key existed). Not compared on resume.
    pub keep_checkpoints: usize,
    /// Stop after this many non-finite losses in a row.
    pub max_nonfinite_in_a_row: usize,
    /// Storage dtype of the frozen base weights during training (`f32`, `bf16`, `f16`): the
    /// large products run in it, everything else in f32 (`gfnlm_models::precision`). `bf16`
    /// pays off on LibTorch (`--device tch`) on CPUs with AMX/AVX512-BF16 and on GPUs.
    pub precision: WeightPrecision,
    /// Sample from a copy of the policy with the adapters folded into the weights
    /// (`W + s·A·B`): one merge per sampled batch instead of the low-rank side path at every
    /// decode step. Pays off for long decodes (20 tokens: sampling ≈ 15 % faster on tch), not
    /// for the three-token random-integer task.
    pub sample_merged: bool,
    /// A PEFT adapter folded into the base weights before training (e.g. a supervised
    /// fine-tune on the task's domain): the new LoRA trains on top of it and the reward's
    /// "base model" is the merged one. `gfnlm eval --config` merges it too. Relative paths are
    /// resolved from the working directory.
    pub base_adapter: Option<String>,
    /// A PEFT adapter the trained LoRA starts from (e.g. the supervised baseline's), instead of
    /// the seeded random A and zero B. Its `r`, `lora_alpha` and target modules must equal
    /// `[lora]`'s. The reward's base model stays the weights without any adapter.
    pub init_adapter: Option<String>,
    /// LoRA.
    pub lora: LoraSection,
    /// Data-parallel runs over several ranks.
    pub distributed: DistributedSection,
    /// Task: `name` plus the task's own keys (validated by the task; see docs/training.md).
    pub task: TaskSection,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 200,
            batch_size: 16,
            grad_accum: 1,
            lr: 1e-3,
            lr_log_z: 0.1,
            warmup_steps: 10,
            linear_decay: false,
            weight_decay: 0.0,
            update: UpdateRule::Gflownet,
            ppo_epochs: 4,
            ppo_clip: 0.2,
            ppo_value_clip: 0.2,
            ppo_gamma: 1.0,
            ppo_lambda: 0.95,
            ppo_kl_coef: 0.05,
            ppo_value_coef: 0.1,
            ppo_value_lr: 1e-3,
            ppo_reward: PpoReward::LogR,
            objective: Objective::Subtb,
            subtb_lambda: 1.0,
            replay_prob: 0.25,
            tempered_prob: 0.5,
            temp_low: 0.5,
            temp_high: 2.0,
            epsilon: 0.05,
            buffer_size: 50,
            sim_tolerance: 0.0,
            seed_buffer: false,
            reward_temp_start: 1.0,
            reward_temp_end: 1.0,
            reward_temp_horizon: 0,
            checkpoint_every: 50,
            keep_checkpoints: 0,
            max_nonfinite_in_a_row: 5,
            precision: WeightPrecision::F32,
            sample_merged: false,
            base_adapter: None,
            init_adapter: None,
            lora: LoraSection::default(),
            distributed: DistributedSection::default(),
            task: TaskSection::default(),
        }
    }
}

/// Largest `batch_size` (trajectories decoded together: the logits alone are
/// `batch_size × vocab` floats a step).
pub const MAX_BATCH_SIZE: usize = 4096;
/// Largest `grad_accum`.
pub const MAX_GRAD_ACCUM: usize = 4096;
/// Largest `buffer_size` (entries per prompt).
pub const MAX_BUFFER_SIZE: usize = 100_000;
/// Largest `ppo_epochs`.
pub const MAX_PPO_EPOCHS: usize = 100;
/// Largest `[lora] r` accepted before the model is seen (the adapted layers' widths bound it
/// further: r ≤ min(in, out) of every adapted layer, checked when the adapters are attached).
pub const MAX_LORA_RANK: usize = 65_536;

impl TrainConfig {
    /// Reads a TOML file; missing keys take their defaults, unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cfg: Self = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        cfg.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Vec::new();
        if self.steps == 0 {
            p.push("steps must be ≥ 1 (0 would write an untrained adapter)".to_string());
        }
        for (name, v, max) in [
            ("batch_size", self.batch_size, MAX_BATCH_SIZE),
            ("grad_accum", self.grad_accum, MAX_GRAD_ACCUM),
            ("[lora] r", self.lora.r, MAX_LORA_RANK),
        ] {
            if v == 0 || v > max {
                p.push(format!("{name} must be in 1..={max}, got {v}"));
            }
        }
        if self.distributed.exchange_top > MAX_EXCHANGE_TOP {
            p.push(format!(
                "[distributed] exchange_top must be ≤ {MAX_EXCHANGE_TOP}, got {}",
                self.distributed.exchange_top
            ));
        }
        if self.buffer_size > MAX_BUFFER_SIZE {
            p.push(format!(
                "buffer_size must be ≤ {MAX_BUFFER_SIZE}, got {}",
                self.buffer_size
            ));
        }
        if self.lora.r > 0
            && let Err(e) = crate::trainer::lora_config(self).validate()
        {
            p.push(format!("[lora] {e}"));
        }
        for (name, v) in [
            ("lr_log_z", self.lr_log_z),
            ("weight_decay", self.weight_decay),
            ("sim_tolerance", self.sim_tolerance),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                p.push(format!(
                    "{name} must be a finite non-negative number, got {v}"
                ));
            }
        }
        if !(self.subtb_lambda > 0.0 && self.subtb_lambda.is_finite()) {
            p.push(format!(
                "subtb_lambda must be a finite positive number, got {}",
                self.subtb_lambda
            ));
        }
        if !(self.lr >= 0.0 && self.lr.is_finite()) {
            p.push(format!(
                "lr must be a finite non-negative number, got {}",
                self.lr
            ));
        }
        for (name, v) in [
            ("replay_prob", self.replay_prob),
            ("tempered_prob", self.tempered_prob),
            ("epsilon", self.epsilon),
        ] {
            if !(0.0..=1.0).contains(&v) {
                p.push(format!("{name} must be in [0, 1], got {v}"));
            }
        }
        if self.replay_prob + self.tempered_prob > 1.0 + 1e-12 {
            p.push("replay_prob + tempered_prob must be ≤ 1".into());
        }
        if !(self.temp_low > 0.0 && self.temp_low <= self.temp_high) {
            p.push(format!(
                "need 0 < temp_low ≤ temp_high, got {} and {}",
                self.temp_low, self.temp_high
            ));
        }
        if !(self.reward_temp_start > 0.0
            && self.reward_temp_end > 0.0
            && self.reward_temp_start.is_finite()
            && self.reward_temp_end.is_finite())
        {
            p.push("reward_temp_start and reward_temp_end must be finite and > 0".into());
        }
        if !self.temp_high.is_finite() {
            p.push(format!("temp_high must be finite, got {}", self.temp_high));
        }
        if self.ppo_epochs == 0 || self.ppo_epochs > MAX_PPO_EPOCHS {
            p.push(format!(
                "ppo_epochs must be in 1..={MAX_PPO_EPOCHS}, got {}",
                self.ppo_epochs
            ));
        }
        for (name, v) in [
            ("ppo_clip", self.ppo_clip),
            ("ppo_value_clip", self.ppo_value_clip),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                p.push(format!("{name} must be a finite positive number, got {v}"));
            }
        }
        for (name, v) in [
            ("ppo_gamma", self.ppo_gamma),
            ("ppo_lambda", self.ppo_lambda),
        ] {
            if !(0.0..=1.0).contains(&v) {
                p.push(format!("{name} must be in [0, 1], got {v}"));
            }
        }
        for (name, v) in [
            ("ppo_kl_coef", self.ppo_kl_coef),
            ("ppo_value_coef", self.ppo_value_coef),
            ("ppo_value_lr", self.ppo_value_lr),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                p.push(format!(
                    "{name} must be a finite non-negative number, got {v}"
                ));
            }
        }
        if self.update == UpdateRule::Ppo
            && (self.replay_prob > 0.0 || self.tempered_prob > 0.0 || self.epsilon > 0.0)
        {
            p.push(format!(
                "update = \"ppo\" learns from on-policy samples: set replay_prob = 0, tempered_prob = 0 and epsilon = 0 (got {}, {}, {})",
                self.replay_prob, self.tempered_prob, self.epsilon
            ));
        }
        if let Err(e) = gfnlm_tasks::check_config(&self.task) {
            p.push(e.to_string());
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_parse_and_validate() {
        // The tasks' configs and the baselines' (configs/baselines/).
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"));
        let mut n = 0;
        for dir in [dir.to_path_buf(), dir.join("baselines")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let p = entry.unwrap().path();
                if p.extension().is_some_and(|e| e == "toml") {
                    TrainConfig::from_file(&p).unwrap();
                    n += 1;
                }
            }
        }
        assert!(n >= 6, "{n} configs found in {}", dir.display());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = toml::from_str::<TrainConfig>("stepz = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stepz"), "{e}");
        let cfg = TrainConfig {
            replay_prob: 0.8,
            tempered_prob: 0.5,
            ..TrainConfig::default()
        };
        let e = cfg.validate().unwrap_err();
        assert!(e.contains("replay_prob + tempered_prob"), "{e}");
        for (cfg, key) in [
            (
                TrainConfig {
                    steps: 0,
                    ..TrainConfig::default()
                },
                "steps",
            ),
            (
                TrainConfig {
                    sim_tolerance: -0.5,
                    ..TrainConfig::default()
                },
                "sim_tolerance",
            ),
            (
                TrainConfig {
                    subtb_lambda: -1.0,
                    ..TrainConfig::default()
                },
                "subtb_lambda",
            ),
            (
                TrainConfig {
                    lr_log_z: f64::NAN,
                    ..TrainConfig::default()
                },
                "lr_log_z",
            ),
            (
                TrainConfig {
                    reward_temp_end: f64::INFINITY,
                    ..TrainConfig::default()
                },
                "reward_temp",
            ),
        ] {
            let e = cfg.validate().unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
        assert!(TrainConfig::default().validate().is_ok());
    }

    #[test]
    fn ppo_keys_parse_validate_and_default_to_the_old_config() {
        // A config without the keys parses to the same TrainConfig as before (resume compares).
        let plain: TrainConfig = toml::from_str("steps = 3").unwrap();
        assert_eq!(plain.ppo_epochs, 4);
        assert_eq!(plain.ppo_reward, PpoReward::LogR);
        let cfg: TrainConfig = toml::from_str(
            "update = \"ppo\"\nreplay_prob = 0\ntempered_prob = 0\nepsilon = 0\nppo_epochs = 2\nppo_reward = \"valid\"\nppo_kl_coef = 0.1",
        )
        .unwrap();
        assert_eq!(cfg.update, UpdateRule::Ppo);
        assert_eq!((cfg.ppo_epochs, cfg.ppo_reward), (2, PpoReward::Valid));
        cfg.validate().unwrap();
        let e = TrainConfig {
            update: UpdateRule::Ppo,
            ..TrainConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("on-policy"), "{e}");
        for (cfg, key) in [
            (
                TrainConfig {
                    ppo_epochs: 0,
                    ..cfg.clone()
                },
                "ppo_epochs",
            ),
            (
                TrainConfig {
                    ppo_clip: 0.0,
                    ..cfg.clone()
                },
                "ppo_clip",
            ),
            (
                TrainConfig {
                    ppo_lambda: 1.5,
                    ..cfg.clone()
                },
                "ppo_lambda",
            ),
            (
                TrainConfig {
                    ppo_value_lr: f64::NAN,
                    ..cfg.clone()
                },
                "ppo_value_lr",
            ),
        ] {
            let e = cfg.validate().unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = toml::from_str::<TrainConfig>("ppo_reward = \"score\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("log_r") || e.contains("valid"), "{e}");
    }

    #[test]
    fn sizes_are_bounded_before_anything_is_allocated() {
        let lora = |r: usize, targets: &[&str], dropout: f64| LoraSection {
            r,
            dropout,
            target_modules: targets.iter().map(|s| s.to_string()).collect(),
            ..LoraSection::default()
        };
        for (cfg, key) in [
            (
                TrainConfig {
                    batch_size: 1_000_000_000,
                    ..TrainConfig::default()
                },
                "batch_size must be in 1..=4096, got 1000000000",
            ),
            (
                TrainConfig {
                    batch_size: 100_000,
                    ..TrainConfig::default()
                },
                "batch_size",
            ),
            (
                TrainConfig {
                    grad_accum: 0,
                    ..TrainConfig::default()
                },
                "grad_accum",
            ),
            (
                TrainConfig {
                    buffer_size: usize::MAX,
                    ..TrainConfig::default()
                },
                "buffer_size",
            ),
            (
                TrainConfig {
                    lora: lora(1_000_000_000, &["q_proj"], 0.0),
                    ..TrainConfig::default()
                },
                "[lora] r must be in 1..=65536",
            ),
            (
                TrainConfig {
                    lora: lora(0, &["q_proj"], 0.0),
                    ..TrainConfig::default()
                },
                "[lora] r",
            ),
            (
                TrainConfig {
                    lora: lora(8, &[], 0.0),
                    ..TrainConfig::default()
                },
                "target_modules is empty",
            ),
            (
                TrainConfig {
                    lora: lora(8, &["q_proj"], 1.5),
                    ..TrainConfig::default()
                },
                "lora_dropout",
            ),
        ] {
            let e = cfg.validate().unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn task_keys_are_checked_with_the_file_named() {
        let dir = std::env::temp_dir().join(format!("gfnlm-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[task]\nname = \"rng\"\ninvalid_log_reward = nan\n").unwrap();
        let e = TrainConfig::from_file(&path).unwrap_err();
        assert!(
            e.contains("bad.toml") && e.contains("invalid_log_reward"),
            "{e}"
        );
        std::fs::write(&path, "subtb_lambda = -1\n").unwrap();
        let e = TrainConfig::from_file(&path).unwrap_err();
        assert!(e.contains("bad.toml") && e.contains("subtb_lambda"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
