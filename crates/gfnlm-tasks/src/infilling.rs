//! Story infilling (paper §4.2): given the beginning of a five-sentence story (sentences 1–3,
//! X) and its ending (sentence 5, Y), sample the missing 4th sentence Z ∝ p_LM(Z Y | X).
//!
//! - **Data**: a CSV in the ROCStories format (`storyid, storytitle, sentence1..sentence5`):
//!   the repository's own `datasets/stories/stories.csv` (CC0, ROCStories cannot be shipped) or
//!   the real ROCStories CSV (`[task] data` or `gfnlm eval --data`). The first `num_train`
//!   stories train, the next `num_test` evaluate.
//! - **Policy prompt** (the reference's query): `"Beginning: s1 s2 s3\nEnding: s5\nMiddle:"`; Z
//!   ends with EOS (⊤), `min_len`..=`max_len` tokens, the full vocabulary.
//! - **Reward**: log R(s) = log p_base(s Y | s1 s2 s3) for every state s with at least `min_len`
//!   tokens (Y = `" s5"`), else `short_log_reward` — the reference's `main_infill.py` path
//!   (`beginning + Z + ending`, scored after the beginning), i.e. the paper's p(X Z Y)/p(X). Its
//!   other path, `main.py`, scores after the whole query and passes an `infills=` argument the
//!   reward class does not accept at the reference's commit; we follow the paper's formula.
//! - **Evaluation**: `eval_samples` sentences per test story at `eval_temperature`; BLEU-4
//!   (smoothing method 1) and GLEU against the gold 4th sentence ([`crate::text_metrics`],
//!   equal to NLTK's), prepared as the reference's `eval_infill.py` does (the gold sentence
//!   without its last character, the sample without its first, split on whitespace); the base
//!   model's log p(Z Y | X) per sample, length, and the examples.

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

use crate::text_metrics::{bleu4, gleu, words};
use crate::{
    Constraint, EvalContext, Evaluation, Example, Registration, RewardContext, Split, Task,
    TaskError, TaskInputs, Trajectory,
};

/// The `[task]` keys of infilling (all optional; paths relative to the data folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfillingSettings {
    /// Stories CSV in the ROCStories format.
    pub data: String,
    /// The first `num_train` stories train.
    pub num_train: usize,
    /// The `num_test` stories after them evaluate (`--split test` / `validation`).
    pub num_test: usize,
    /// Fewest tokens of Z before ⊤ is allowed and rewarded.
    pub min_len: usize,
    /// Most tokens of Z.
    pub max_len: usize,
    /// log R of a state shorter than `min_len`.
    pub short_log_reward: f64,
    /// Samples per story at evaluation.
    pub eval_samples: usize,
    /// Sampling temperature at evaluation (the reference's README: 0.9).
    pub eval_temperature: f64,
    /// `"infill"` (the task) or `"story"`: the story language model the reward model is
    /// fine-tuned as — prompt `"s1 s2 s3"`, demonstration `" s4 s5"`, evaluated by the held-out
    /// log-likelihood of the gold ending.
    pub mode: String,
}

impl Default for InfillingSettings {
    fn default() -> Self {
        Self {
            data: "stories/stories.csv".into(),
            num_train: 200,
            num_test: 32,
            min_len: 5,
            max_len: 25,
            short_log_reward: -99.0,
            eval_samples: 10,
            eval_temperature: 0.9,
            mode: "infill".into(),
        }
    }
}

