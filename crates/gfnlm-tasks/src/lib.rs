//! Tasks for GFlowNet fine-tuning behind one [`Task`] trait (design §4): what is sampled (the
//! examples of each split), which tokens are allowed and when a sequence ends (the
//! [`Constraint`]), the reward of terminating at every prefix (given the *base* model: the
//! policy with its adapters off), an optional [`Tool`] that extends the state after an action,
//! and the task's evaluation.
//!
//! The trainer and the CLI know tasks only through this trait and the registry
//! ([`from_config`]): adding a task is one file plus one line in [`REGISTRY`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use gfnlm_models::LanguageModel;
use gfnlm_tokenizer::Tokenizer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod arithmetic;
pub mod calculator;
pub mod infilling;
pub mod next_sentence;
pub mod rng;
pub mod subjectivity;
pub mod text_metrics;

pub use gfnlm_models::decode::{Behaviour, Constraint, Tool, Trajectory};
pub use gfnlm_models::search::DecodeMethod;
pub use next_sentence::{NextSentenceSettings, NextSentenceTask};
pub use rng::{RngEvaluation, RngMetrics, RngTask};

/// One input of a task: the prompt X, an optional target Y, and its weight in training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// A stable identifier (line number, record id, …); replay buffers and log Z are keyed by
    /// the prompt tokens, not by this.
    pub id: String,
    /// Prompt token ids (no BOS).
    pub prompt: Vec<u32>,
    /// Target Y (an answer, a label, an ending), when the task has one.
    pub target: Option<Vec<u32>>,
    /// Sampling weight: training examples are drawn with probability ∝ weight (e.g. 0.2 for
    /// unlabelled "homework" queries against 1 for labelled ones).
    pub weight: f64,
    /// A known good Z for this prompt (e.g. a worked rationale), for supervised updates and
    /// for seeding replay buffers; `None` when the data has none.
    #[serde(default)]
    pub demonstration: Option<Vec<u32>>,
}

impl Example {
    /// An example with a prompt only, weight 1.
    pub fn prompt_only(id: impl Into<String>, prompt: Vec<u32>) -> Self {
        Self {
            id: id.into(),
            prompt,
            target: None,
            weight: 1.0,
            demonstration: None,
        }
    }
}

/// Which part of a task's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training examples.
    Train,
    /// Held-out examples for model selection.
    Validation,
    /// Final evaluation.
    Test,
}

/// What a reward may use besides the trajectories.
pub struct RewardContext<'a> {
    /// The base model: the policy's weights with the adapters off, no gradients.
    pub base: &'a dyn LanguageModel,
    /// Where `base` lives.
    pub device: &'a Device,
}

/// What an evaluation may use.
pub struct EvalContext<'a> {
    /// The model under evaluation (a no-grad model; adapters as loaded).
    pub model: &'a dyn LanguageModel,
    /// The base model for rewards: `model`'s weights with the adapters off.
    pub base: &'a dyn LanguageModel,
    /// Where `model` lives.
    pub device: &'a Device,
    /// Samples to draw where the evaluation samples (`None`: the task's default).
    pub samples: Option<usize>,
    /// A data file in the task's format to evaluate on instead of `split` (e.g. a prompt file).
    pub data: Option<&'a Path>,
    /// How a generating task decodes (`None`: sampling from the model under the task's
    /// constraint, the way the trained sampler runs).
    pub method: Option<&'a DecodeMethod>,
    /// Seed of every random draw of the evaluation.
    pub seed: u64,
    /// The split to evaluate on.
    pub split: Split,
}

/// An evaluation's results: machine-readable metrics, a few lines for the terminal, a markdown
/// table for a report.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Metrics as JSON (written by `gfnlm eval --json`).
    pub metrics: serde_json::Value,
    /// One line per result, for the terminal.
    pub summary: Vec<String>,
    /// A markdown table of the results.
    pub markdown: String,
}

