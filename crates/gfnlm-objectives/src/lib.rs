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
//!
//! ```
//! use burn::tensor::{Device, Tensor, TensorData};
//! use gfnlm_objectives::{TrajectoryBatch, diagnostics, modified_subtb};
//!
//! # fn main() -> Result<(), gfnlm_objectives::ObjectiveError> {
//! let device = Device::flex().autodiff();
//! // B = 2 trajectories, T = 3 steps; the second stops after 1 token (the rest is ignored).
//! let t = |v: Vec<f32>, cols: usize| Tensor::<2>::from_data(TensorData::new(v, [2, cols]), &device);
//! let log_pf = t(vec![-1.0, -2.0, -0.5, /**/ -0.3, f32::NAN, 0.0], 3).require_grad();
//! let log_pterm = t(vec![-3.0, -2.5, -1.0, -0.2, /**/ -2.0, -0.1, 0.0, 0.0], 4);
//! let log_r = t(vec![-99.0, -20.0, -12.0, -9.0, /**/ -99.0, -15.0, 0.0, 0.0], 4);
//! let batch = TrajectoryBatch::new(log_pf.clone(), log_pterm, log_r, vec![3, 1])?
//!     .with_forced_stop(3)?; // trajectory 0 reached max_len = 3: log q(⊤|s_3) := 0
//! let loss = modified_subtb(&batch, 1.0)?;
//! let grads = loss.backward();
//! let d_log_pf = log_pf.grad(&grads).expect("log_pf requires grad");
//! assert_eq!(d_log_pf.dims(), [2, 3]);
//! assert!(diagnostics(&batch)?.log_ratio_var >= 0.0);
//! # Ok(())
//! # }
//! ```

mod batch;
mod diagnostics;
mod error;
mod losses;
pub mod reference;

pub use batch::TrajectoryBatch;
pub use diagnostics::{Diagnostics, diagnostics};
pub use error::ObjectiveError;
pub use losses::{
    modified_db, modified_subtb, modified_subtb_normaliser, trajectory_balance,
    trajectory_log_probs, vargrad,
};