impl InfillingSettings {
    fn validate(&self) -> Result<(), TaskError> {
        let bad = |m: String| Err(TaskError::Config(format!("task 'infilling': {m}")));
        if self.max_len == 0 || self.min_len > self.max_len || self.max_len > 256 {
            return bad(format!(
                "need min_len ≤ max_len and 1 ≤ max_len ≤ 256 (got {}, {})",
                self.min_len, self.max_len
            ));
        }
        if self.mode != "infill" && self.mode != "story" {
            return bad(format!(
                "mode must be \"infill\" or \"story\", got {:?}",
                self.mode
            ));
        }
        if self.num_train == 0 {
            return bad("num_train must be ≥ 1".into());
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
        if !self.short_log_reward.is_finite() {
            return bad(format!(
                "short_log_reward must be finite, got {}",
                self.short_log_reward
            ));
        }
        Ok(())
    }
}

/// infilling in the registry.
pub const REGISTRATION: Registration = Registration {
    name: "infilling",
    about: "story infilling: the missing 4th sentence Z ∝ p(Z Y | X), X = sentences 1–3, Y = sentence 5 (paper §4.2)",
    check: |section| section.parse::<InfillingSettings>()?.validate(),
    build: |section, inputs: &TaskInputs<'_>| {
        let s: InfillingSettings = section.parse()?;
        s.validate()?;
        Ok(Box::new(InfillingTask::new(
            inputs.tokenizer,
            inputs.data_dir,
            s,
        )?))
    },
};

/// One five-sentence story.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Story {
    /// `storyid`.
    pub id: String,
    /// `storytitle` (empty when the file has no such column).
    pub title: String,
    /// `sentence1` … `sentence5`.
    pub sentences: [String; 5],
}

/// Splits CSV text into records (RFC 4180: quoted fields, `""` for a quote inside one, commas
/// and line breaks inside quotes, LF or CRLF line ends). Errors give the 1-based line.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut line, mut started) = (false, 1usize, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                quoted = true;
                started = true;
            }
            '"' => return Err(format!("line {line}: a quote inside an unquoted field")),
            ',' => {
                record.push(std::mem::take(&mut field));
                started = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if started || !field.is_empty() || !record.is_empty() {
                    record.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut record));
                }
                started = false;
                line += 1;
            }
            _ => {
                field.push(c);
                started = true;
            }
        }
    }
    if quoted {
        return Err(format!("line {line}: a quoted field is never closed"));
    }
    if started || !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

/// Reads the stories of a CSV with the ROCStories header (`storyid`, `sentence1`..`sentence5`;
/// `storytitle` optional), in file order.
pub fn read_stories(path: &Path) -> Result<Vec<Story>, TaskError> {
    let err = |message: String| TaskError::Data {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "cannot read the stories CSV ({e}); the repository ships datasets/stories/stories.csv, or pass a ROCStories CSV with --data / [task] data"
        ))
    })?;
    let records = parse_csv(&text).map_err(err)?;
    let (header, rows) = records
        .split_first()
        .ok_or_else(|| err("empty file".into()))?;
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let needed = [
        "storyid",
        "sentence1",
        "sentence2",
        "sentence3",
        "sentence4",
        "sentence5",
    ];
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|n| col(n).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(err(format!(
            "missing column(s) {} (the ROCStories header is storyid,storytitle,sentence1,…,sentence5; found: {})",
            missing.join(", "),
            header.join(",")
        )));
    }
    let at = |n: &str| col(n).expect("checked above");
    let title = col("storytitle");
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let get = |c: usize| {
                r.get(c).map(|s| s.trim().to_string()).ok_or_else(|| {
                    err(format!(
                        "record {} has {} fields, the header {}",
                        i + 2,
                        r.len(),
                        header.len()
                    ))
                })
            };
            let sentences = [
                get(at("sentence1"))?,
                get(at("sentence2"))?,
                get(at("sentence3"))?,
                get(at("sentence4"))?,
                get(at("sentence5"))?,
            ];
            if let Some(k) = sentences.iter().position(String::is_empty) {
                return Err(err(format!("record {}: sentence{} is empty", i + 2, k + 1)));
            }
            Ok(Story {
                id: get(at("storyid"))?,
                title: title.map(get).transpose()?.unwrap_or_default(),
                sentences,
            })
        })
        .collect()
}

