//! Collective communication between the processes (ranks) of a data-parallel run.
//!
//! The trainer knows nothing of the engine beyond [`Collective`]: the rank, the number of
//! ranks, an element-wise sum over all ranks and an all-gather of byte strings. A run in one
//! process uses [`SingleProcess`] (every operation is the identity); `mpi::MpiCollective`
//! (cargo feature `mpi`) runs over MPI, launched with `mpirun`/`srun`. A NCCL engine for GPUs
//! would be one more implementation (docs/scale-out.md).
//!
//! Every rank must call the same collective operations in the same order with buffers of the
//! same length: that is what keeps the adapters identical across ranks.

use std::fmt;

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use gfnlm_lora::AdaptableModel;
use gfnlm_models::CausalLm;

/// A failed collective operation (the message names the operation and the ranks involved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectiveError(pub String);

impl fmt::Display for CollectiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CollectiveError {}

/// The communication a data-parallel trainer needs.
pub trait Collective {
    /// This process's rank, `0..size()`; rank 0 writes metrics, checkpoints and evaluations.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Replaces `buf` by its element-wise sum over all ranks (every rank passes the same length).
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<(), CollectiveError>;
    /// Replaces `buf` by its element-wise sum over all ranks, in f64.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<(), CollectiveError>;
    /// Every rank's `bytes` (lengths may differ), indexed by rank.
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CollectiveError>;
    /// Stops every rank of the job (after an error on one of them, so that the others do not
    /// wait forever in a collective). The single-process implementation only exits.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// One process: rank 0 of 1; sums and gathers are the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CollectiveError> {
        Ok(vec![bytes.to_vec()])
    }
}

/// The world size an MPI launcher announces in the environment (`OMPI_COMM_WORLD_SIZE` of
/// Open MPI's `mpirun`, `PMI_SIZE` of MPICH/Hydra and of Slurm's `srun --mpi=pmi2`), if any:
/// a process started by hand sees `None`. `GFNLM_MPI=1` forces MPI on (size unknown: 0).
pub fn launcher_world_size() -> Option<usize> {
    let found = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse().ok());
    found.or_else(|| (std::env::var("GFNLM_MPI").ok()?.trim() == "1").then_some(0))
}

/// A 64-bit FNV-1a digest of `f32` values' bit patterns: equal digests on every rank mean
/// bit-identical adapters (cheap: one pass over host copies, no extra communication but 8 bytes).
pub fn fnv1a_f32(values: impl IntoIterator<Item = f32>) -> u64 {
    fnv1a(values.into_iter().flat_map(|v| v.to_bits().to_le_bytes()))
}

/// 64-bit FNV-1a of a byte stream.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Every adapter parameter of `model` (id, shape, value), in the walk order all ranks share.
pub fn adapter_params(model: &CausalLm) -> Vec<(ParamId, [usize; 2], Tensor<2>)> {
    let mut out = Vec::new();
    model.for_each_linear(&mut |_, lin| {
        if let Some(l) = &lin.lora {
            for p in [&l.lora_a, &l.lora_b] {
                let v = p.val();
                out.push((p.id, v.dims(), v));
            }
        }
    });
    out
}

/// What [`average_gradients`] returns.
pub struct AveragedGradients {
    /// The mean gradients (`None` when no rank had a finite micro-batch: every rank then skips
    /// the optimizer step alike).
    pub grads: Option<GradientsParams>,
    /// Whether any rank had a finite micro-batch.
    pub any_finite: bool,
    /// Seconds spent in the first, two-number all-reduce: waiting for the slowest rank.
    pub wait_s: f64,
    /// Seconds of the gradient all-reduce itself, host copies included.
    pub reduce_s: f64,
}

