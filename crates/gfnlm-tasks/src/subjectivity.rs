//! Subjectivity classification with latent rationales (paper §4.3, SUBJ, Pang & Lee 2004).
//!
//! X = `Classify this movie review as objective or subjective: "<text>" This review is`, Z = a
//! rationale of `min_len..=max_len` tokens ended by EOS, Y = `", so it is <label>."`.
//!
//! - **`phase = "e-step"`** (GFlowNet): the policy q(Z | X) is trained toward
//!   log R(s) = log p_base(s Y | X), minus `label_penalty` (50) when the base model, given s,
//!   scores the other label's Y higher — the reference's E-step notebook. Evaluation samples Z
//!   from the policy and classifies with the **base** model: the label whose `Z + Y` is likelier.
//! - **`phase = "m-step"`** (supervised): the model p(Z Y | X) is fine-tuned on rationales the
//!   E-step policy sampled for the training examples (`rationales = "FILE"`, the JSON that
//!   `gfnlm eval --split train` of the E-step adapter writes), each followed by the true Y.
//!   Evaluation samples Z from the tuned model (Z ends where it starts Y, at the ","), and
//!   classifies with the tuned model.
//! - **`phase = "direct"`**: no rationale — the label word right after X (`" objective."`), for
//!   zero-shot (`few_shot = 0`) and few-shot prompting of the base model (`few_shot = k`: the
//!   first k training examples with their labels before X) and supervised fine-tuning on (X, Y).
//!
//! Evaluation on the first `num_test` test sentences: accuracy with a greedy rationale (T = 0.01)
//! and with `eval_samples` sampled rationales (T = `eval_temperature`) and a majority vote (a
//! tie counts as wrong), plus the per-rationale accuracy. On `--split train` it also writes
//! every sampled rationale's token ids (`rationales`), which the M-step reads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use gfnlm_models::LanguageModel;
use gfnlm_models::decode::{Behaviour, sample_trajectories};
use gfnlm_tokenizer::Tokenizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{
    Constraint, EvalContext, Evaluation, Example, Registration, RewardContext, Split, Task,
    TaskError, TaskInputs, Trajectory,
};

/// The two labels, in the data's order (0 = objective, 1 = subjective).
pub const LABELS: [&str; 2] = ["objective", "subjective"];

/// The `[task]` keys of subjectivity (paths relative to the data folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubjectivitySettings {
    /// Training sentences (JSONL: `text`, `label` 0/1), e.g. the paper's 10/20/50-example sets.
    pub train: String,
    /// Test sentences (same format).
    pub test: String,
    /// The first `num_test` test sentences are evaluated.
    pub num_test: usize,
    /// Fewest tokens of a rationale.
    pub min_len: usize,
    /// Most tokens of a rationale.
    pub max_len: usize,
    /// Subtracted from log R when the base model, given the rationale, prefers the wrong label.
    pub label_penalty: f64,
    /// log R of a state shorter than `min_len`.
    pub short_log_reward: f64,
    /// `"e-step"`, `"m-step"` or `"direct"` (see the module doc).
    pub phase: String,
    /// M-step: the E-step's sampled rationales (`gfnlm eval --split train --json FILE`).
    pub rationales: Option<String>,
    /// `phase = "direct"`: labelled training examples shown before X.
    pub few_shot: usize,
    /// Sampled rationales per test sentence for the vote.
    pub eval_samples: usize,
    /// Temperature of the sampled rationales.
    pub eval_temperature: f64,
}

impl Default for SubjectivitySettings {
    fn default() -> Self {
        Self {
            train: "subj/train.10.jsonl".into(),
            test: "subj/test.jsonl".into(),
            num_test: 100,
            min_len: 1,
            max_len: 5,
            label_penalty: 50.0,
            short_log_reward: -99.0,
            phase: "e-step".into(),
            rationales: None,
            few_shot: 0,
            eval_samples: 10,
            eval_temperature: 1.0,
        }
    }
}

