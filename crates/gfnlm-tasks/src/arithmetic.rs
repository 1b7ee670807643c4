//! Arithmetic with a calculator tool (paper §4.4): a chain of thought Z between a question X
//! (`"Question: 3 + 5 - 2 = ? Answer:"`) and its answer Y (`". The answer is 6."`), sampled
//! ∝ p_base(Z Y | few-shot prompt, X).
//!
//! - Data: the paper's files in `datasets/arithmetic/` — 10 labelled training queries (weight 1)
//!   and the "homework" queries (weight 0.2; examples are drawn ∝ weight), test files with 3, 4
//!   and 5 operands.
//! - Reward: log R(s) = log p_base(s Y | P, X) for every state s (tool tokens included), where P
//!   is a few-shot prompt of `num_points` worked examples; rationale positions get
//!   `reward_alpha` on disallowed tokens, Y is scored plainly; states with fewer than `min_len`
//!   tokens get `short_log_reward`.
//! - Actions: number/operator/space/punctuation tokens only ([`allowed_token_ids`]) and EOS (⊤).
//! - Tool: [`Calculator`] after every token that ends in "=".

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use gfnlm_models::LanguageModel;
use gfnlm_models::decode::{Behaviour, sample_trajectories};
use gfnlm_tokenizer::Tokenizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::calculator::Calculator;
use crate::{
    Constraint, EvalContext, Evaluation, Example, Registration, RewardContext, Split, Task,
    TaskError, TaskInputs, Tool, Trajectory,
};

/// Characters a rationale token may consist of (the reference's `'▁Ġ,.1234567890=+-'`).
pub const RATIONALE_CHARS: &str = " ,.0123456789=+-";

/// The `[task]` keys of arithmetic (all optional; paths relative to the data folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArithmeticSettings {
    /// Labelled training queries with tool-style rationales.
    pub train: String,
    /// Unlabelled "homework" queries.
    pub homework: String,
    /// The test file of `--split test` / `validation`.
    pub test: String,
    /// Worked examples (full rationales) of the reward's few-shot prompt.
    pub few_shot: String,
    /// Worked examples in the few-shot prompt.
    pub num_points: usize,
    /// Labelled training queries used.
    pub num_train: usize,
    /// Homework queries used.
    pub num_homework: usize,
    /// Sampling weight of a homework query (labelled ones weigh 1).
    pub homework_weight: f64,
    /// Test queries evaluated.
    pub num_test: usize,
    /// Fewest rationale tokens (tool tokens included) before ⊤ is allowed / rewarded.
    pub min_len: usize,
    /// Most actions while training. The reference's 18 counts GPT-J tokens (" 6" is one);
    /// SmolLM2 splits digits, so a 4-operand rationale is 20–22 actions here: 26.
    pub max_len: usize,
    /// Most actions at evaluation (the reference's 22 for GPT-J; a 5-operand rationale is
    /// 26–29 SmolLM2 tokens: 34).
    pub max_eval_len: usize,
    /// Logit offset of disallowed tokens in the policy.
    pub policy_alpha: f32,
    /// Logit offset of disallowed tokens at rationale positions of the reward.
    pub reward_alpha: f32,
    /// log R of a state shorter than `min_len`.
    pub short_log_reward: f64,
    /// Use the calculator tool.
    pub use_tool: bool,
    /// The calculator combines only the last k operands (the reference's `limit_capability`).
    pub limit_capability: Option<usize>,
    /// Samples per query for the majority vote.
    pub eval_samples: usize,
    /// Sampling temperature of the evaluation.
    pub eval_temperature: f64,
    /// Evaluate with the few-shot prompt before each query (the base model's CoT baseline).
    pub eval_few_shot: bool,
}

impl Default for ArithmeticSettings {
    fn default() -> Self {
        Self {
            train: "arithmetic/with_tool/1digit_34_op+-_train_50.json".into(),
            homework: "arithmetic/with_tool/1digit_34_op+-_hw.json".into(),
            test: "arithmetic/with_tool/1digit_3_op+-_test.json".into(),
            few_shot: "arithmetic/1digit_34_op+-_train_50.json".into(),
            num_points: 3,
            num_train: 10,
            num_homework: 10_000,
            homework_weight: 0.2,
            num_test: 100,
            min_len: 5,
            max_len: 26,
            max_eval_len: 34,
            policy_alpha: -99.0,
            reward_alpha: -50.0,
            short_log_reward: -99.0,
            use_tool: true,
            limit_capability: Some(2),
            eval_samples: 10,
            eval_temperature: 0.1,
            eval_few_shot: false,
        }
    }
}