/// A GFlowNet fine-tuning task.
pub trait Task: Send + Sync {
    /// The registry name (`[task] name = "…"`).
    fn name(&self) -> &str;
    /// The examples of a split (a task with one prompt returns it for every split).
    fn examples(&self, split: Split) -> &[Example];
    /// Allowed tokens, ⊤ and length limits of an example, used by the sampler and the loss.
    fn constraint(&self, example: &Example) -> Constraint;
    /// Untempered log R of terminating at every state k = 0..=num_actions of each trajectory
    /// (`trajectory.state_ends()` gives each state's tokens when a tool inserted some).
    fn log_rewards(
        &self,
        example: &Example,
        trajectories: &[Trajectory],
        ctx: &RewardContext<'_>,
    ) -> Vec<Vec<f64>>;
    /// The tool that inserts tokens after actions, if the task has one.
    fn tool(&self) -> Option<&dyn Tool> {
        None
    }
    /// Extra per-micro-batch metrics for the training log (e.g. the unpenalised likelihood
    /// beside the penalised reward), averaged over an optimizer step's micro-batches.
    fn step_metrics(
        &self,
        _example: &Example,
        _trajectories: &[Trajectory],
        _log_rewards: &[Vec<f64>],
        _ctx: &RewardContext<'_>,
    ) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
    /// Whether a finished trajectory counts as a valid answer (the `valid_frac` metric).
    fn is_valid(
        &self,
        _example: &Example,
        _trajectory: &Trajectory,
        terminal_log_reward: f64,
    ) -> bool {
        terminal_log_reward > f64::NEG_INFINITY
    }
    /// Evaluates a model on the task.
    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Evaluation, TaskError>;
}

/// Errors building or running a task.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The `[task]` section is wrong; the message names the key.
    #[error("[task] {0}")]
    Config(String),
    /// The tokenizer lacks something the task needs.
    #[error("{0}")]
    Tokenizer(String),
    /// An evaluation part (e.g. the sentence encoder) could not be loaded.
    #[error("{0}")]
    Eval(String),
    /// A data file is missing or malformed.
    #[error("{path}: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong, and the fix.
        message: String,
    },
}

/// The `[task]` section of a training config: the task's name and its own keys, which the task
/// validates (unknown keys are errors naming the key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSection {
    /// Registry name.
    pub name: String,
    /// Every other key of the section.
    #[serde(flatten)]
    pub settings: BTreeMap<String, serde_json::Value>,
}

impl Default for TaskSection {
    fn default() -> Self {
        Self::named("rng")
    }
}

impl TaskSection {
    /// A section with the task's defaults.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            settings: BTreeMap::new(),
        }
    }

    /// The task's own keys parsed into its settings type (`deny_unknown_fields` + `default`).
    ///
    /// The keys are held as JSON, which has no NaN or infinity: a TOML `nan`/`inf` arrives as
    /// null (TOML itself has no null) and is refused here, naming the key.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        fn null_at(v: &serde_json::Value) -> Option<String> {
            match v {
                serde_json::Value::Null => Some(String::new()),
                serde_json::Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .find_map(|(i, x)| null_at(x).map(|p| format!("[{i}]{p}"))),
                serde_json::Value::Object(o) => o
                    .iter()
                    .find_map(|(k, x)| null_at(x).map(|p| format!(".{k}{p}"))),
                _ => None,
            }
        }
        for (k, v) in &self.settings {
            if let Some(p) = null_at(v) {
                return Err(TaskError::Config(format!(
                    "task '{}': {k}{p} must be a finite number (nan and inf are not allowed)",
                    self.name
                )));
            }
        }
        let map: serde_json::Map<String, serde_json::Value> = self
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| TaskError::Config(format!("task '{}': {e}", self.name)))
    }
}

/// What building a task may read.
pub struct TaskInputs<'a> {
    /// The model's tokenizer.
    pub tokenizer: &'a Tokenizer,
    /// Folder of the datasets (`datasets/` of the repository by default).
    pub data_dir: &'a Path,
}

