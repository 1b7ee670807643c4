//! The objectives of design §2 as functions of a [`TrajectoryBatch`].

use burn::tensor::{Device, Tensor};

use crate::ObjectiveError;
use crate::batch::{TrajectoryBatch, bool_tensor, float_tensor};

/// Which entries of `log_pterm` / `log_r` an objective reads.
#[derive(Clone, Copy)]
enum StateUse {
    /// Every state of the trajectory, `k <= n_b` (balance over transitions).
    AllStates,
    /// Only the terminal state `k == n_b` (whole-trajectory balance).
    Terminal,
}

/// Inputs with every unused entry replaced by 0 (by selection, so NaN/inf there cannot leak
/// into values or gradients), after checking that every used entry is finite.
pub(crate) struct Sanitized {
    pub pf: Tensor<2>,
    pub pterm: Tensor<2>,
    pub r: Tensor<2>,
}

pub(crate) fn readback(e: impl std::fmt::Display) -> ObjectiveError {
    ObjectiveError::Readback(e.to_string())
}

fn sanitize_one(
    input: &'static str,
    x: &Tensor<2>,
    valid: Vec<bool>,
    device: &Device,
) -> Result<Tensor<2>, ObjectiveError> {
    let shape = x.dims();
    let invalid: Vec<bool> = valid.iter().map(|v| !v).collect();
    let valid_t = bool_tensor(valid.clone(), shape, device);
    let bad = x
        .clone()
        .detach()
        .is_finite()
        .bool_not()
        .bool_and(valid_t)
        .any()
        .try_into_scalar::<bool>()
        .map_err(readback)?;
    if bad {
        let values = x.try_to_vec_as::<f32>().map_err(readback)?;
        let idx = values
            .iter()
            .zip(&valid)
            .position(|(v, ok)| *ok && !v.is_finite())
            .expect("device reported a non-finite entry");
        return Err(ObjectiveError::NonFinite {
            input,
            trajectory: idx / shape[1],
            step: idx % shape[1],
            value: values[idx],
        });
    }
    Ok(x.clone()
        .mask_fill(bool_tensor(invalid, shape, device), 0.0))
}

fn sanitize(batch: &TrajectoryBatch, states: StateUse) -> Result<Sanitized, ObjectiveError> {
    let device = batch.device();
    let t = batch.steps();
    let pf = sanitize_one(
        "log_pf",
        batch.log_pf(),
        batch.host_mask(t, |k, n| k < n),
        &device,
    )?;
    let state_mask = |k: usize, n: usize| match states {
        StateUse::AllStates => k <= n,
        StateUse::Terminal => k == n,
    };
    let pterm = sanitize_one(
        "log_pterm",
        batch.log_pterm(),
        batch.host_mask(t + 1, state_mask),
        &device,
    )?;
    let r = sanitize_one(
        "log_r",
        batch.log_r(),
        batch.host_mask(t + 1, state_mask),
        &device,
    )?;
    Ok(Sanitized { pf, pterm, r })
}

/// Per-step residuals `[B, T]`:
/// δ_k = log R_k + log q(z_{k+1}|s_k) + log q(⊤|s_{k+1}) − log R_{k+1} − log q(⊤|s_k).
fn deltas(s: &Sanitized, t: usize) -> Tensor<2> {
    let b = s.pf.dims()[0];
    s.r.clone().slice([0..b, 0..t]) + s.pf.clone() + s.pterm.clone().slice([0..b, 1..t + 1])
        - s.r.clone().slice([0..b, 1..t + 1])
        - s.pterm.clone().slice([0..b, 0..t])
}

fn no_transitions(batch: &TrajectoryBatch) -> bool {
    batch.lengths().iter().all(|&n| n == 0)
}

