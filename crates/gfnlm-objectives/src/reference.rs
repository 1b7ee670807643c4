//! The objectives as plain f64 double loops over host vectors, written straight from the
//! definitions in `docs/objectives.md`. They are the truth the vectorised tensor code is tested
//! against (on every backend), and a readable statement of the math.

use burn::tensor::{Device, Tensor, TensorData};

use crate::TrajectoryBatch;

/// One batch on the host in the crate's layout: `pf` `[B][T]`, `pterm` and `r` `[B][T+1]`;
/// trajectory `b` uses steps `0..lengths[b]` of `pf` and states `0..=lengths[b]` of the others.
#[derive(Debug, Clone)]
pub struct HostBatch {
    /// T: steps per row.
    pub t: usize,
    /// log q(z_{k+1} | s_k).
    pub pf: Vec<Vec<f64>>,
    /// log q(⊤ | s_k).
    pub pterm: Vec<Vec<f64>>,
    /// log R(s_k).
    pub r: Vec<Vec<f64>>,
    /// Tokens in each trajectory (0..=T).
    pub lengths: Vec<usize>,
}

impl HostBatch {
    /// δ_k = log R(s_k) + log q(z_{k+1}|s_k) + log q(⊤|s_{k+1}) − log R(s_{k+1}) − log q(⊤|s_k).
    pub fn delta(&self, b: usize, k: usize) -> f64 {
        self.r[b][k] + self.pf[b][k] + self.pterm[b][k + 1] - self.r[b][k + 1] - self.pterm[b][k]
    }

    /// Σ_{i<j<=n} λ^{j-i-1} (Σ_{k=i}^{j-1} δ_k)² / Σ λ^{j-i-1}, pooled over the batch.
    pub fn subtb(&self, lambda: f64) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for b in 0..self.lengths.len() {
            let n = self.lengths[b];
            for i in 0..n {
                for j in i + 1..=n {
                    let res: f64 = (i..j).map(|k| self.delta(b, k)).sum();
                    let w = lambda.powi((j - i - 1) as i32);
                    num += w * res * res;
                    den += w;
                }
            }
        }
        num / den
    }

    /// Modified DB: mean over non-empty trajectories of the mean squared δ_k.
    pub fn db(&self) -> f64 {
        let mut per_traj = Vec::new();
        for b in 0..self.lengths.len() {
            let n = self.lengths[b];
            if n > 0 {
                per_traj.push((0..n).map(|k| self.delta(b, k).powi(2)).sum::<f64>() / n as f64);
            }
        }
        per_traj.iter().sum::<f64>() / per_traj.len() as f64
    }

    /// log q(Z⊤) of trajectory `b`.
    pub fn log_q(&self, b: usize) -> f64 {
        let n = self.lengths[b];
        self.pf[b][..n].iter().sum::<f64>() + self.pterm[b][n]
    }

    /// log R of trajectory `b`'s terminal state.
    pub fn log_r_term(&self, b: usize) -> f64 {
        self.r[b][self.lengths[b]]
    }

    /// TB with log Z scalar (`log_z.len() == 1`) or one per trajectory.
    pub fn tb(&self, log_z: &[f64]) -> f64 {
        let bsz = self.lengths.len();
        (0..bsz)
            .map(|b| {
                let z = if log_z.len() == 1 { log_z[0] } else { log_z[b] };
                (z + self.log_q(b) - self.log_r_term(b)).powi(2)
            })
            .sum::<f64>()
            / bsz as f64
    }

    /// VarGrad: the batch variance of log q(Z⊤) − log R(Z).
    pub fn vargrad(&self) -> f64 {
        let bsz = self.lengths.len();
        let x: Vec<f64> = (0..bsz)
            .map(|b| self.log_q(b) - self.log_r_term(b))
            .collect();
        let mean = x.iter().sum::<f64>() / bsz as f64;
        x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / bsz as f64
    }

    /// Tensors on `device`; entries outside each trajectory hold `garbage` (NaN, inf, huge).
    pub fn tensors(&self, device: &Device, garbage: f32) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        let bsz = self.lengths.len();
        let t = self.t;
        let flat = |rows: &Vec<Vec<f64>>, cols: usize, used: &dyn Fn(usize, usize) -> bool| {
            let mut v = Vec::with_capacity(bsz * cols);
            for (b, row) in rows.iter().enumerate() {
                for (k, x) in row.iter().enumerate() {
                    v.push(if used(k, self.lengths[b]) {
                        *x as f32
                    } else {
                        garbage
                    });
                }
            }
            Tensor::<2>::from_data(TensorData::new(v, [bsz, cols]), device)
        };
        (
            flat(&self.pf, t, &|k, n| k < n),
            flat(&self.pterm, t + 1, &|k, n| k <= n),
            flat(&self.r, t + 1, &|k, n| k <= n),
        )
    }

    pub fn batch(&self, device: &Device, garbage: f32) -> TrajectoryBatch {
        let (pf, pterm, r) = self.tensors(device, garbage);
        TrajectoryBatch::new(pf, pterm, r, self.lengths.clone()).expect("valid batch")
    }
}
