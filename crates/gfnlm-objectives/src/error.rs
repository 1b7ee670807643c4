//! Errors reported by the objectives.

/// Why an objective could not be computed.
///
/// Every degenerate input is reported here instead of producing a silent NaN.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObjectiveError {
    /// The batch holds no trajectory.
    #[error("empty batch: at least one trajectory is needed")]
    EmptyBatch,
    /// The tensors have no step column (T = 0), so there is no transition at all.
    #[error("no steps: log_pf must have at least one column (T >= 1)")]
    NoSteps,
    /// A tensor does not have the shape the layout requires.
    #[error("{input} has shape {got:?}, expected {expected:?}")]
    Shape {
        /// Name of the offending input.
        input: &'static str,
        /// Shape required by the layout.
        expected: Vec<usize>,
        /// Shape received.
        got: Vec<usize>,
    },
    /// A trajectory length exceeds the number of step columns.
    #[error("trajectory {trajectory} has length {length}, but the batch has only {max} steps")]
    LengthOutOfRange {
        /// Index of the trajectory in the batch.
        trajectory: usize,
        /// Its declared number of non-terminal tokens.
        length: usize,
        /// The largest length the tensors can hold (T).
        max: usize,
    },
    /// An entry that the objective uses is NaN or infinite.
    #[error(
        "{input}[{trajectory}, {step}] = {value} is not finite (it lies inside the trajectory)"
    )]
    NonFinite {
        /// Name of the offending input.
        input: &'static str,
        /// Trajectory (row) index.
        trajectory: usize,
        /// Step (column) index.
        step: usize,
        /// The value found there.
        value: f32,
    },
    /// Every trajectory terminated at step 0, so the objective has no term.
    #[error("no transition to train on: every trajectory terminated at step 0 (lengths are all 0)")]
    NoTransitions,
    /// The sub-trajectory weight λ must be finite and non-negative.
    #[error("lambda must be finite and >= 0, got {0}")]
    InvalidLambda(f64),
    /// The objective needs more trajectories than the batch holds.
    #[error("{objective} needs at least {needed} trajectories, got {got}")]
    TooFewTrajectories {
        /// Which objective.
        objective: &'static str,
        /// Minimum batch size.
        needed: usize,
        /// Batch size received.
        got: usize,
    },
    /// A token row of the reference layout is too short.
    #[error(
        "generated row {trajectory} has {got} tokens, expected at least prompt_len + T - 1 = {expected}"
    )]
    TokensTooShort {
        /// Row index.
        trajectory: usize,
        /// Required length.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// A forced-stop length outside the batch's steps.
    #[error("max_len {max_len} exceeds the batch's {steps} steps")]
    MaxLenOutOfRange {
        /// Requested maximum length.
        max_len: usize,
        /// Number of step columns T.
        steps: usize,
    },
    /// Reading a tensor back from the device failed.
    #[error("reading a tensor back from the device failed: {0}")]
    Readback(String),
}