impl ArithmeticSettings {
    fn validate(&self) -> Result<(), TaskError> {
        let bad = |m: String| Err(TaskError::Config(format!("task 'arithmetic': {m}")));
        if self.max_len == 0 || self.min_len > self.max_len || self.max_eval_len == 0 {
            return bad(format!(
                "need 0 ≤ min_len ≤ max_len, max_len ≥ 1 and max_eval_len ≥ 1 (got {}, {}, {})",
                self.min_len, self.max_len, self.max_eval_len
            ));
        }
        if self.max_len > 256 || self.max_eval_len > 256 {
            return bad("max_len and max_eval_len must be ≤ 256".into());
        }
        if self.num_train == 0 && self.num_homework == 0 {
            return bad("num_train and num_homework are both 0: no training queries".into());
        }
        if !(self.homework_weight >= 0.0 && self.homework_weight.is_finite()) {
            return bad(format!(
                "homework_weight must be ≥ 0, got {}",
                self.homework_weight
            ));
        }
        if self.eval_samples == 0 || self.eval_samples > 1000 {
            return bad(format!(
                "eval_samples must be in 1..=1000, got {}",
                self.eval_samples
            ));
        }
        if !(self.eval_temperature > 0.0 && self.eval_temperature.is_finite()) {
            return bad(format!(
                "eval_temperature must be positive, got {}",
                self.eval_temperature
            ));
        }
        for (k, v) in [
            ("policy_alpha", self.policy_alpha as f64),
            ("reward_alpha", self.reward_alpha as f64),
            ("short_log_reward", self.short_log_reward),
        ] {
            if !v.is_finite() {
                return bad(format!("{k} must be a finite number, got {v}"));
            }
        }
        if self.limit_capability == Some(0) {
            return bad("limit_capability must be ≥ 1 when given".into());
        }
        Ok(())
    }
}

/// arithmetic in the registry.
pub const REGISTRATION: Registration = Registration {
    name: "arithmetic",
    about: "chain-of-thought arithmetic with a calculator tool, Z ∝ p(Z Y | few-shot, X) (paper §4.4)",
    check: |section| section.parse::<ArithmeticSettings>()?.validate(),
    build: |section, inputs: &TaskInputs<'_>| {
        let s: ArithmeticSettings = section.parse()?;
        s.validate()?;
        Ok(Box::new(ArithmeticTask::new(
            inputs.tokenizer,
            inputs.data_dir,
            s,
        )?))
    },
};

/// One record of the dataset's JSON files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// `"Question: 6 - 0 - 4 - 8 = ? Answer:"`.
    pub str_query: String,
    /// The answer.
    pub num_sol: i64,
    /// A worked rationale (training files).
    #[serde(default)]
    pub str_rationale: Option<String>,
    /// `". The answer is -6."` (training and homework files).
    #[serde(default)]
    pub str_sol: Option<String>,
}

impl Problem {
    /// Y: the answer suffix (built from `num_sol` when the file has none).
    pub fn solution_text(&self) -> String {
        self.str_sol
            .clone()
            .unwrap_or_else(|| format!(". The answer is {}.", self.num_sol))
    }
}

/// Reads a problem file (one JSON array), the first `limit` records.
pub fn read_problems(path: &Path, limit: usize) -> Result<Vec<Problem>, TaskError> {
    let err = |message: String| TaskError::Data {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "{e}: the arithmetic data is missing (the repository ships datasets/arithmetic/; pass --data-dir or set the [task] path)"
        ))
    })?;
    let mut v: Vec<Problem> = serde_json::from_str(&text).map_err(|e| {
        err(format!(
            "{e}: expected a JSON array of {{\"str_query\", \"num_sol\", …}} objects"
        ))
    })?;
    v.truncate(limit);
    Ok(v)
}

/// The integer an answer text ends with, as the reference reads it: after the last "=", else
/// the last word (trailing "." stripped); `None` if neither is an integer.
pub fn extract_answer(text: &str) -> Option<i64> {
    let after_eq = text.rsplit('=').next().unwrap_or("");
    let clean = |s: &str| s.trim().trim_matches('.').trim().to_string();
    clean(after_eq).parse().ok().or_else(|| {
        text.split_whitespace()
            .last()
            .and_then(|w| clean(w).parse().ok())
    })
}

