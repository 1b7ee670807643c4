//! The typed input shared by every objective.

use burn::tensor::{Bool, Device, Tensor, TensorData};

use crate::ObjectiveError;

/// A batch of B trajectories in the crate's layout, padded to T steps.
///
/// State `s_k` is the prompt followed by the first `k` generated tokens. Trajectory `b` takes
/// `n_b = lengths[b]` non-terminal tokens and then the termination action ⊤ at `s_{n_b}`, so
/// `0 <= n_b <= T`.
///
/// | field | shape | entry `[b, k]` | used for |
/// |---|---|---|---|
/// | `log_pf` | `[B, T]` | log q(z_{k+1} \| s_k) | `k < n_b` |
/// | `log_pterm` | `[B, T+1]` | log q(⊤ \| s_k) | `k <= n_b` |
/// | `log_r` | `[B, T+1]` | log R(z_1..z_k ⊤) | `k <= n_b` |
///
/// Entries past a trajectory's end are ignored whatever they hold (NaN and ±inf included); no
/// gradient flows into them. Entries inside a trajectory must be finite.
///
/// **Forced stop.** A trajectory that reached `max_len` was made to stop. By default the given
/// `log_pterm[b, n_b]` (the model's real log q(⊤ | s_max), as the paper's next-sentence code
/// uses) enters the loss; [`TrajectoryBatch::with_forced_stop`] instead sets it to 0 (a certain
/// stop, as the paper's EOS-variant code does).
#[derive(Debug, Clone)]
pub struct TrajectoryBatch {
    log_pf: Tensor<2>,
    log_pterm: Tensor<2>,
    log_r: Tensor<2>,
    lengths: Vec<usize>,
}

fn check_shape(
    input: &'static str,
    t: &Tensor<2>,
    expected: [usize; 2],
) -> Result<(), ObjectiveError> {
    let got = t.dims();
    if got != expected {
        return Err(ObjectiveError::Shape {
            input,
            expected: expected.to_vec(),
            got: got.to_vec(),
        });
    }
    Ok(())
}

impl TrajectoryBatch {
    /// Builds a batch from tensors in the crate's layout (see the type's documentation).
    ///
    /// Checks shapes and lengths; values are checked by each objective, which knows which
    /// entries it reads.
    pub fn new(
        log_pf: Tensor<2>,
        log_pterm: Tensor<2>,
        log_r: Tensor<2>,
        lengths: Vec<usize>,
    ) -> Result<Self, ObjectiveError> {
        let [b, t] = log_pf.dims();
        if b == 0 || lengths.is_empty() {
            return Err(ObjectiveError::EmptyBatch);
        }
        if t == 0 {
            return Err(ObjectiveError::NoSteps);
        }
        if lengths.len() != b {
            return Err(ObjectiveError::Shape {
                input: "lengths",
                expected: vec![b],
                got: vec![lengths.len()],
            });
        }
        check_shape("log_pterm", &log_pterm, [b, t + 1])?;
        check_shape("log_r", &log_r, [b, t + 1])?;
        if let Some((trajectory, &length)) = lengths.iter().enumerate().find(|(_, n)| **n > t) {
            return Err(ObjectiveError::LengthOutOfRange {
                trajectory,
                length,
                max: t,
            });
        }
        Ok(Self {
            log_pf,
            log_pterm,
            log_r,
            lengths,
        })
    }

    /// Builds a batch from the layout of the paper's next-sentence sampler.
    ///
    /// `generated[b]` holds the prompt (`prompt_len` tokens) followed by the sampled tokens, as
    /// `generated_text` in the reference code. `log_pf`, `log_pterm` and `log_r` are `[B, T_ref]`
    /// with one column per generated position (states `s_0 .. s_{T_ref-1}`); `T_ref >= 2`.
    ///
    /// As in the reference, `n_b` is the position of the first `termination_token` among the
    /// first `T_ref - 1` generated tokens, or `T_ref - 1` when there is none; the last column
    /// of `log_pf` (the termination step) is dropped.
    pub fn from_reference<S: AsRef<[u32]>>(
        generated: &[S],
        prompt_len: usize,
        termination_token: u32,
        log_pf: Tensor<2>,
        log_pterm: Tensor<2>,
        log_r: Tensor<2>,
    ) -> Result<Self, ObjectiveError> {
        let [b, t_ref] = log_pf.dims();
        if b == 0 {
            return Err(ObjectiveError::EmptyBatch);
        }
        if t_ref < 2 {
            return Err(ObjectiveError::NoSteps);
        }
        if generated.len() != b {
            return Err(ObjectiveError::Shape {
                input: "generated",
                expected: vec![b],
                got: vec![generated.len()],
            });
        }
        check_shape("log_pterm", &log_pterm, [b, t_ref])?;
        check_shape("log_r", &log_r, [b, t_ref])?;
        let steps = t_ref - 1;
        let mut lengths = Vec::with_capacity(b);
        for (trajectory, row) in generated.iter().enumerate() {
            let row = row.as_ref();
            let expected = prompt_len + steps;
            if row.len() < expected {
                return Err(ObjectiveError::TokensTooShort {
                    trajectory,
                    expected,
                    got: row.len(),
                });
            }
            let sampled = &row[prompt_len..expected];
            lengths.push(
                sampled
                    .iter()
                    .position(|&tok| tok == termination_token)
                    .unwrap_or(steps),
            );
        }
        Self::new(log_pf.slice([0..b, 0..steps]), log_pterm, log_r, lengths)
    }