/// Averages a step's adapter gradients over the ranks, each rank weighted by `weight_local`
/// (the sum of its finite micro-batches' loss normalisers, [`crate::UpdateLoss::weight`]):
/// first one all-reduce of two f64 (weights and finite micro-batch counts), then **one**
/// all-reduce of one flat f32 buffer holding every adapter parameter's gradient in walk order,
/// pre-scaled by this rank's share (zeros where this rank has no gradient). The averaged
/// gradients live on `device`'s inner device. With one rank the gradients pass through
/// untouched (bit-identical runs).
///
/// With `grad_accum = 1`, N ranks then give the gradient one process computes on the union of
/// their trajectories, up to float summation order: every objective's loss is a sum over
/// trajectories (or sub-trajectory pairs) divided by its normaliser.
pub fn average_gradients(
    model: &CausalLm,
    grads: GradientsParams,
    finite_local: usize,
    weight_local: f64,
    collective: &dyn Collective,
    device: &Device,
) -> Result<AveragedGradients, CollectiveError> {
    let world = collective.size();
    if world == 1 {
        return Ok(AveragedGradients {
            grads: (!grads.is_empty()).then_some(grads),
            any_finite: finite_local > 0,
            wait_s: 0.0,
            reduce_s: 0.0,
        });
    }
    let t0 = std::time::Instant::now();
    let weight_local = if finite_local > 0 { weight_local } else { 0.0 };
    let mut totals = [weight_local, finite_local as f64];
    collective.all_reduce_sum_f64(&mut totals)?;
    let [weight_total, finite_total] = totals;
    let wait_s = t0.elapsed().as_secs_f64();
    if finite_total < 0.5 || !(weight_total > 0.0 && weight_total.is_finite()) {
        return Ok(AveragedGradients {
            grads: None,
            any_finite: finite_total >= 0.5,
            wait_s,
            reduce_s: 0.0,
        });
    }
    let t1 = std::time::Instant::now();
    let share = (weight_local / weight_total) as f32;
    let params = adapter_params(model);
    let total: usize = params.iter().map(|(_, s, _)| s[0] * s[1]).sum();
    let mut flat: Vec<f32> = Vec::with_capacity(total);
    for (id, shape, _) in &params {
        match grads.get::<2>(*id) {
            Some(g) if share > 0.0 => flat.extend(
                g.into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .map_err(|e| CollectiveError(format!("gradient to host: {e:?}")))?
                    .into_iter()
                    .map(|v| v * share),
            ),
            _ => flat.extend(std::iter::repeat_n(0.0, shape[0] * shape[1])),
        }
    }
    collective.all_reduce_sum_f32(&mut flat)?;
    let inner = device.clone().without_autodiff();
    let mut out = GradientsParams::new();
    let mut offset = 0;
    for (id, shape, _) in params {
        let n = shape[0] * shape[1];
        let mean = flat[offset..offset + n].to_vec();
        out.register(
            id,
            Tensor::<2>::from_data(TensorData::new(mean, shape), &inner),
        );
        offset += n;
    }
    Ok(AveragedGradients {
        grads: Some(out),
        any_finite: true,
        wait_s,
        reduce_s: t1.elapsed().as_secs_f64(),
    })
}

#[cfg(feature = "mpi")]
pub mod mpi {
    //! [`Collective`] over MPI (the `mpi` crate, rsmpi 0.8, on the system's MPI library: Open
    //! MPI 4.1 from Debian is what `cargo xtask setup-backend mpi` installs and CI tests).

    use super::{Collective, CollectiveError};
    use ::mpi::Count;
    use ::mpi::datatype::PartitionMut;
    use ::mpi::environment::Universe;
    use ::mpi::topology::SimpleCommunicator;
    use ::mpi::traits::*;

    /// `MPI_COMM_WORLD` of an initialised MPI environment (finalised when dropped).
    pub struct MpiCollective {
        world: SimpleCommunicator,
        // Dropped last: MPI_Finalize.
        _universe: Universe,
    }

    impl MpiCollective {
        /// Initialises MPI (once per process). Fails when MPI was already initialised.
        pub fn init() -> Result<Self, CollectiveError> {
            let universe = ::mpi::initialize().ok_or_else(|| {
                CollectiveError("MPI was already initialised in this process".into())
            })?;
            let world = universe.world();
            Ok(Self {
                world,
                _universe: universe,
            })
        }
    }

    impl Collective for MpiCollective {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<(), CollectiveError> {
            let send = buf.to_vec();
            self.world
                .all_reduce_into(&send[..], buf, ::mpi::collective::SystemOperation::sum());
            Ok(())
        }
        fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<(), CollectiveError> {
            let send = buf.to_vec();
            self.world
                .all_reduce_into(&send[..], buf, ::mpi::collective::SystemOperation::sum());
            Ok(())
        }
        fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CollectiveError> {
            let n = self.size();
            let len = Count::try_from(bytes.len()).map_err(|_| {
                CollectiveError(format!(
                    "all-gather of {} bytes exceeds MPI's 2 GiB count limit",
                    bytes.len()
                ))
            })?;
            let mut counts: Vec<Count> = vec![0; n];
            self.world.all_gather_into(&len, &mut counts[..]);
            let mut displs = Vec::with_capacity(n);
            let mut total: usize = 0;
            for &c in &counts {
                displs.push(Count::try_from(total).map_err(|_| {
                    CollectiveError("all-gather larger than MPI's 2 GiB count limit".into())
                })?);
                total += c as usize;
            }
            let mut all = vec![0u8; total];
            {
                let mut part = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
                self.world.all_gather_varcount_into(bytes, &mut part);
            }
            Ok(counts
                .iter()
                .zip(&displs)
                .map(|(&c, &d)| all[d as usize..d as usize + c as usize].to_vec())
                .collect())
        }
        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_process_is_identity() {
        let c = SingleProcess;
        let mut a = [1.5f32, -2.0];
        c.all_reduce_sum_f32(&mut a).unwrap();
        assert_eq!(a, [1.5, -2.0]);
        assert_eq!(c.all_gather_bytes(b"xy").unwrap(), vec![b"xy".to_vec()]);
        assert_eq!((c.rank(), c.size()), (0, 1));
    }

    #[test]
    fn digest_sees_one_bit() {
        let a = fnv1a_f32([1.0, 2.0, 3.0]);
        assert_eq!(a, fnv1a_f32([1.0, 2.0, 3.0]));
        assert_ne!(
            a,
            fnv1a_f32([1.0, 2.0, f32::from_bits(3.0f32.to_bits() ^ 1)])
        );
        assert_ne!(a, fnv1a_f32([2.0, 1.0, 3.0]));
    }
}