/// The majority of `answers` (ties: the first reached), `None` if none parsed.
pub fn majority(answers: &[Option<i64>]) -> Option<i64> {
    let mut counts: Vec<(i64, usize)> = Vec::new();
    for a in answers.iter().flatten() {
        match counts.iter_mut().find(|(v, _)| v == a) {
            Some(c) => c.1 += 1,
            None => counts.push((*a, 1)),
        }
    }
    let best = counts.iter().map(|c| c.1).max()?;
    counts.iter().find(|c| c.1 == best).map(|c| c.0)
}

/// Token ids whose text is made only of [`RATIONALE_CHARS`] (and is not empty).
pub fn allowed_token_ids(tokenizer: &Tokenizer) -> Vec<u32> {
    (0..tokenizer.vocab_size() as u32)
        .filter(|&id| {
            tokenizer
                .decode(&[id])
                .map(|t| !t.is_empty() && t.chars().all(|c| RATIONALE_CHARS.contains(c)))
                .unwrap_or(false)
        })
        .collect()
}

/// The arithmetic task over one tokenizer.
#[derive(Debug, Clone)]
pub struct ArithmeticTask {
    /// The task's settings.
    pub settings: ArithmeticSettings,
    /// EOS (⊤).
    pub eos: u32,
    /// Allowed actions (sorted), ⊤ included.
    pub allowed: Vec<u32>,
    /// Tokens of the few-shot prompt P.
    pub few_shot: Vec<u32>,
    calculator: Calculator,
    tokenizer: Tokenizer,
    train: Vec<Example>,
    test: Vec<Example>,
    answers: HashMap<String, i64>,
}

impl ArithmeticTask {
    /// Reads the data, builds the few-shot prompt, the vocabulary and the calculator.
    pub fn new(
        tokenizer: &Tokenizer,
        data_dir: &Path,
        settings: ArithmeticSettings,
    ) -> Result<Self, TaskError> {
        let path = |p: &str| -> PathBuf {
            if Path::new(p).is_absolute() {
                PathBuf::from(p)
            } else {
                data_dir.join(p)
            }
        };
        let eos = tokenizer.eos_id().ok_or_else(|| {
            TaskError::Tokenizer("the tokenizer has no EOS token to end a rationale".into())
        })?;
        let shots = read_problems(&path(&settings.few_shot), settings.num_points)?;
        let mut prompt_text = String::new();
        for p in &shots {
            let rationale = p.str_rationale.as_deref().ok_or_else(|| TaskError::Data {
                path: path(&settings.few_shot),
                message: "few-shot examples need \"str_rationale\"".into(),
            })?;
            prompt_text.push_str(&format!(
                "{} {}{}\n",
                p.str_query,
                rationale,
                p.solution_text()
            ));
        }
        let encode = |t: &str| {
            tokenizer
                .encode(t, false)
                .map_err(|e| TaskError::Tokenizer(format!("tokenizing {t:?}: {e}")))
        };
        let few_shot = encode(&prompt_text)?;
        let mut answers = HashMap::new();
        let mut to_example =
            |kind: &str, i: usize, p: &Problem, weight: f64| -> Result<Example, TaskError> {
                let id = format!("{kind}-{i}");
                answers.insert(id.clone(), p.num_sol);
                let mut ex = Example::prompt_only(id, encode(&p.str_query)?);
                ex.target = Some(encode(&p.solution_text())?);
                ex.weight = weight;
                ex.demonstration = p
                    .str_rationale
                    .as_deref()
                    .map(|r| encode(&format!(" {r}")))
                    .transpose()?;
                Ok(ex)
            };
        let mut train = Vec::new();
        for (i, p) in read_problems(&path(&settings.train), settings.num_train)?
            .iter()
            .enumerate()
        {
            train.push(to_example("train", i, p, 1.0)?);
        }
        if settings.num_homework > 0 && settings.homework_weight > 0.0 {
            for (i, p) in read_problems(&path(&settings.homework), settings.num_homework)?
                .iter()
                .enumerate()
            {
                let mut ex = to_example("hw", i, p, settings.homework_weight)?;
                ex.demonstration = None;
                train.push(ex);
            }
        }
        let mut test = Vec::new();
        for (i, p) in read_problems(&path(&settings.test), settings.num_test)?
            .iter()
            .enumerate()
        {
            test.push(to_example("test", i, p, 1.0)?);
        }
        let mut allowed = allowed_token_ids(tokenizer);
        allowed.push(eos);
        allowed.sort_unstable();
        allowed.dedup();
        Ok(Self {
            calculator: Calculator::new(tokenizer, settings.limit_capability),
            settings,
            eos,
            allowed,
            few_shot,
            tokenizer: tokenizer.clone(),
            train,
            test,
            answers,
        })
    }

