//! The GFlowNet fine-tuning loop of design §3, shared by every task.
//!
//! - [`sampler`]: no-grad batched sampling from the policy under a [`Constraint`] (vocabulary
//!   offsets, min/max length), with temperature and ε-uniform exploration, a shared prompt
//!   prefix and the KV cache;
//! - [`policy`]: ONE teacher-forced forward of the policy that yields log q(token) and log q(⊤)
//!   for every step (with gradients when the model is on an autodiff device);
//! - [`buffer`]: the per-prompt replay buffer (top-K by untempered log R, exact and near-duplicate
//!   removal);
//! - [`schedule`]: learning-rate warm-up/decay and the reward-temperature schedule.
//!
//! [`Constraint`]: gfnlm_tasks::Constraint

pub mod buffer;
pub mod config;
pub mod eval;
pub mod log_z;
pub mod policy;
pub mod sampler;
pub mod schedule;
pub mod trainer;

pub use buffer::ReplayBuffer;
pub use config::TrainConfig;
pub use log_z::LogZ;
pub use policy::{PolicyTerms, policy_terms, sequence_log_probs};
pub use sampler::{Trajectory, sample_trajectories};
pub use trainer::{StepStats, TrainError, Trainer};
