//! Host-side diagnostics of a batch (no gradients).

use crate::ObjectiveError;
use crate::batch::TrajectoryBatch;
use crate::losses::{readback, trajectory_log_probs};

/// What to log per batch to see whether the policy is converging.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostics {
    /// log q(Z⊤) per trajectory.
    pub log_q: Vec<f64>,
    /// log R(Z⊤) at termination per trajectory.
    pub log_r: Vec<f64>,
    /// Population variance over the batch of log R(Z⊤) − log q(Z⊤); it tends to 0 as q ∝ R
    /// (the ratio is then log Z for every trajectory). 0 for a single trajectory.
    pub log_ratio_var: f64,
    /// Batch mean of log R(Z⊤) − log q(Z⊤), an estimate of log Z.
    pub log_z_estimate: f64,
    /// Mean number of non-terminal tokens.
    pub mean_length: f64,
}

/// Computes [`Diagnostics`] for a batch (reads the tensors back to the host once).
///
/// Errors: a non-finite entry among those read.
pub fn diagnostics(batch: &TrajectoryBatch) -> Result<Diagnostics, ObjectiveError> {
    let (log_q, log_r) = trajectory_log_probs(batch)?;
    let to_host =
        |t: burn::tensor::Tensor<1>| t.detach().try_into_vec_as::<f64>().map_err(readback);
    let log_q = to_host(log_q)?;
    let log_r = to_host(log_r)?;
    let n = log_q.len() as f64;
    let ratios: Vec<f64> = log_r.iter().zip(&log_q).map(|(r, q)| r - q).collect();
    let mean = ratios.iter().sum::<f64>() / n;
    let var = ratios.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let mean_length = batch.lengths().iter().sum::<usize>() as f64 / n;
    Ok(Diagnostics {
        log_q,
        log_r,
        log_ratio_var: var,
        log_z_estimate: mean,
        mean_length,
    })
}