    /// The answer of an example built by this task.
    pub fn answer(&self, example: &Example) -> Option<i64> {
        self.answers.get(&example.id).copied()
    }

    /// The reward's context: the few-shot prompt followed by the query.
    pub fn reward_context(&self, example: &Example) -> Vec<u32> {
        let mut c = self.few_shot.clone();
        c.extend(&example.prompt);
        c
    }

    fn reward_offsets(&self, vocab: usize) -> Vec<f32> {
        let mut v = vec![self.settings.reward_alpha; vocab];
        for &t in &self.allowed {
            if (t as usize) < vocab {
                v[t as usize] = 0.0;
            }
        }
        v
    }

    /// log R of every state of every trajectory (see the module doc), untempered.
    pub fn rewards(
        &self,
        base: &dyn LanguageModel,
        example: &Example,
        trajectories: &[Trajectory],
        device: &Device,
    ) -> Vec<Vec<f64>> {
        if trajectories.is_empty() {
            return Vec::new();
        }
        let context = self.reward_context(example);
        let y = example.target.clone().unwrap_or_default();
        // Rationale tokens (tool tokens included) under the constrained base model, then Y.
        let offsets = self.reward_offsets(base.vocab_size());
        crate::state_then_suffix_log_rewards(
            base,
            &context,
            trajectories,
            &y,
            Some(&offsets),
            self.settings.min_len,
            self.settings.short_log_reward,
            false,
            device,
        )
    }

    /// The query and rationale as text (tool outputs included).
    pub fn text(&self, example: &Example, tokens: &[u32]) -> String {
        let mut all = example.prompt.clone();
        all.extend(tokens);
        self.tokenizer.decode(&all).unwrap_or_default()
    }

    /// Examples of any file in the dataset's format (e.g. an unseen test set).
    pub fn examples_from_file(&self, path: &Path) -> Result<Vec<(Example, i64)>, TaskError> {
        read_problems(path, usize::MAX)?
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let prompt = self
                    .tokenizer
                    .encode(&p.str_query, false)
                    .map_err(|e| TaskError::Tokenizer(format!("record {i}: {e}")))?;
                Ok((Example::prompt_only(format!("file-{i}"), prompt), p.num_sol))
            })
            .collect()
    }

    /// The training constraint with no minimum length and `max_eval_len` actions (the
    /// reference's evaluation).
    fn eval_constraint(&self, example: &Example) -> Constraint {
        Constraint {
            min_len: 0,
            max_len: self.settings.max_eval_len,
            ..self.constraint(example)
        }
    }
}

impl Task for ArithmeticTask {
    fn name(&self) -> &str {
        "arithmetic"
    }

    fn examples(&self, split: Split) -> &[Example] {
        match split {
            Split::Train => &self.train,
            Split::Validation | Split::Test => &self.test,
        }
    }

    fn constraint(&self, _example: &Example) -> Constraint {
        Constraint {
            termination: self.eos,
            allowed: Some(self.allowed.clone()),
            vocab_alpha: self.settings.policy_alpha,
            min_len: self.settings.min_len,
            max_len: self.settings.max_len,
        }
    }

    fn log_rewards(
        &self,
        example: &Example,
        trajectories: &[Trajectory],
        ctx: &RewardContext<'_>,
    ) -> Vec<Vec<f64>> {
        self.rewards(ctx.base, example, trajectories, ctx.device)
    }

    fn tool(&self) -> Option<&dyn Tool> {
        self.settings
            .use_tool
            .then_some(&self.calculator as &dyn Tool)
    }