/// Modified sub-trajectory balance (design §2; reference notes §3.2), `log P_B = 0`, no log Z.
///
/// Loss = Σ_b Σ_{0<=i<j<=n_b} λ^{j−i−1} (Σ_{k=i}^{j−1} δ_{b,k})² / Σ_b Σ_{0<=i<j<=n_b} λ^{j−i−1},
/// pooled over the batch (not a per-trajectory mean). All O(T²) pairs come from one cumulative
/// sum and a broadcast difference. Returns a one-element tensor on the batch's device.
///
/// Errors: `lambda` not finite or negative, a non-finite entry inside a trajectory, or no
/// transition at all (every `n_b = 0`).
pub fn modified_subtb(batch: &TrajectoryBatch, lambda: f64) -> Result<Tensor<1>, ObjectiveError> {
    if !lambda.is_finite() || lambda < 0.0 {
        return Err(ObjectiveError::InvalidLambda(lambda));
    }
    if no_transitions(batch) {
        return Err(ObjectiveError::NoTransitions);
    }
    let s = sanitize(batch, StateUse::AllStates)?;
    let (b, t) = (batch.batch_size(), batch.steps());
    let device = batch.device();
    let delta = deltas(&s, t);
    // C[b, k] = Σ_{m<k} δ_{b,m}, k = 0..T.
    let c = Tensor::cat(vec![Tensor::zeros([b, 1], &device), delta.cumsum(1)], 1);
    // residual[b, i, j] = C[b, j] − C[b, i].
    let residual = c.clone().unsqueeze_dim::<3>(1) - c.unsqueeze_dim::<3>(2);

    // Pair weights λ^{L−1} for sub-trajectory length L = j − i >= 1 (0^0 = 1), divided by the
    // normaliser on the host in f64. They are first scaled by the largest used power (computed
    // in the log domain), so any finite λ and T give finite f32 weights without overflow.
    let side = t + 1;
    let max_len = batch.lengths().iter().copied().max().unwrap_or(0);
    let mut pow = vec![0f64; side];
    if lambda == 0.0 {
        pow[1] = 1.0;
    } else {
        let ln = lambda.ln();
        let top = (0..max_len).map(|l| l as f64 * ln).fold(f64::MIN, f64::max);
        for (l, p) in pow.iter_mut().enumerate().skip(1) {
            *p = ((l - 1) as f64 * ln - top).exp();
        }
    }
    let norm: f64 = batch
        .lengths()
        .iter()
        .map(|&n| (1..=n).map(|l| (n - l + 1) as f64 * pow[l]).sum::<f64>())
        .sum();
    // norm >= 1: the largest used power is 1 and some trajectory has a pair of that length.
    debug_assert!(norm >= 1.0);
    let mut w = vec![0f32; side * side];
    for i in 0..side {
        for j in i + 1..side {
            w[i * side + j] = (pow[j - i] / norm) as f32;
        }
    }
    // A pair is valid when its end state is inside the trajectory (j <= n_b).
    let end_ok: Vec<f32> = batch
        .host_mask(side, |j, n| j <= n)
        .into_iter()
        .map(|v| if v { 1.0 } else { 0.0 })
        .collect();
    let weight =
        float_tensor(w, [1, side, side], &device) * float_tensor(end_ok, [b, 1, side], &device);
    Ok((residual.square() * weight).sum())
}

/// The normaliser of [`modified_subtb`] in absolute terms: Σ_b Σ_{L=1..n_b} (n_b − L + 1)·λ^{L−1},
/// the total weight of the batch's sub-trajectory pairs. The loss is the weighted sum of squared
/// residuals divided by it, so for batches P and Q of one union U,
/// `loss(U)·N(U) = loss(P)·N(P) + loss(Q)·N(Q)`: data-parallel ranks weight their gradients by
/// it to reproduce the gradient of the whole batch. Saturates to +∞ only for λ > 1 on very long
/// trajectories (λ^{L−1} past f64's range).
pub fn modified_subtb_normaliser(lengths: &[usize], lambda: f64) -> f64 {
    lengths
        .iter()
        .map(|&n| {
            (1..=n)
                .map(|l| (n - l + 1) as f64 * lambda.powi(l as i32 - 1))
                .sum::<f64>()
        })
        .sum()
}

