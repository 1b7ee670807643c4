//! The fine-tuning loop of design §3, shared by every task, architecture and update rule.
//!
//! - [`trainer`]: [`Trainer`] over any [`gfnlm_models::CausalLm`], any [`gfnlm_tasks::Task`]
//!   and any [`Update`]: example → rollout (replay or the one decode loop,
//!   [`gfnlm_models::decode`]) → the task's rewards → the update's loss → AdamW; checkpoints
//!   and exact resume (checkpoints carry a SHA-256 manifest; resume falls back past damaged
//!   ones);
//! - [`collective`]: the [`Collective`] trait of data-parallel runs ([`SingleProcess`] by
//!   default; MPI behind the `mpi` feature): gradient all-reduce, rank-0 checkpoints;
//! - [`lock`]: the exclusive lock on a run folder ([`RunLock`]);
//! - [`update`]: the [`Update`] trait and [`GFlowNet`] (modified SubTB, DB, TB with log Z per
//!   prompt, VarGrad); [`sft`]: supervised fine-tuning on demonstrations; [`ppo`]: PPO (value
//!   head, KL penalty to the base model, GAE, clipped losses, several epochs per rollout);
//! - [`buffer`]: the per-prompt replay buffer (top-K by untempered log R, exact and
//!   near-duplicate removal);
//! - [`schedule`]: learning-rate warm-up/decay and the reward-temperature schedule.

pub mod base_adapter;
pub mod buffer;
pub mod collective;
pub mod config;
pub mod exact_f64;
pub mod lock;
pub mod log_z;
pub mod metrics;
pub mod ppo;
pub mod schedule;
pub mod sft;
pub mod trainer;
pub mod update;

pub use base_adapter::merge_base_adapter;
pub use buffer::ReplayBuffer;
pub use collective::{Collective, CollectiveError, SingleProcess};
pub use config::TrainConfig;
pub use gfnlm_models::decode::{
    PolicyTerms, Trajectory, policy_terms, sample_trajectories, sequence_log_probs,
};
pub use lock::RunLock;
pub use log_z::LogZ;
pub use metrics::MetricsLog;
pub use ppo::Ppo;
pub use sft::Sft;
pub use trainer::{StepStats, TrainError, Trainer};
pub use update::{GFlowNet, Rollout, RolloutSource, Update, UpdateLoss, update_from_config};
