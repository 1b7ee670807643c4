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

/// The learning rule applied to each rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateRule {
    /// GFlowNet fine-tuning with `objective` (the paper's method).
    #[default]
    Gflownet,
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
    /// Learning rule (`gflownet`).
    pub update: UpdateRule,
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
    /// Reward temperature at step 0.
    pub reward_temp_start: f64,
    /// Reward temperature after `reward_temp_horizon` steps.
    pub reward_temp_end: f64,
    /// Steps of the reward-temperature ramp.
    pub reward_temp_horizon: usize,
    /// Write a checkpoint every N optimizer steps (and at the end).
    pub checkpoint_every: usize,
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
    /// LoRA.
    pub lora: LoraSection,
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
            objective: Objective::Subtb,
            subtb_lambda: 1.0,
            replay_prob: 0.25,
            tempered_prob: 0.5,
            temp_low: 0.5,
            temp_high: 2.0,
            epsilon: 0.05,
            buffer_size: 50,
            sim_tolerance: 0.0,
            reward_temp_start: 1.0,
            reward_temp_end: 1.0,
            reward_temp_horizon: 0,
            checkpoint_every: 50,
            max_nonfinite_in_a_row: 5,
            precision: WeightPrecision::F32,
            sample_merged: false,
            lora: LoraSection::default(),
            task: TaskSection::default(),
        }
    }
}

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
        if self.batch_size == 0 {
            p.push("batch_size must be ≥ 1".to_string());
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
        if self.grad_accum == 0 {
            p.push("grad_accum must be ≥ 1".into());
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
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"));
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                TrainConfig::from_file(&p).unwrap();
                n += 1;
            }
        }
        assert!(n >= 1, "no configs found in {}", dir.display());
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
}