    /// Marks trajectories that reached `max_len` as forced stops: their
    /// log q(⊤ | s_{max_len}) is replaced by 0 (termination was certain there), with no gradient
    /// into the replaced entry.
    pub fn with_forced_stop(mut self, max_len: usize) -> Result<Self, ObjectiveError> {
        let t = self.steps();
        if max_len > t {
            return Err(ObjectiveError::MaxLenOutOfRange { max_len, steps: t });
        }
        let mut mask = vec![false; self.batch_size() * (t + 1)];
        let mut any = false;
        for (b, &n) in self.lengths.iter().enumerate() {
            if n == max_len {
                mask[b * (t + 1) + n] = true;
                any = true;
            }
        }
        if any {
            let mask = bool_tensor(mask, [self.batch_size(), t + 1], &self.device());
            self.log_pterm = self.log_pterm.mask_fill(mask, 0.0);
        }
        Ok(self)
    }

    /// Marks the trajectories flagged in `forced` as ending in a forced stop, at whatever length
    /// (`max_len`, or earlier when the context was full): their log q(⊤ | s_n) at their own
    /// length n is replaced by 0, with no gradient into the replaced entry.
    pub fn with_forced_ends(mut self, forced: &[bool]) -> Result<Self, ObjectiveError> {
        let b = self.batch_size();
        if forced.len() != b {
            return Err(ObjectiveError::Shape {
                input: "forced",
                expected: vec![b],
                got: vec![forced.len()],
            });
        }
        if !forced.iter().any(|&f| f) {
            return Ok(self);
        }
        let t = self.steps();
        let mut mask = vec![false; b * (t + 1)];
        for (i, (&n, &f)) in self.lengths.iter().zip(forced).enumerate() {
            mask[i * (t + 1) + n] = f;
        }
        let mask = bool_tensor(mask, [b, t + 1], &self.device());
        self.log_pterm = self.log_pterm.mask_fill(mask, 0.0);
        Ok(self)
    }

    /// Number of trajectories B.
    pub fn batch_size(&self) -> usize {
        self.lengths.len()
    }

    /// Number of step columns T (the longest length the batch can hold).
    pub fn steps(&self) -> usize {
        self.log_pf.dims()[1]
    }

    /// Number of non-terminal tokens of each trajectory.
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// `[B, T]` log q(z_{k+1} | s_k).
    pub fn log_pf(&self) -> &Tensor<2> {
        &self.log_pf
    }

    /// `[B, T+1]` log q(⊤ | s_k).
    pub fn log_pterm(&self) -> &Tensor<2> {
        &self.log_pterm
    }

    /// `[B, T+1]` log R(s_k ⊤).
    pub fn log_r(&self) -> &Tensor<2> {
        &self.log_r
    }

    /// The device the tensors live on.
    pub fn device(&self) -> Device {
        self.log_pf.device()
    }

    /// Host mask `[B, cols]`: `true` where `pred(k, n_b)` holds.
    pub(crate) fn host_mask(&self, cols: usize, pred: impl Fn(usize, usize) -> bool) -> Vec<bool> {
        let mut out = Vec::with_capacity(self.batch_size() * cols);
        for &n in &self.lengths {
            out.extend((0..cols).map(|k| pred(k, n)));
        }
        out
    }
}

pub(crate) fn bool_tensor<const D: usize>(
    values: Vec<bool>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D, Bool> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

pub(crate) fn float_tensor<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}