impl SubjectivitySettings {
    fn validate(&self) -> Result<(), TaskError> {
        let bad = |m: String| Err(TaskError::Config(format!("task 'subjectivity': {m}")));
        if !["e-step", "m-step", "direct"].contains(&self.phase.as_str()) {
            return bad(format!(
                "phase must be \"e-step\", \"m-step\" or \"direct\", got {:?}",
                self.phase
            ));
        }
        if self.phase == "m-step" && self.rationales.is_none() {
            return bad(
                "phase = \"m-step\" needs rationales = \"FILE\" (the JSON of `gfnlm eval --split train --json FILE` with the E-step adapter)".into(),
            );
        }
        if self.max_len == 0 || self.min_len > self.max_len || self.max_len > 64 {
            return bad(format!(
                "need min_len ≤ max_len and 1 ≤ max_len ≤ 64 (got {}, {})",
                self.min_len, self.max_len
            ));
        }
        if !(self.label_penalty.is_finite() && self.label_penalty >= 0.0) {
            return bad(format!(
                "label_penalty must be finite and ≥ 0, got {}",
                self.label_penalty
            ));
        }
        if !self.short_log_reward.is_finite() {
            return bad(format!(
                "short_log_reward must be finite, got {}",
                self.short_log_reward
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
        if self.few_shot > 64 {
            return bad(format!("few_shot must be ≤ 64, got {}", self.few_shot));
        }
        Ok(())
    }
}

/// subjectivity in the registry.
pub const REGISTRATION: Registration = Registration {
    name: "subjectivity",
    about: "SUBJ classification with a latent rationale Z: E-step GFlowNet q(Z | X) toward p(Z Y | X), M-step SFT, direct prompting (paper §4.3)",
    check: |section| section.parse::<SubjectivitySettings>()?.validate(),
    build: |section, inputs: &TaskInputs<'_>| {
        let s: SubjectivitySettings = section.parse()?;
        Ok(Box::new(SubjectivityTask::new(
            inputs.tokenizer,
            inputs.data_dir,
            s,
        )?))
    },
};

/// One labelled sentence.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Sentence {
    /// The review sentence.
    pub text: String,
    /// 0 = objective, 1 = subjective.
    pub label: usize,
}

/// Reads a SUBJ JSONL file (`text`, `label` ∈ {0, 1} per line; other keys ignored).
pub fn read_sentences(path: &Path) -> Result<Vec<Sentence>, TaskError> {
    let data_err = |message: String| TaskError::Data {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        data_err(format!(
            "{e} (the SUBJ files ship in datasets/subj/; pass another with [task] train/test or --data)"
        ))
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let s: Sentence = serde_json::from_str(line).map_err(|e| {
            data_err(format!(
                "line {}: {e} (expected {{\"text\": …, \"label\": 0 or 1}})",
                i + 1
            ))
        })?;
        if s.label > 1 {
            return Err(data_err(format!(
                "line {}: label {} (0 = objective, 1 = subjective)",
                i + 1,
                s.label
            )));
        }
        out.push(s);
    }
    if out.is_empty() {
        return Err(data_err("no sentences".into()));
    }
    Ok(out)
}

/// Subjectivity classification (see the module doc).
pub struct SubjectivityTask {
    settings: SubjectivitySettings,
    eos: u32,
    tokenizer: Tokenizer,
    train: Vec<Example>,
    test: Vec<Example>,
    /// Label of each example id.
    labels: HashMap<String, usize>,
    /// `", so it is <label>."` per label.
    with_rationale: [Vec<u32>; 2],
    /// `" <label>."` per label.
    direct: [Vec<u32>; 2],
    /// The few-shot prefix (empty unless `few_shot > 0`).
    shots: Vec<u32>,
    /// Where relative paths are resolved.
    data_dir: PathBuf,
}

fn resolve(data_dir: &Path, p: &str) -> PathBuf {
    if Path::new(p).is_absolute() {
        PathBuf::from(p)
    } else {
        data_dir.join(p)
    }
}

/// The classification query of a sentence.
pub fn query(text: &str) -> String {
    format!("Classify this movie review as objective or subjective: \"{text}\" This review is")
}

impl SubjectivityTask {
    /// Reads the sentences (and, for the M-step, the E-step's rationales) and tokenises them.
    pub fn new(
        tokenizer: &Tokenizer,
        data_dir: &Path,
        settings: SubjectivitySettings,
    ) -> Result<Self, TaskError> {
        settings.validate()?;
        let eos = tokenizer.eos_id().ok_or_else(|| {
            TaskError::Tokenizer("the tokenizer has no EOS token to end a rationale".into())
        })?;
        let enc = |t: &str| {
            tokenizer
                .encode(t, false)
                .map_err(|e| TaskError::Tokenizer(format!("tokenizing {t:?}: {e}")))
        };
        let with_rationale = [
            enc(&format!(", so it is {}.", LABELS[0]))?,
            enc(&format!(", so it is {}.", LABELS[1]))?,
        ];
        let direct = [
            enc(&format!(" {}.", LABELS[0]))?,
            enc(&format!(" {}.", LABELS[1]))?,
        ];
        let train_sentences = read_sentences(&resolve(data_dir, &settings.train))?;
        let test_sentences = read_sentences(&resolve(data_dir, &settings.test))?;
        let mut shots = Vec::new();
        if settings.phase == "direct" && settings.few_shot > 0 {
            let text: String = train_sentences
                .iter()
                .take(settings.few_shot)
                .map(|s| format!("{} {}.\n", query(&s.text), LABELS[s.label]))
                .collect();
            shots = enc(&text)?;
        }
        let mut task = Self {
            settings,
            eos,
            tokenizer: tokenizer.clone(),
            train: Vec::new(),
            test: Vec::new(),
            labels: HashMap::new(),
            with_rationale,
            direct,
            shots,
            data_dir: data_dir.to_path_buf(),
        };
        for (i, s) in train_sentences.iter().enumerate() {
            let ex = task.example(&format!("train-{i}"), s)?;
            task.train.push(ex);
        }
        for (i, s) in test_sentences
            .iter()
            .take(task.settings.num_test)
            .enumerate()
        {
            let ex = task.example(&format!("test-{i}"), s)?;
            task.test.push(ex);
        }
        if task.settings.phase == "m-step" {
            task.train = task.m_step_examples(data_dir)?;
        }
        Ok(task)
    }