/// Builds a task from its `[task]` section.
pub type BuildTask = fn(&TaskSection, &TaskInputs<'_>) -> Result<Box<dyn Task>, TaskError>;

/// One registered task: its name, a check of its settings (no files read), and its builder.
pub struct Registration {
    /// `[task] name`.
    pub name: &'static str,
    /// One line for `--help` and error messages.
    pub about: &'static str,
    /// Validates the section's keys and values.
    pub check: fn(&TaskSection) -> Result<(), TaskError>,
    /// Builds the task.
    pub build: BuildTask,
}

/// Every task gfnlm knows.
pub const REGISTRY: &[Registration] = &[
    arithmetic::REGISTRATION,
    infilling::REGISTRATION,
    next_sentence::REGISTRATION,
    rng::REGISTRATION,
    subjectivity::REGISTRATION,
];

/// The registered names, comma-separated (for messages).
pub fn task_names() -> String {
    REGISTRY
        .iter()
        .map(|r| r.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn registration(name: &str) -> Result<&'static Registration, TaskError> {
    REGISTRY.iter().find(|r| r.name == name).ok_or_else(|| {
        TaskError::Config(format!(
            "unknown task '{name}' (available: {})",
            task_names()
        ))
    })
}

/// Validates a `[task]` section without building the task.
pub fn check_config(section: &TaskSection) -> Result<(), TaskError> {
    (registration(&section.name)?.check)(section)
}

/// Checks that every example's prompt plus the task's longest continuation (its constraint's
/// `max_len`) fits a model of `max_positions` positions: called before training and before
/// every evaluation decodes, so a long prompt or a large `max_len` is an error, never a panic
/// (GPT-2) or a run far past the context the model was trained for (Llama, GPT-J).
pub fn check_context(
    task: &dyn Task,
    examples: &[Example],
    max_positions: usize,
) -> Result<(), TaskError> {
    for ex in examples {
        let max_len = task.constraint(ex).max_len;
        gfnlm_models::check_context(
            ex.prompt.len(),
            max_len,
            max_positions,
            "[task] max_len (the longest continuation)",
        )
        .map_err(|e| {
            TaskError::Config(format!("task '{}', example '{}': {e}", task.name(), ex.id))
        })?;
    }
    Ok(())
}

/// log R(s) = log p(s Y | context) for every state s of each trajectory with at least `min_len`
/// tokens (the state's tokens under `token_offsets`, Y without), `short` for shorter states:
/// the reward of arithmetic and infilling, from one pass over the trajectories and one short
/// pass of Y per distinct state length ([`gfnlm_models::generate::score_suffix_after_prefixes`]).
/// With `terminal_only`, only each trajectory's last state is scored (evaluation reads no
/// other), the others get `short`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn state_then_suffix_log_rewards(
    base: &dyn LanguageModel,
    context: &[u32],
    trajectories: &[Trajectory],
    suffix: &[u32],
    token_offsets: Option<&[f32]>,
    min_len: usize,
    short: f64,
    terminal_only: bool,
    device: &Device,
) -> Vec<Vec<f64>> {
    let seqs: Vec<Vec<u32>> = trajectories.iter().map(|t| t.tokens.clone()).collect();
    let ends: Vec<Vec<usize>> = trajectories.iter().map(Trajectory::state_ends).collect();
    let scored: Vec<Vec<usize>> = ends
        .iter()
        .map(|e| {
            let from = if terminal_only { e.len() - 1 } else { 0 };
            e[from..]
                .iter()
                .copied()
                .filter(|&k| k >= min_len)
                .collect()
        })
        .collect();
    let scores = gfnlm_models::generate::score_suffix_after_prefixes(
        base,
        context,
        &seqs,
        &scored,
        suffix,
        token_offsets,
        device,
    );
    ends.iter()
        .enumerate()
        .map(|(i, e)| {
            let prefix: Vec<f64> = std::iter::once(0.0)
                .chain(scores.tokens[i].iter().scan(0.0, |acc, &x| {
                    *acc += x as f64;
                    Some(*acc)
                }))
                .collect();
            let mut ys = scored[i].iter().zip(&scores.suffix[i]);
            let mut next = ys.next();
            e.iter()
                .map(|&end| match next {
                    Some((&at, &ly)) if at == end => {
                        next = ys.next();
                        prefix[end] + ly
                    }
                    _ => short,
                })
                .collect()
        })
        .collect()
}

/// Builds the task a `[task]` section names.
pub fn from_config(
    section: &TaskSection,
    inputs: &TaskInputs<'_>,
) -> Result<Box<dyn Task>, TaskError> {
    let r = registration(&section.name)?;
    (r.check)(section)?;
    (r.build)(section, inputs)
}

/// The datasets folder: `$GFNLM_DATA_DIR`, else the repository's `datasets/`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("GFNLM_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_task_and_unknown_key_are_named() {
        let e = check_config(&TaskSection::named("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("rng"), "{e}");
        let mut s = TaskSection::named("rng");
        s.settings
            .insert("invalid_log_rewrd".into(), serde_json::json!(-3.0));
        let e = check_config(&s).unwrap_err().to_string();
        assert!(e.contains("invalid_log_rewrd"), "{e}");
    }
}