    fn is_valid(&self, example: &Example, trajectory: &Trajectory, _terminal: f64) -> bool {
        self.answer(example).is_some()
            && extract_answer(&self.text(example, &trajectory.tokens)) == self.answer(example)
    }

    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Evaluation, TaskError> {
        let t0 = Instant::now();
        let problems: Vec<(Example, i64)> = match ctx.data {
            Some(path) => self.examples_from_file(path)?,
            None => self
                .examples(ctx.split)
                .iter()
                .map(|e| (e.clone(), self.answer(e).unwrap_or(i64::MIN)))
                .collect(),
        };
        let n = ctx.samples.unwrap_or(self.settings.eval_samples).max(1);
        let behaviour = Behaviour {
            temperature: self.settings.eval_temperature,
            epsilon: 0.0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
        let (mut correct, mut sample_correct, mut samples, mut tool_calls) = (0, 0, 0, 0usize);
        let mut lens = 0usize;
        let mut shown = Vec::new();
        for (ex, answer) in &problems {
            let prompt = if self.settings.eval_few_shot {
                self.reward_context(ex)
            } else {
                ex.prompt.clone()
            };
            let trajs = sample_trajectories(
                ctx.model,
                &prompt,
                n,
                &self.eval_constraint(ex),
                behaviour,
                self.tool(),
                &mut rng,
                ctx.device,
            );
            let texts: Vec<String> = trajs.iter().map(|t| self.text(ex, &t.tokens)).collect();
            let got: Vec<Option<i64>> = texts.iter().map(|t| extract_answer(t)).collect();
            sample_correct += got.iter().filter(|g| **g == Some(*answer)).count();
            samples += got.len();
            lens += trajs.iter().map(Trajectory::num_actions).sum::<usize>();
            tool_calls += trajs.iter().map(Trajectory::tool_calls).sum::<usize>();
            let vote = majority(&got);
            correct += (vote == Some(*answer)) as usize;
            if shown.len() < 5 {
                shown.push(serde_json::json!({
                    "query": self.tokenizer.decode(&ex.prompt).unwrap_or_default(),
                    "answer": answer,
                    "vote": vote,
                    "sample": texts.first().cloned().unwrap_or_default(),
                }));
            }
        }
        let q = problems.len().max(1) as f64;
        let accuracy = correct as f64 / q;
        let metrics = serde_json::json!({
            "queries": problems.len(),
            "samples_per_query": n,
            "accuracy": accuracy,
            "sample_accuracy": sample_correct as f64 / samples.max(1) as f64,
            "mean_actions": lens as f64 / samples.max(1) as f64,
            "tool_calls_per_sample": tool_calls as f64 / samples.max(1) as f64,
            "few_shot": self.settings.eval_few_shot,
            "tool": self.settings.use_tool,
            "seconds": t0.elapsed().as_secs_f64(),
            "examples": shown,
        });
        let summary = vec![format!(
            "[arithmetic]: {} queries, majority of {n} at T = {}: accuracy {:.1} % (per sample {:.1} %), {:.1} actions, {:.2} tool calls per sample{}",
            problems.len(),
            self.settings.eval_temperature,
            100.0 * accuracy,
            100.0 * sample_correct as f64 / samples.max(1) as f64,
            lens as f64 / samples.max(1) as f64,
            tool_calls as f64 / samples.max(1) as f64,
            if self.settings.eval_few_shot {
                ", few-shot prompt"
            } else {
                ""
            }
        )];
        let markdown = format!(
            "| queries | samples per query | accuracy (majority) | per-sample accuracy | tool calls per sample |\n|---|---|---|---|---|\n| {} | {n} | {:.1} % | {:.1} % | {:.2} |\n",
            problems.len(),
            100.0 * accuracy,
            100.0 * sample_correct as f64 / samples.max(1) as f64,
            tool_calls as f64 / samples.max(1) as f64
        );
        Ok(Evaluation {
            metrics,
            summary,
            markdown,
        })
    }

    fn step_metrics(
        &self,
        example: &Example,
        trajectories: &[Trajectory],
        _log_rewards: &[Vec<f64>],
        _ctx: &RewardContext<'_>,
    ) -> BTreeMap<String, f64> {
        let calls: usize = trajectories.iter().map(Trajectory::tool_calls).sum();
        let correct = trajectories
            .iter()
            .filter(|t| self.is_valid(example, t, 0.0))
            .count();
        let n = trajectories.len().max(1) as f64;
        BTreeMap::from([
            ("tool_calls".to_string(), calls as f64 / n),
            ("correct".to_string(), correct as f64 / n),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_like_the_reference() {
        assert_eq!(
            extract_answer("Question: 6 - 0 = ? Answer: 6 - 0 = 6"),
            Some(6)
        );
        assert_eq!(extract_answer("Q: 1 = ? Answer: 2 - 8 = -6."), Some(-6));
        assert_eq!(
            extract_answer("Question: 1 + 1 = ? Answer: it is 2."),
            Some(2)
        );
        assert_eq!(extract_answer("Question: 1 + 1 = ? Answer: two"), None);
        assert_eq!(majority(&[Some(3), Some(5), Some(5), None]), Some(5));
        assert_eq!(
            majority(&[Some(3), Some(5)]),
            Some(3),
            "ties: the first reached"
        );
        assert_eq!(majority(&[None, None]), None);
    }
}