    /// The example of a sentence: prompt X (after the few-shot prefix), target Y of its label,
    /// and for `phase = "direct"` the label word as the demonstration.
    fn example(&mut self, id: &str, s: &Sentence) -> Result<Example, TaskError> {
        let mut prompt = self.shots.clone();
        prompt.extend(
            self.tokenizer
                .encode(&query(&s.text), false)
                .map_err(|e| TaskError::Tokenizer(format!("tokenizing a query: {e}")))?,
        );
        let mut ex = Example::prompt_only(id, prompt);
        ex.target = Some(self.with_rationale[s.label].clone());
        if self.settings.phase == "direct" {
            ex.demonstration = Some(self.direct[s.label].clone());
        }
        self.labels.insert(id.to_string(), s.label);
        Ok(ex)
    }

    /// M-step training examples: one per E-step rationale of each training sentence, its
    /// demonstration the rationale followed by the true Y.
    fn m_step_examples(&mut self, data_dir: &Path) -> Result<Vec<Example>, TaskError> {
        let path = resolve(
            data_dir,
            self.settings.rationales.as_deref().unwrap_or_default(),
        );
        let data_err = |message: String| TaskError::Data {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            data_err(format!(
                "{e} (write it with `gfnlm eval --config E_STEP.toml --adapter E_STEP/adapter --split train --json FILE`)"
            ))
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| data_err(e.to_string()))?;
        let list = v
            .get("rationales")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| {
                data_err(
                    "no \"rationales\" list (evaluate the E-step adapter with --split train)"
                        .into(),
                )
            })?;
        let by_id: HashMap<String, Example> = self
            .train
            .iter()
            .map(|e| (e.id.clone(), e.clone()))
            .collect();
        let mut out = Vec::new();
        for item in list {
            let id = item.get("id").and_then(|x| x.as_str()).unwrap_or_default();
            let base = by_id.get(id).ok_or_else(|| {
                data_err(format!(
                    "rationales for '{id}', which is not a training example of {} (written for another training file?)",
                    self.settings.train
                ))
            })?;
            let prompt: Vec<u32> =
                serde_json::from_value(item.get("prompt").cloned().unwrap_or_default())
                    .map_err(|e| data_err(format!("'{id}': prompt: {e}")))?;
            if prompt != base.prompt {
                return Err(data_err(format!(
                    "the rationales of '{id}' were sampled for another sentence than {}'s (written for another training file?)",
                    self.settings.train
                )));
            }
            let tokens: Vec<Vec<u32>> =
                serde_json::from_value(item.get("tokens").cloned().unwrap_or_default())
                    .map_err(|e| data_err(format!("'{id}': tokens: {e}")))?;
            for (j, z) in tokens.into_iter().enumerate() {
                let mut ex = base.clone();
                ex.id = format!("{id}#{j}");
                let mut demo = z;
                demo.extend(base.target.clone().unwrap_or_default());
                ex.demonstration = Some(demo);
                self.labels.insert(ex.id.clone(), self.labels[id]);
                out.push(ex);
            }
        }
        if out.is_empty() {
            return Err(data_err("no rationale to train on".into()));
        }
        Ok(out)
    }

    /// The constraint rationales are sampled under at evaluation: the E-step policy ends Z with
    /// EOS; the M-step model writes Z then Y, so Z ends where Y starts (its first token, ",").
    fn eval_constraint(&self) -> Constraint {
        let termination = if self.settings.phase == "m-step" {
            self.with_rationale[0][0]
        } else {
            self.eos
        };
        Constraint {
            termination,
            allowed: None,
            vocab_alpha: 0.0,
            min_len: self.settings.min_len,
            max_len: self.settings.max_len,
        }
    }

