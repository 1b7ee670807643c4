//! The fine-tuning loop of design §3, shared by every task, architecture and update rule.
//!
//! - [`trainer`]: [`Trainer`] over any [`gfnlm_models::CausalLm`], any [`gfnlm_tasks::Task`]
//!   and any [`Update`]: example → rollout (replay or the one decode loop,
//!   [`gfnlm_models::decode`]) → the task's rewards → the update's loss → AdamW; checkpoints
//!   and exact resume;
//! - [`update`]: the [`Update`] trait and [`GFlowNet`] (modified SubTB, DB, TB with log Z per
//!   prompt, VarGrad);
//! - [`buffer`]: the per-prompt replay buffer (top-K by untempered log R, exact and
//!   near-duplicate removal);
//! - [`schedule`]: learning-rate warm-up/decay and the reward-temperature schedule.

pub mod buffer;
pub mod config;
pub mod log_z;
pub mod metrics;
pub mod schedule;
pub mod trainer;
pub mod update;

pub use buffer::ReplayBuffer;
pub use config::TrainConfig;
pub use gfnlm_models::decode::{
    PolicyTerms, Trajectory, policy_terms, sample_trajectories, sequence_log_probs,
};
pub use log_z::LogZ;
pub use metrics::MetricsLog;
pub use trainer::{StepStats, TrainError, Trainer};
pub use update::{GFlowNet, Rollout, Update, UpdateLoss, update_from_config};