/// Modified detailed balance: adjacent pairs only (`j = i + 1`), as the reference's
/// `loss_type = 'modified_db'`.
///
/// Loss = mean over trajectories with `n_b >= 1` of (1/n_b) Σ_{k<n_b} δ_{b,k}². Trajectories that
/// terminated at step 0 have no transition and are left out of the mean.
///
/// Errors: a non-finite entry inside a trajectory, or every `n_b = 0`.
pub fn modified_db(batch: &TrajectoryBatch) -> Result<Tensor<1>, ObjectiveError> {
    if no_transitions(batch) {
        return Err(ObjectiveError::NoTransitions);
    }
    let s = sanitize(batch, StateUse::AllStates)?;
    let (b, t) = (batch.batch_size(), batch.steps());
    let device = batch.device();
    let counted = batch.lengths().iter().filter(|&&n| n > 0).count() as f64;
    let mut w = Vec::with_capacity(b * t);
    for &n in batch.lengths() {
        let per_step = if n > 0 {
            (1.0 / (n as f64 * counted)) as f32
        } else {
            0.0
        };
        w.extend((0..t).map(|k| if k < n { per_step } else { 0.0 }));
    }
    let delta = deltas(&s, t);
    Ok((delta.square() * float_tensor(w, [b, t], &device)).sum())
}

/// Per-trajectory log q(Z⊤) = Σ_{k<n_b} log q(z_{k+1}|s_k) + log q(⊤|s_{n_b}) and
/// log R(Z⊤) = log R_{n_b}, both `[B]`, differentiable.
///
/// Errors: a non-finite entry among those read.
pub fn trajectory_log_probs(
    batch: &TrajectoryBatch,
) -> Result<(Tensor<1>, Tensor<1>), ObjectiveError> {
    let s = sanitize(batch, StateUse::Terminal)?;
    let b = batch.batch_size();
    let log_q = (s.pf.sum_dim(1) + s.pterm.sum_dim(1)).reshape([b]);
    let log_r = s.r.sum_dim(1).reshape([b]);
    Ok((log_q, log_r))
}

/// Trajectory balance with a learned log Z: mean_b (log Z_b + log q(Z_b⊤) − log R(Z_b⊤))².
///
/// `log_z` has shape `[1]` (one scalar shared by the batch) or `[B]` (per prompt, e.g. the
/// output of a small conditional head). Gradients flow into `log_z` and the batch.
///
/// Errors: a `log_z` of another shape, or a non-finite entry among those read.
pub fn trajectory_balance(
    batch: &TrajectoryBatch,
    log_z: Tensor<1>,
) -> Result<Tensor<1>, ObjectiveError> {
    let b = batch.batch_size();
    let [z] = log_z.dims();
    if z != 1 && z != b {
        return Err(ObjectiveError::Shape {
            input: "log_z",
            expected: vec![b],
            got: vec![z],
        });
    }
    let z_finite = log_z
        .clone()
        .detach()
        .is_finite()
        .all()
        .try_into_scalar::<bool>()
        .map_err(readback)?;
    if !z_finite {
        let values = log_z.try_to_vec_as::<f32>().map_err(readback)?;
        let idx = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(ObjectiveError::NonFinite {
            input: "log_z",
            trajectory: idx,
            step: 0,
            value: values[idx],
        });
    }
    let (log_q, log_r) = trajectory_log_probs(batch)?;
    Ok((log_z + log_q - log_r).square().mean())
}

/// VarGrad: the batch variance of log q(Z⊤) − log R(Z⊤), i.e. trajectory balance with log Z
/// replaced by its batch estimate mean_b (log R − log q). Needs no learned log Z.
///
/// Uses the population variance (divides by B). All trajectories should share one prompt.
///
/// Errors: fewer than 2 trajectories, or a non-finite entry among those read.
pub fn vargrad(batch: &TrajectoryBatch) -> Result<Tensor<1>, ObjectiveError> {
    if batch.batch_size() < 2 {
        return Err(ObjectiveError::TooFewTrajectories {
            objective: "vargrad",
            needed: 2,
            got: batch.batch_size(),
        });
    }
    let (log_q, log_r) = trajectory_log_probs(batch)?;
    let x = log_q - log_r;
    let centred = x.clone() - x.mean();
    Ok(centred.square().mean())
}