/// The task's per-story texts, by example id.
#[derive(Debug, Clone)]
struct StoryTokens {
    /// `"s1 s2 s3"`, the reward's context.
    beginning: Vec<u32>,
    /// The gold 4th sentence.
    gold: String,
}

/// Story infilling (see the module doc).
pub struct InfillingTask {
    settings: InfillingSettings,
    eos: u32,
    tokenizer: Tokenizer,
    train: Vec<Example>,
    test: Vec<Example>,
    stories: HashMap<String, StoryTokens>,
}

impl InfillingTask {
    /// Reads the stories and tokenises prompts, endings and gold middles.
    pub fn new(
        tokenizer: &Tokenizer,
        data_dir: &Path,
        settings: InfillingSettings,
    ) -> Result<Self, TaskError> {
        settings.validate()?;
        let path = if Path::new(&settings.data).is_absolute() {
            PathBuf::from(&settings.data)
        } else {
            data_dir.join(&settings.data)
        };
        let eos = tokenizer.eos_id().ok_or_else(|| {
            TaskError::Tokenizer("the tokenizer has no EOS token to end a sentence".into())
        })?;
        let all = read_stories(&path)?;
        if all.len() < settings.num_train {
            return Err(TaskError::Data {
                path,
                message: format!(
                    "{} stories, fewer than num_train = {}",
                    all.len(),
                    settings.num_train
                ),
            });
        }
        let mut task = Self {
            settings,
            eos,
            tokenizer: tokenizer.clone(),
            train: Vec::new(),
            test: Vec::new(),
            stories: HashMap::new(),
        };
        let n_train = task.settings.num_train;
        let n_test = task.settings.num_test;
        for (i, s) in all.iter().enumerate().take(n_train + n_test) {
            let ex = task.add_story(s)?;
            if i < n_train {
                task.train.push(ex);
            } else {
                task.test.push(ex);
            }
        }
        Ok(task)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, TaskError> {
        self.tokenizer
            .encode(text, false)
            .map_err(|e| TaskError::Tokenizer(format!("tokenizing {text:?}: {e}")))
    }

    /// Builds the example of a story and records its beginning and gold middle.
    fn add_story(&mut self, s: &Story) -> Result<Example, TaskError> {
        let [s1, s2, s3, s4, s5] = &s.sentences;
        let beginning = self.encode(&format!("{s1} {s2} {s3}"))?;
        if self.story_mode() {
            let mut ex = Example::prompt_only(s.id.clone(), beginning.clone());
            ex.demonstration = Some(self.encode(&format!(" {s4} {s5}"))?);
            self.stories.insert(
                s.id.clone(),
                StoryTokens {
                    beginning,
                    gold: s4.clone(),
                },
            );
            return Ok(ex);
        }
        let mut ex = Example::prompt_only(
            s.id.clone(),
            self.encode(&format!("Beginning: {s1} {s2} {s3}\nEnding: {s5}\nMiddle:"))?,
        );
        ex.target = Some(self.encode(&format!(" {s5}"))?);
        ex.demonstration = Some(self.encode(&format!(" {s4}"))?);
        self.stories.insert(
            s.id.clone(),
            StoryTokens {
                beginning,
                gold: s4.clone(),
            },
        );
        Ok(ex)
    }

    /// log R of every state of every trajectory, untempered (see the module doc).
    pub fn rewards(
        &self,
        base: &dyn LanguageModel,
        example: &Example,
        trajectories: &[Trajectory],
        device: &Device,
    ) -> Vec<Vec<f64>> {
        self.scored_rewards(base, example, trajectories, false, device)
    }

    /// log R of each trajectory's last state only (what evaluation reports), one pass.
    pub fn terminal_rewards(
        &self,
        base: &dyn LanguageModel,
        example: &Example,
        trajectories: &[Trajectory],
        device: &Device,
    ) -> Vec<f64> {
        self.scored_rewards(base, example, trajectories, true, device)
            .iter()
            .map(|r| r.last().copied().unwrap_or(f64::NAN))
            .collect()
    }

    fn scored_rewards(
        &self,
        base: &dyn LanguageModel,
        example: &Example,
        trajectories: &[Trajectory],
        terminal_only: bool,
        device: &Device,
    ) -> Vec<Vec<f64>> {
        let Some(story) = self.stories.get(&example.id) else {
            return trajectories
                .iter()
                .map(|t| vec![self.settings.short_log_reward; t.num_actions() + 1])
                .collect();
        };
        // Story mode: log p(s ⊤ | beginning), the story model's own likelihood.
        let y = match &example.target {
            Some(y) => y.clone(),
            None => vec![self.eos],
        };
        crate::state_then_suffix_log_rewards(
            base,
            &story.beginning,
            trajectories,
            &y,
            None,
            self.settings.min_len,
            self.settings.short_log_reward,
            terminal_only,
            device,
        )
    }

    /// Examples (and their stories) of any CSV in the ROCStories format: all its stories.
    fn examples_from_file(&self, path: &Path) -> Result<(Vec<Example>, Self), TaskError> {
        let mut other = Self {
            settings: self.settings.clone(),
            eos: self.eos,
            tokenizer: self.tokenizer.clone(),
            train: Vec::new(),
            test: Vec::new(),
            stories: HashMap::new(),
        };
        let mut examples = Vec::new();
        for s in read_stories(path)? {
            examples.push(other.add_story(&s)?);
        }
        Ok((examples, other))
    }

    /// Whether this is the story language model (`mode = "story"`).
    fn story_mode(&self) -> bool {
        self.settings.mode == "story"
    }

    /// Story mode's evaluation: mean log p(" s4 s5" | "s1 s2 s3") of the held-out stories under
    /// the evaluated model and under the base model.
    fn evaluate_story_model(
        &self,
        examples: &[Example],
        ctx: &EvalContext<'_>,
    ) -> Result<Evaluation, TaskError> {
        let t0 = Instant::now();
        let (mut model_lp, mut base_lp, mut tokens) = (0.0f64, 0.0f64, 0usize);
        for ex in examples {
            let gold = ex.demonstration.clone().unwrap_or_default();
            let sum = |m: &dyn LanguageModel| -> f64 {
                gfnlm_models::generate::score_continuations(
                    m,
                    &ex.prompt,
                    std::slice::from_ref(&gold),
                    ctx.device,
                )[0]
                .iter()
                .map(|&x| x as f64)
                .sum()
            };
            model_lp += sum(ctx.model);
            base_lp += sum(ctx.base);
            tokens += gold.len();
        }
        let n = examples.len().max(1) as f64;
        let per_tok = |x: f64| x / tokens.max(1) as f64;
        let metrics = serde_json::json!({
            "stories": examples.len(),
            "tokens": tokens,
            "log_p_model": model_lp / n,
            "log_p_base": base_lp / n,
            "log_p_model_per_token": per_tok(model_lp),
            "log_p_base_per_token": per_tok(base_lp),
            "seconds": t0.elapsed().as_secs_f64(),
        });
        let summary = vec![format!(
            "[infilling, story model]: {} held-out stories: log p(s4 s5 | s1 s2 s3) {:.2} ({:.3}/token) with the adapter, {:.2} ({:.3}/token) without",
            examples.len(),
            model_lp / n,
            per_tok(model_lp),
            base_lp / n,
            per_tok(base_lp)
        )];
        let markdown = format!(
            "| stories | log p(s4 s5 \\| s1 s2 s3), adapter | per token | without adapter | per token |\n|---|---|---|---|---|\n| {} | {:.2} | {:.3} | {:.2} | {:.3} |\n",
            examples.len(),
            model_lp / n,
            per_tok(model_lp),
            base_lp / n,
            per_tok(base_lp)
        );
        Ok(Evaluation {
            metrics,
            summary,
            markdown,
        })
    }

    /// Decoded Z (EOS excluded), trimmed.
    fn text(&self, tokens: &[u32]) -> String {
        self.tokenizer
            .decode(tokens)
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

impl Task for InfillingTask {
    fn name(&self) -> &str {
        "infilling"
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
            allowed: None,
            vocab_alpha: 0.0,
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

    fn is_valid(&self, _example: &Example, trajectory: &Trajectory, terminal: f64) -> bool {
        trajectory.num_actions() >= self.settings.min_len && terminal.is_finite()
    }

    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Evaluation, TaskError> {
        let t0 = Instant::now();
        let file;
        let (examples, task): (&[Example], &Self) = match ctx.data {
            Some(path) => {
                file = self.examples_from_file(path)?;
                (&file.0, &file.1)
            }
            None => (self.examples(ctx.split), self),
        };
        if examples.is_empty() {
            return Err(TaskError::Config(
                "task 'infilling': no stories to evaluate (num_test = 0; pass --data FILE)".into(),
            ));
        }
        if self.story_mode() {
            return task.evaluate_story_model(examples, ctx);
        }
        let encoder = load_encoder(ctx.device)?;
        let n = ctx.samples.unwrap_or(self.settings.eval_samples).max(1);
        let behaviour = Behaviour {
            temperature: self.settings.eval_temperature,
            epsilon: 0.0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
        let (mut bleu, mut gl, mut log_r, mut len, mut count) = (0.0, 0.0, 0.0, 0.0, 0usize);
        let (mut bert_f1, mut diversity) = (0.0, 0.0);
        let mut shown = Vec::new();
        for ex in examples {
            let trajs = sample_trajectories(
                ctx.model,
                &ex.prompt,
                n,
                &task.constraint(ex),
                behaviour,
                None,
                &mut rng,
                ctx.device,
            );
            let rewards = task.terminal_rewards(ctx.base, ex, &trajs, ctx.device);
            let gold = &task.stories[&ex.id].gold;
            // As the reference's eval_infill.py: the gold sentence without its last character
            // (its full stop), the sample without its first (the space after "Middle:"), both
            // split on whitespace.
            let mut gold_chars = gold.chars();
            gold_chars.next_back();
            let reference = vec![words(gold_chars.as_str())];
            // BERTScore and diversity read the decoded sentences as a reader sees them.
            let texts: Vec<String> = trajs.iter().map(|t| task.text(&t.tokens)).collect();
            let embed_err = |e: gfnlm_embed::EmbedError| TaskError::Eval(format!("{e}"));
            let mut with_gold = texts.clone();
            with_gold.push(gold.clone());
            let toks = encoder.token_embeddings(&with_gold).map_err(embed_err)?;
            let (gold_toks, sample_toks) = toks.split_last().expect("gold is last");
            for s in sample_toks {
                bert_f1 += gfnlm_embed::bert_score(s, gold_toks).2;
            }
            diversity +=
                gfnlm_embed::semantic_diversity(&encoder.embed(&texts).map_err(embed_err)?);
            for (t, r) in trajs.iter().zip(&rewards) {
                let raw = self.tokenizer.decode(&t.tokens).unwrap_or_default();
                let mut raw_chars = raw.chars();
                raw_chars.next();
                let hyp = words(raw_chars.as_str());
                let text = task.text(&t.tokens);
                bleu += bleu4(&reference, &hyp);
                gl += gleu(&reference, &hyp);
                log_r += r;
                len += t.num_actions() as f64;
                count += 1;
                if shown.len() < 5 && std::ptr::eq(t, &trajs[0]) {
                    shown.push(serde_json::json!({
                        "id": ex.id,
                        "prompt": self.tokenizer.decode(&ex.prompt).unwrap_or_default(),
                        "gold": gold,
                        "sample": text,
                    }));
                }
            }
        }
        let c = count.max(1) as f64;
        let (bleu, gl, log_r, len) = (bleu / c, gl / c, log_r / c, len / c);
        let bert_f1 = bert_f1 / c;
        let diversity = diversity / examples.len() as f64;
        let encoder_name = encoder.name().to_string();
        let metrics = serde_json::json!({
            "stories": examples.len(),
            "samples_per_story": n,
            "temperature": self.settings.eval_temperature,
            "bleu4": bleu,
            "gleu": gl,
            "bertscore_f1": bert_f1,
            "diversity": diversity,
            "encoder": encoder_name,
            "mean_log_r": log_r,
            "mean_tokens": len,
            "seconds": t0.elapsed().as_secs_f64(),
            "examples": shown,
        });
        let summary = vec![format!(
            "[infilling]: {} stories × {n} samples at T = {}: BLEU-4 {:.4}, GLEU {:.4}, BERTScore F1 {:.4}, diversity {:.4} ({encoder_name}), log p(Z Y | X) {:.2}, {:.1} tokens",
            examples.len(),
            self.settings.eval_temperature,
            bleu,
            gl,
            bert_f1,
            diversity,
            log_r,
            len
        )];
        let markdown = format!(
            "| stories | samples per story | BLEU-4 | GLEU | BERTScore F1 ({encoder_name}) | diversity | log p(Z Y \\| X) | tokens |\n|---|---|---|---|---|---|---|---|\n| {} | {n} | {:.4} | {:.4} | {:.4} | {:.4} | {:.2} | {:.1} |\n",
            examples.len(),
            bleu,
            gl,
            bert_f1,
            diversity,
            log_r,
            len
        );
        Ok(Evaluation {
            metrics,
            summary,
            markdown,
        })
    }

    fn step_metrics(
        &self,
        _example: &Example,
        trajectories: &[Trajectory],
        _log_rewards: &[Vec<f64>],
        _ctx: &RewardContext<'_>,
    ) -> BTreeMap<String, f64> {
        let n = trajectories.len().max(1) as f64;
        let forced = trajectories.iter().filter(|t| t.forced).count() as f64;
        BTreeMap::from([("forced_stop".to_string(), forced / n)])
    }
}

/// The all-MiniLM-L6-v2 encoder of BERTScore and diversity (fetched and cached on first use).
fn load_encoder(device: &Device) -> Result<gfnlm_embed::SentenceEncoder, TaskError> {
    let err = |e: String| TaskError::Eval(format!("the sentence encoder for BERTScore: {e}"));
    let dir = gfnlm_fetch::ensure_minilm().map_err(|e| err(e.to_string()))?;
    gfnlm_embed::SentenceEncoder::load(&dir, device).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_quotes_and_line_ends() {
        let text = "a,b,c\r\n1,\"x, y\",\"say \"\"hi\"\"\"\n2,,\"two\nlines\"\n\n3,z,w";
        let r = parse_csv(text).unwrap();
        assert_eq!(
            r,
            vec![
                vec!["a", "b", "c"],
                vec!["1", "x, y", "say \"hi\""],
                vec!["2", "", "two\nlines"],
                vec!["3", "z", "w"],
            ]
        );
        assert!(parse_csv("a,\"b\nc").unwrap_err().contains("never closed"));
        assert!(parse_csv("a,b\"c\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn shipped_stories_read_with_five_sentences() {
        let path = crate::default_data_dir().join("stories/stories.csv");
        let stories = read_stories(&path).unwrap();
        assert!(stories.len() >= 220, "{}", stories.len());
        assert_eq!(stories[0].id, "gfnlm-0001");
        for s in &stories {
            assert!(
                s.sentences.iter().all(|x| x.ends_with(['.', '!', '?'])),
                "{s:?}"
            );
        }
    }

    #[test]
    fn a_csv_without_the_rocstories_columns_names_them() {
        let dir = std::env::temp_dir().join(format!("gfnlm-stories-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("cloze.csv");
        std::fs::write(&p, "InputStoryid,InputSentence1,InputSentence2\nx,a.,b.\n").unwrap();
        let e = read_stories(&p).unwrap_err().to_string();
        assert!(e.contains("cloze.csv") && e.contains("sentence1"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