    /// log p(Z Y_label | X) of each trajectory's whole Z, for both labels, under `model`.
    fn label_scores(
        &self,
        model: &dyn LanguageModel,
        example: &Example,
        trajectories: &[Trajectory],
        ys: &[Vec<u32>; 2],
        device: &Device,
    ) -> Vec<[f64; 2]> {
        let score = |y: &[u32]| {
            crate::state_then_suffix_log_rewards(
                model,
                &example.prompt,
                trajectories,
                y,
                None,
                0,
                f64::NEG_INFINITY,
                true,
                device,
            )
        };
        let (a, b) = (score(&ys[0]), score(&ys[1]));
        a.iter()
            .zip(&b)
            .map(|(a, b)| [*a.last().unwrap(), *b.last().unwrap()])
            .collect()
    }

    /// log R of every state (see the module doc), untempered.
    pub fn rewards(
        &self,
        base: &dyn LanguageModel,
        example: &Example,
        trajectories: &[Trajectory],
        device: &Device,
    ) -> Vec<Vec<f64>> {
        let label = self.labels.get(&example.id).copied().unwrap_or(0);
        let score = |y: &[u32]| {
            crate::state_then_suffix_log_rewards(
                base,
                &example.prompt,
                trajectories,
                y,
                None,
                self.settings.min_len,
                self.settings.short_log_reward,
                false,
                device,
            )
        };
        let right = score(&self.with_rationale[label]);
        let wrong = score(&self.with_rationale[1 - label]);
        right
            .iter()
            .zip(&wrong)
            .map(|(r, w)| {
                r.iter()
                    .zip(w)
                    .map(|(&r, &w)| {
                        if w > r {
                            r - self.settings.label_penalty
                        } else {
                            r
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Direct classification (no rationale): log p(" <label>." | X) for both labels.
    fn evaluate_direct(
        &self,
        examples: &[Example],
        ctx: &EvalContext<'_>,
        t0: Instant,
    ) -> Result<Evaluation, TaskError> {
        let mut correct = 0usize;
        let empty = [Trajectory::new(Vec::new(), false)];
        for ex in examples {
            let s = self.label_scores(ctx.model, ex, &empty, &self.direct, ctx.device)[0];
            let pred = usize::from(s[1] > s[0]);
            correct += usize::from(pred == self.labels[&ex.id]);
        }
        let acc = correct as f64 / examples.len() as f64;
        let metrics = serde_json::json!({
            "sentences": examples.len(),
            "phase": "direct",
            "few_shot": self.settings.few_shot,
            "accuracy": acc,
            "seconds": t0.elapsed().as_secs_f64(),
        });
        Ok(Evaluation {
            summary: vec![format!(
                "[subjectivity, direct, {} shots]: accuracy {:.3} on {} sentences",
                self.settings.few_shot,
                acc,
                examples.len()
            )],
            markdown: format!(
                "| sentences | shots | accuracy |\n|---|---|---|\n| {} | {} | {:.3} |\n",
                examples.len(),
                self.settings.few_shot,
                acc
            ),
            metrics,
        })
    }
}

impl Task for SubjectivityTask {
    fn name(&self) -> &str {
        "subjectivity"
    }

    fn examples(&self, split: Split) -> &[Example] {
        match split {
            Split::Train => &self.train,
            Split::Validation | Split::Test => &self.test,
        }
    }

    fn constraint(&self, _example: &Example) -> Constraint {
        // The M-step and direct phases train on Z + Y (or the label word) ended by EOS.
        let extra = match self.settings.phase.as_str() {
            "e-step" => 0,
            _ => self.with_rationale.iter().map(Vec::len).max().unwrap_or(0),
        };
        Constraint {
            termination: self.eos,
            allowed: None,
            vocab_alpha: 0.0,
            min_len: self.settings.min_len,
            max_len: self.settings.max_len + extra,
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

    fn is_valid(&self, _example: &Example, trajectory: &Trajectory, terminal: f64) -> bool {
        trajectory.num_actions() >= self.settings.min_len && terminal.is_finite()
    }

    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Evaluation, TaskError> {
        let t0 = Instant::now();
        let file;
        let (examples, task): (&[Example], &Self) = match ctx.data {
            Some(path) => {
                let mut s = self.settings.clone();
                s.test = path.to_string_lossy().into_owned();
                s.num_test = usize::MAX;
                if s.phase == "m-step" {
                    // The rationales belong to training, not to the file being evaluated.
                    s.phase = "e-step".into();
                    s.rationales = None;
                }
                file = Self::new(&self.tokenizer, &self.data_dir, s)?;
                (file.examples(Split::Test), &file)
            }
            None => (self.examples(ctx.split), self),
        };
        if examples.is_empty() {
            return Err(TaskError::Config(
                "task 'subjectivity': no sentences to evaluate (num_test = 0; pass --data FILE)"
                    .into(),
            ));
        }
        if self.settings.phase == "direct" {
            return task.evaluate_direct(examples, ctx, t0);
        }
        // The E-step policy is classified by the base model (the reward's judge); the M-step
        // model by itself.
        let judge: &dyn LanguageModel = if self.settings.phase == "e-step" {
            ctx.base
        } else {
            ctx.model
        };
        let n = ctx.samples.unwrap_or(self.settings.eval_samples).max(1);
        let constraint = self.eval_constraint();
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
        let (mut greedy_ok, mut vote_ok, mut sample_ok, mut samples) = (0usize, 0usize, 0, 0);
        let mut rationales = Vec::new();
        let mut shown = Vec::new();
        for ex in examples {
            let label = task.labels[&ex.id];
            let greedy = sample_trajectories(
                ctx.model,
                &ex.prompt,
                1,
                &constraint,
                Behaviour {
                    temperature: 0.01,
                    epsilon: 0.0,
                },
                None,
                &mut rng,
                ctx.device,
            );
            let sampled = sample_trajectories(
                ctx.model,
                &ex.prompt,
                n,
                &constraint,
                Behaviour {
                    temperature: self.settings.eval_temperature,
                    epsilon: 0.0,
                },
                None,
                &mut rng,
                ctx.device,
            );
            let mut all = greedy.clone();
            all.extend(sampled.iter().cloned());
            let scores = task.label_scores(judge, ex, &all, &task.with_rationale, ctx.device);
            let predict = |s: &[f64; 2]| usize::from(s[1] > s[0]);
            greedy_ok += usize::from(predict(&scores[0]) == label);
            let votes = scores[1..].iter().filter(|s| predict(s) == 1).count();
            let vote = match (2 * votes).cmp(&n) {
                std::cmp::Ordering::Greater => Some(1),
                std::cmp::Ordering::Less => Some(0),
                std::cmp::Ordering::Equal => None,
            };
            vote_ok += usize::from(vote == Some(label));
            sample_ok += scores[1..].iter().filter(|s| predict(s) == label).count();
            samples += n;
            if ctx.split == Split::Train && ctx.data.is_none() {
                rationales.push(serde_json::json!({
                    "id": ex.id,
                    "prompt": ex.prompt,
                    "label": label,
                    "tokens": sampled.iter().map(|t| t.tokens.clone()).collect::<Vec<_>>(),
                }));
            }
            if shown.len() < 5 {
                let text = |t: &Trajectory| {
                    self.tokenizer
                        .decode(&t.tokens)
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                };
                shown.push(serde_json::json!({
                    "id": ex.id,
                    "label": LABELS[label],
                    "greedy": text(&all[0]),
                    "greedy_prediction": LABELS[predict(&scores[0])],
                    "samples": sampled.iter().take(3).map(text).collect::<Vec<_>>(),
                }));
            }
        }
        let m = examples.len() as f64;
        let (greedy, vote, per) = (
            greedy_ok as f64 / m,
            vote_ok as f64 / m,
            sample_ok as f64 / samples.max(1) as f64,
        );
        let mut metrics = serde_json::json!({
            "sentences": examples.len(),
            "phase": self.settings.phase,
            "samples_per_sentence": n,
            "temperature": self.settings.eval_temperature,
            "accuracy_greedy": greedy,
            "accuracy_vote": vote,
            "sample_accuracy": per,
            "seconds": t0.elapsed().as_secs_f64(),
            "examples": shown,
        });
        if !rationales.is_empty() {
            metrics["rationales"] = serde_json::Value::Array(rationales);
        }
        Ok(Evaluation {
            summary: vec![format!(
                "[subjectivity, {}]: {} sentences: accuracy {:.3} greedy, {:.3} by a vote of {n} rationales (per rationale {:.3})",
                self.settings.phase,
                examples.len(),
                greedy,
                vote,
                per
            )],
            markdown: format!(
                "| sentences | phase | greedy | vote of {n} | per rationale |\n|---|---|---|---|---|\n| {} | {} | {:.3} | {:.3} | {:.3} |\n",
                examples.len(),
                self.settings.phase,
                greedy,
                vote,
                per
            ),
            metrics,
        })
    }
}
