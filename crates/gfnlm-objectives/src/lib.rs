//! GFlowNet objectives for fine-tuning language models (design §2), as pure functions of burn
//! tensors on any device.
//!
//! Build a [`TrajectoryBatch`] (the crate's layout, or [`TrajectoryBatch::from_reference`] for
//! the paper's sampler layout), then call an objective:
//! - [`modified_subtb`]: modified sub-trajectory balance (the default; no log Z),
//! - [`modified_db`]: its adjacent-pairs-only form,
//! - [`trajectory_balance`]: with a learned log Z (scalar or per prompt),
//! - [`vargrad`]: trajectory balance with log Z replaced by the batch estimate,
//!
//! and log [`diagnostics`]. Each objective returns a one-element tensor that can be
//! back-propagated. See `docs/objectives.md` for the equations.

mod batch;
mod diagnostics;
mod error;
mod losses;

pub use batch::TrajectoryBatch;
pub use diagnostics::{Diagnostics, diagnostics};
pub use error::ObjectiveError;
pub use losses::{modified_db, modified_subtb, trajectory_balance, trajectory_log_probs, vargrad};
