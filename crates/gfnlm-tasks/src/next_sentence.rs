//! Next-sentence continuation (paper §4.1): sample the next sentence Z of a prompt X in
//! proportion to the base model's likelihood p_base(Z "." | X)^(1/T_R).
//!
//! - ⊤ is the sentence-ending "." token (`tokenize("A sentence.")`'s last id), not EOS.
//! - log R(z_1..z_k ⊤) = log p_base(z_1..z_k "." | X) for every prefix from one teacher-forced
//!   pass of the base model (the policy with its adapters off); the empty sentence gets
//!   `short_log_reward` (−99). Illegal tokens ([`illegal_token_ids`]) get `reward_alpha` (−50)
//!   in the reward's logits and `policy_alpha` (−99) in the policy's, as the reference does.
//! - Data: the paper's OpenWebText prompts; the first `limit_prompts` (1,000) lines, the first
//!   95 % for training and the rest for validation (the reference's split, no shuffle).
//!
//! The reward temperature (1.0 → 0.8 in the paper) is the trainer's `reward_temp_*` keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use gfnlm_models::LanguageModel;
use gfnlm_models::decode::{Behaviour, policy_terms, sample_trajectories, sequence_log_probs};
use gfnlm_models::search::{DecodeMethod, decode};
use gfnlm_rewards::LmLikelihood;
use gfnlm_tokenizer::Tokenizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{
    Constraint, EvalContext, Evaluation, Example, Registration, RewardContext, Split, Task,
    TaskError, TaskInputs, Trajectory,
};

/// The `[task]` keys of next-sentence (all optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NextSentenceSettings {
    /// Prompt file, one prompt per line, relative to the data folder (or absolute).
    pub prompts: String,
    /// Use the first N lines of the file (the paper: 1,000).
    pub limit_prompts: usize,
    /// Fraction of those lines used for training; the rest is the validation split.
    pub train_fraction: f64,
    /// Train on only the first N training prompts (all when absent).
    pub limit_train: Option<usize>,
    /// Evaluate on only the first N validation prompts (all when absent).
    pub limit_validation: Option<usize>,
    /// Fewest tokens before ".".
    pub min_len: usize,
    /// Most tokens before "." (⊤ is forced after them).
    pub max_len: usize,
    /// Logit offset of illegal tokens in the policy (sampling and loss).
    pub policy_alpha: f32,
    /// Logit offset of illegal tokens in the reward model.
    pub reward_alpha: f32,
    /// log R of a sentence shorter than `min_len` (the empty one).
    pub short_log_reward: f64,
    /// Reward temperature of the evaluation's log R (the training run's final one).
    pub eval_reward_temperature: f64,
    /// Behaviour temperature of the Var(log R − log q) diagnostic (the paper's 2.0).
    pub eval_var_temperature: f64,
}

impl Default for NextSentenceSettings {
    fn default() -> Self {
        Self {
            prompts: "openwebtext/prompts.txt".into(),
            limit_prompts: 1000,
            train_fraction: 0.95,
            limit_train: None,
            limit_validation: None,
            min_len: 1,
            max_len: 30,
            policy_alpha: -99.0,
            reward_alpha: -50.0,
            short_log_reward: -99.0,
            eval_reward_temperature: 0.8,
            eval_var_temperature: 2.0,
        }
    }
}

impl NextSentenceSettings {
    fn validate(&self) -> Result<(), TaskError> {
        let bad = |m: String| Err(TaskError::Config(format!("task 'next-sentence': {m}")));
        if self.limit_prompts < 2 {
            return bad(format!(
                "limit_prompts must be ≥ 2 (a training and a validation prompt), got {}",
                self.limit_prompts
            ));
        }
        if !(self.train_fraction > 0.0 && self.train_fraction < 1.0) {
            return bad(format!(
                "train_fraction must lie strictly between 0 and 1, got {}",
                self.train_fraction
            ));
        }
        if self.max_len == 0 || self.min_len > self.max_len {
            return bad(format!(
                "need 0 ≤ min_len ≤ max_len and max_len ≥ 1, got min_len {} max_len {}",
                self.min_len, self.max_len
            ));
        }
        if self.max_len > 512 {
            return bad(format!("max_len must be ≤ 512, got {}", self.max_len));
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
        for (k, v) in [
            ("eval_reward_temperature", self.eval_reward_temperature),
            ("eval_var_temperature", self.eval_var_temperature),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return bad(format!("{k} must be a positive number, got {v}"));
            }
        }
        if self.limit_train == Some(0) || self.limit_validation == Some(0) {
            return bad("limit_train and limit_validation must be ≥ 1 when given".into());
        }
        Ok(())
    }
}

/// next-sentence in the registry.
pub const REGISTRATION: Registration = Registration {
    name: "next-sentence",
    about: "the next sentence of an OpenWebText prompt ∝ p_base(Z. | X)^(1/T) (paper §4.1)",
    check: |section| section.parse::<NextSentenceSettings>()?.validate(),
    build: |section, inputs: &TaskInputs<'_>| {
        let s: NextSentenceSettings = section.parse()?;
        s.validate()?;
        Ok(Box::new(NextSentenceTask::new(
            inputs.tokenizer,
            inputs.data_dir,
            s,
        )?))
    },
};

/// Why a token may not appear inside a sentence, if it may not ([`illegal_token_ids`]).
///
/// The rule, on the token's decoded text (the reference bans a hand list of 150 GPT-2 tokens of
/// the same kinds):
/// 1. special/added tokens (EOS, chat markers) and tokens that decode to nothing;
/// 2. line breaks, tabs and other control characters;
/// 3. incomplete UTF-8 (a byte of a multi-byte character, decoded as U+FFFD);
/// 4. another sentence end or an ellipsis: any `.`, `!` or `?` (the terminator "." itself is ⊤,
///    not an action; decimals like "3.5" are therefore not writable);
/// 5. double quotes (straight or curly), which open text the sentence cannot close;
/// 6. URLs: `http`, `://`, `www`;
/// 7. runs of one repeated symbol (`--`, `**`, `==`, `__`, `##`, `~~` …) and the lone symbols
///    `|`, `~`, `^`;
/// 8. abbreviations usually followed by a period (`Mr`, `Mrs`, `Ms`, `Dr`, `Prof`, `Jr`, `Sr`,
///    `St`, `Av`, `US`, with or without a leading space) and single capital letters without a
///    leading space (initials: "J."); " A" and " I" stay legal words.
pub fn illegal_reason(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        return Some("empty");
    }
    if text.chars().any(|c| c.is_control()) {
        return Some("control character or line break");
    }
    if text.contains('\u{FFFD}') {
        return Some("incomplete UTF-8");
    }
    if text.contains(['.', '!', '?', '…']) {
        return Some("sentence end");
    }
    if text.contains(['"', '“', '”']) {
        return Some("double quote");
    }
    let lower = text.to_lowercase();
    if lower.contains("http") || lower.contains("://") || lower.contains("www") {
        return Some("URL");
    }
    let trimmed = text.trim_start_matches(' ');
    let mut chars = trimmed.chars();
    if let Some(first) = chars.next() {
        let run = trimmed.chars().count() >= 2
            && !first.is_alphanumeric()
            && !first.is_whitespace()
            && trimmed.chars().all(|c| c == first);
        if run {
            return Some("symbol run");
        }
    }
    if matches!(trimmed, "|" | "~" | "^") {
        return Some("symbol");
    }
    const ABBREVIATIONS: &[&str] = &[
        "Mr", "Mrs", "Ms", "Dr", "Prof", "Jr", "Sr", "St", "Av", "US",
    ];
    if ABBREVIATIONS.contains(&trimmed) {
        return Some("abbreviation");
    }
    if text.len() == 1 && text.as_bytes()[0].is_ascii_uppercase() {
        return Some("initial");
    }
    None
}

/// The tokens a sentence may not contain: every id whose decoded text [`illegal_reason`]
/// refuses, plus every added (special) token; `termination` ("." = ⊤) is never in the list.
pub fn illegal_token_ids(tokenizer: &Tokenizer, termination: u32) -> Vec<u32> {
    let added: std::collections::HashSet<u32> = tokenizer
        .inner()
        .get_added_tokens_decoder()
        .keys()
        .copied()
        .collect();
    (0..tokenizer.vocab_size() as u32)
        .filter(|&id| id != termination)
        .filter(|id| {
            added.contains(id)
                || tokenizer
                    .decode(&[*id])
                    .map(|t| illegal_reason(&t).is_some())
                    .unwrap_or(true)
        })
        .collect()
}

/// Reads a prompt file: one prompt per line, `\n` stripped, trailing spaces kept (the
/// reference's `rstrip("\n")`), empty lines refused.
pub fn read_prompts(path: &Path, limit: usize) -> Result<Vec<String>, TaskError> {
    let data_err = |message: String| TaskError::Data {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        data_err(format!(
            "{e}: the prompt file is missing or unreadable (the repository ships datasets/openwebtext/prompts.txt; \
             pass --data-dir or set [task] prompts)"
        ))
    })?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().take(limit).enumerate() {
        if line.trim().is_empty() {
            return Err(data_err(format!(
                "line {} is empty: one prompt per line",
                i + 1
            )));
        }
        prompts.push(line.to_string());
    }
    if prompts.is_empty() {
        return Err(data_err("no prompts in the file".into()));
    }
    Ok(prompts)
}

/// The next-sentence task over one tokenizer.
#[derive(Debug, Clone)]
pub struct NextSentenceTask {
    /// The task's settings.
    pub settings: NextSentenceSettings,
    /// "." (⊤).
    pub termination: u32,
    /// Tokens a sentence may not contain (sorted).
    pub illegal: Vec<u32>,
    allowed: Vec<u32>,
    tokenizer: Tokenizer,
    train: Vec<Example>,
    validation: Vec<Example>,
}

impl NextSentenceTask {
    /// Builds the task: reads and splits the prompts, finds ⊤ and the illegal tokens.
    pub fn new(
        tokenizer: &Tokenizer,
        data_dir: &Path,
        settings: NextSentenceSettings,
    ) -> Result<Self, TaskError> {
        let path = if Path::new(&settings.prompts).is_absolute() {
            PathBuf::from(&settings.prompts)
        } else {
            data_dir.join(&settings.prompts)
        };
        let prompts = read_prompts(&path, settings.limit_prompts)?;
        if prompts.len() < 2 {
            return Err(TaskError::Data {
                path,
                message: "need at least two prompts (one for training, one for validation)".into(),
            });
        }
        let termination = sentence_end(tokenizer)?;
        let n_train =
            ((prompts.len() as f64 * settings.train_fraction) as usize).clamp(1, prompts.len() - 1);
        let encode = |(i, p): (usize, &String)| -> Result<Example, TaskError> {
            let ids = tokenizer
                .encode(p, false)
                .map_err(|e| TaskError::Tokenizer(format!("tokenizing prompt {}: {e}", i + 1)))?;
            Ok(Example::prompt_only(format!("line-{}", i + 1), ids))
        };
        let mut train = prompts[..n_train]
            .iter()
            .enumerate()
            .map(encode)
            .collect::<Result<Vec<_>, _>>()?;
        let mut validation = prompts[n_train..]
            .iter()
            .enumerate()
            .map(|(i, p)| encode((i + n_train, p)))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(n) = settings.limit_train {
            train.truncate(n);
        }
        if let Some(n) = settings.limit_validation {
            validation.truncate(n);
        }
        let illegal = illegal_token_ids(tokenizer, termination);
        let allowed = complement(&illegal, tokenizer.vocab_size());
        Ok(Self {
            settings,
            termination,
            illegal,
            allowed,
            tokenizer: tokenizer.clone(),
            train,
            validation,
        })
    }

    /// The prompts of a prompt file (any file in the dataset's format), as examples.
    pub fn examples_from_file(&self, path: &Path) -> Result<Vec<Example>, TaskError> {
        read_prompts(path, usize::MAX)?
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let ids = self.tokenizer.encode(p, false).map_err(|e| {
                    TaskError::Tokenizer(format!("tokenizing prompt {}: {e}", i + 1))
                })?;
                Ok(Example::prompt_only(format!("line-{}", i + 1), ids))
            })
            .collect()
    }

    /// The reward model: LM likelihood with ⊤ = ".", illegal tokens offset by `reward_alpha`
    /// (`penalised`) or not.
    pub fn reward(&self, penalised: bool, vocab: usize) -> LmLikelihood {
        let offsets = penalised.then(|| {
            let mut v = vec![0.0f32; vocab];
            for &t in &self.illegal {
                if (t as usize) < vocab {
                    v[t as usize] = self.settings.reward_alpha;
                }
            }
            v
        });
        LmLikelihood {
            termination: self.termination,
            min_len: self.settings.min_len,
            short_log_reward: self.settings.short_log_reward,
            logit_offsets: offsets,
        }
    }

    /// The text of a sentence (tokens before ⊤).
    pub fn text(&self, tokens: &[u32]) -> String {
        self.tokenizer.decode(tokens).unwrap_or_default()
    }

    /// The tokenizer the task was built with.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Scores sentences of one prompt under the base model: unpenalised and penalised
    /// log p_base(Z "." | X) of the full sentence (the last entry of the per-prefix rewards).
    pub fn score_sentences(
        &self,
        base: &dyn LanguageModel,
        prompt: &[u32],
        sentences: &[Vec<u32>],
        device: &Device,
    ) -> SentenceScores {
        let vocab = base.vocab_size();
        let last = |rs: Vec<Vec<f64>>| -> Vec<f64> {
            rs.into_iter()
                .map(|r| *r.last().expect("a reward per state"))
                .collect()
        };
        SentenceScores {
            log_p: last(
                self.reward(false, vocab)
                    .log_rewards(base, prompt, sentences, device),
            ),
            log_p_penalised: last(
                self.reward(true, vocab)
                    .log_rewards(base, prompt, sentences, device),
            ),
        }
    }
}

/// Full-sentence scores of a set of sentences.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceScores {
    /// log p_base(Z "." | X), no penalties (empty sentences still get `short_log_reward`).
    pub log_p: Vec<f64>,
    /// The training reward: illegal tokens offset in the base model's logits.
    pub log_p_penalised: Vec<f64>,
}

/// The token of "." as it ends a sentence: the last id of `"A sentence."`.
pub fn sentence_end(tokenizer: &Tokenizer) -> Result<u32, TaskError> {
    tokenizer
        .encode("A sentence.", false)
        .ok()
        .and_then(|ids| ids.last().copied())
        .filter(|&id| tokenizer.decode(&[id]).map(|t| t == ".").unwrap_or(false))
        .ok_or_else(|| {
            TaskError::Tokenizer(
                "the tokenizer has no single token \".\" ending \"A sentence.\": next-sentence needs one"
                    .into(),
            )
        })
}

fn complement(sorted_ids: &[u32], vocab: usize) -> Vec<u32> {
    let banned: std::collections::HashSet<u32> = sorted_ids.iter().copied().collect();
    (0..vocab as u32).filter(|t| !banned.contains(t)).collect()
}

impl Task for NextSentenceTask {
    fn name(&self) -> &str {
        "next-sentence"
    }

    fn examples(&self, split: Split) -> &[Example] {
        match split {
            Split::Train => &self.train,
            Split::Validation | Split::Test => &self.validation,
        }
    }

    fn constraint(&self, _example: &Example) -> Constraint {
        Constraint {
            termination: self.termination,
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
        let sentences: Vec<Vec<u32>> = trajectories.iter().map(|t| t.tokens.clone()).collect();
        self.reward(true, ctx.base.vocab_size()).log_rewards(
            ctx.base,
            &example.prompt,
            &sentences,
            ctx.device,
        )
    }

    fn step_metrics(
        &self,
        example: &Example,
        trajectories: &[Trajectory],
        _log_rewards: &[Vec<f64>],
        ctx: &RewardContext<'_>,
    ) -> BTreeMap<String, f64> {
        let sentences: Vec<Vec<u32>> = trajectories.iter().map(|t| t.tokens.clone()).collect();
        let lp = self
            .score_sentences(ctx.base, &example.prompt, &sentences, ctx.device)
            .log_p;
        let n = lp.len().max(1) as f64;
        BTreeMap::from([
            ("log_p_unpenalised".to_string(), lp.iter().sum::<f64>() / n),
            (
                "max_log_p_unpenalised".to_string(),
                lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            ),
        ])
    }

    fn is_valid(
        &self,
        _example: &Example,
        trajectory: &Trajectory,
        _terminal_log_reward: f64,
    ) -> bool {
        // A sentence that ended with "." (not cut at max_len) and is long enough.
        !trajectory.forced && trajectory.num_actions() >= self.settings.min_len
    }

    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Evaluation, TaskError> {
        let examples = match ctx.data {
            Some(path) => self.examples_from_file(path)?,
            None => self.examples(ctx.split).to_vec(),
        };
        crate::check_context(self, &examples, ctx.model.max_positions())?;
        let n = ctx.samples.unwrap_or(20).max(1);
        // The samples of a prompt (or its beams) are decoded as one batch.
        if n > MAX_SAMPLES_PER_PROMPT {
            return Err(TaskError::Eval(format!(
                "next-sentence decodes the samples of a prompt as one batch: --samples must be \
                 ≤ {MAX_SAMPLES_PER_PROMPT}, got {n}"
            )));
        }
        let mut report = match ctx.method {
            None => evaluate_sampler(self, ctx, &examples, n)?,
            Some(m) => evaluate_method(self, ctx, &examples, n, m)?,
        };
        add_diversity(&mut report, ctx.device)?;
        Ok(report.into_evaluation())
    }
}

/// Most samples (or beams) per prompt an evaluation decodes: they form one batch.
pub const MAX_SAMPLES_PER_PROMPT: usize = 4096;

/// The metrics of one decoding method over a set of prompts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodReport {
    /// Method label.
    pub method: String,
    /// Prompts evaluated.
    pub prompts: usize,
    /// Sentences per prompt.
    pub samples_per_prompt: usize,
    /// Mean over all sentences of log p_base(Z "." | X) (unpenalised).
    pub mean_log_p: f64,
    /// Mean over prompts of the best sentence's log p_base(Z "." | X).
    pub max_log_p: f64,
    /// Mean penalised log-likelihood (the training reward × T_R).
    pub mean_log_p_penalised: f64,
    /// Mean sentence length in tokens ("." excluded).
    pub mean_len: f64,
    /// Fraction of sentences that ended with "." before `max_len`.
    pub ended_frac: f64,
    /// Semantic diversity (1 − mean pairwise cosine, averaged over prompts), when measured.
    pub diversity: Option<f64>,
    /// The encoder of `diversity`.
    pub encoder: Option<String>,
    /// Var(log R − log q(Z⊤)) at behaviour temperature `eval_var_temperature`, for the
    /// evaluated policy (sampling methods only).
    pub log_ratio_var: Option<f64>,
    /// Wall seconds of decoding + scoring.
    pub seconds: f64,
    /// Every prompt's sentences (text), in prompt order.
    pub sentences: Vec<Vec<String>>,
}

impl MethodReport {
    /// The report as a task [`Evaluation`].
    pub fn into_evaluation(self) -> Evaluation {
        let summary = vec![format!(
            "[{}]: {} prompts × {}: mean logP {:.2}  max logP {:.2}  penalised {:.2}  length {:.1}  ended {:.2}  diversity {}  Var(logR−logq) {}  {:.0} s",
            self.method,
            self.prompts,
            self.samples_per_prompt,
            self.mean_log_p,
            self.max_log_p,
            self.mean_log_p_penalised,
            self.mean_len,
            self.ended_frac,
            self.diversity
                .map(|d| format!("{d:.4}"))
                .unwrap_or_else(|| "n/a".into()),
            self.log_ratio_var
                .map(|d| format!("{d:.2}"))
                .unwrap_or_else(|| "n/a".into()),
            self.seconds
        )];
        let markdown = format!(
            "| method | mean logP | max logP | diversity ({}) | length | samples/prompt | wall time |\n|---|---|---|---|---|---|---|\n{}\n",
            self.encoder.as_deref().unwrap_or("no encoder"),
            self.markdown_row()
        );
        Evaluation {
            metrics: serde_json::to_value(&self).expect("report serialises"),
            summary,
            markdown,
        }
    }

    /// One markdown table row.
    pub fn markdown_row(&self) -> String {
        format!(
            "| {} | {:.2} | {:.2} | {} | {:.1} | {} | {:.0} s |",
            self.method,
            self.mean_log_p,
            self.max_log_p,
            self.diversity
                .map(|d| format!("{d:.4}"))
                .unwrap_or_else(|| "n/a".into()),
            self.mean_len,
            self.samples_per_prompt,
            self.seconds
        )
    }
}

/// Scores per-prompt sentences and summarises them (diversity is added by the caller that
/// has an encoder).
pub fn report_sentences(
    task: &NextSentenceTask,
    method: &str,
    base: &dyn LanguageModel,
    examples: &[Example],
    sentences: &[Vec<Vec<u32>>],
    device: &Device,
) -> MethodReport {
    let t0 = Instant::now();
    let (mut all, mut pen, mut best, mut lens, mut ended) = (0.0, 0.0, 0.0, 0.0, 0usize);
    let mut count = 0usize;
    for (ex, s) in examples.iter().zip(sentences) {
        let scores = task.score_sentences(base, &ex.prompt, s, device);
        all += scores.log_p.iter().sum::<f64>();
        pen += scores.log_p_penalised.iter().sum::<f64>();
        best += scores
            .log_p
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max);
        lens += s.iter().map(|z| z.len() as f64).sum::<f64>();
        ended += s.iter().filter(|z| z.len() < task.settings.max_len).count();
        count += s.len();
    }
    let c = count.max(1) as f64;
    MethodReport {
        method: method.to_string(),
        prompts: examples.len(),
        samples_per_prompt: sentences.first().map_or(0, Vec::len),
        mean_log_p: all / c,
        max_log_p: best / examples.len().max(1) as f64,
        mean_log_p_penalised: pen / c,
        mean_len: lens / c,
        ended_frac: ended as f64 / c,
        diversity: None,
        encoder: None,
        log_ratio_var: None,
        seconds: t0.elapsed().as_secs_f64(),
        sentences: sentences
            .iter()
            .map(|s| s.iter().map(|z| task.text(z)).collect())
            .collect(),
    }
}

/// Decodes `n` sentences per prompt with `method` (on `ctx.model`, under the task's
/// constraint) and scores them.
pub fn evaluate_method(
    task: &NextSentenceTask,
    ctx: &EvalContext<'_>,
    examples: &[Example],
    n: usize,
    method: &DecodeMethod,
) -> Result<MethodReport, TaskError> {
    method
        .check(n)
        .map_err(|e| TaskError::Config(format!("--method: {e}")))?;
    let t0 = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
    let sentences: Vec<Vec<Vec<u32>>> = examples
        .iter()
        .map(|ex| {
            decode(
                ctx.model,
                &ex.prompt,
                n,
                method,
                &task.constraint(ex),
                &mut rng,
                ctx.device,
            )
        })
        .collect();
    let mut report = report_sentences(
        task,
        &method.label_for(n),
        ctx.base,
        examples,
        &sentences,
        ctx.device,
    );
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Adds the semantic diversity of every prompt's sentences (mean over prompts) with the
/// all-MiniLM-L6-v2 encoder (fetched and cached on first use).
pub fn add_diversity(report: &mut MethodReport, device: &Device) -> Result<(), TaskError> {
    let t0 = Instant::now();
    let dir = gfnlm_fetch::ensure_minilm()
        .map_err(|e| TaskError::Eval(format!("the sentence encoder for diversity: {e}")))?;
    let encoder = gfnlm_embed::SentenceEncoder::load(&dir, device)
        .map_err(|e| TaskError::Eval(format!("the sentence encoder for diversity: {e}")))?;
    let mut total = 0.0;
    for s in &report.sentences {
        let e = encoder
            .embed(s)
            .map_err(|e| TaskError::Eval(format!("embedding sentences: {e}")))?;
        total += gfnlm_embed::semantic_diversity(&e);
    }
    report.diversity = Some(total / report.sentences.len().max(1) as f64);
    report.encoder = Some(encoder.name().to_string());
    report.seconds += t0.elapsed().as_secs_f64();
    Ok(())
}

/// Evaluates the model as the trained sampler runs it (T = 1 under the task's constraint):
/// `n` sentences per prompt, their base log-likelihoods, and Var(log R − log q) at the
/// diagnostic temperature.
pub fn evaluate_sampler(
    task: &NextSentenceTask,
    ctx: &EvalContext<'_>,
    examples: &[Example],
    n: usize,
) -> Result<MethodReport, TaskError> {
    let t0 = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
    let mut sentences = Vec::with_capacity(examples.len());
    let mut ratios = Vec::new();
    for ex in examples {
        let constraint = task.constraint(ex);
        let draws = sample_trajectories(
            ctx.model,
            &ex.prompt,
            n,
            &constraint,
            Behaviour::ON_POLICY,
            None,
            &mut rng,
            ctx.device,
        );
        sentences.push(draws.into_iter().map(|t| t.tokens).collect::<Vec<_>>());
        // Var(log R − log q(Z⊤)) on trajectories drawn at the diagnostic temperature.
        let tempered = Behaviour {
            temperature: task.settings.eval_var_temperature,
            epsilon: 0.0,
        };
        let trajs = sample_trajectories(
            ctx.model,
            &ex.prompt,
            n,
            &constraint,
            tempered,
            None,
            &mut rng,
            ctx.device,
        );
        let terms = policy_terms(ctx.model, &ex.prompt, &trajs, &constraint, ctx.device);
        let log_q = sequence_log_probs(&terms, &trajs);
        let seqs: Vec<Vec<u32>> = trajs.iter().map(|t| t.tokens.clone()).collect();
        let log_r = task
            .reward(true, ctx.base.vocab_size())
            .log_rewards(ctx.base, &ex.prompt, &seqs, ctx.device);
        let d: Vec<f64> = log_r
            .iter()
            .zip(&log_q)
            .map(|(r, q)| {
                r.last().expect("a reward per state") / task.settings.eval_reward_temperature - q
            })
            .collect();
        let m = d.iter().sum::<f64>() / d.len().max(1) as f64;
        ratios.push(d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / d.len().max(1) as f64);
    }
    let mut report = report_sentences(
        task,
        "policy sample (T = 1)",
        ctx.base,
        examples,
        &sentences,
        ctx.device,
    );
    report.log_ratio_var = Some(ratios.iter().sum::<f64>() / ratios.len().max(1) as f64);
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_bans_what_ends_or_breaks_a_sentence_and_keeps_words() {
        for bad in [
            "\n", "\n\n", "\t", ".", "..", "...", " .", "!", "?", "?\"", "\"", " \"", "“", "http",
            "https", "://", "www", " www", "--", "----", "**", " ==", "__", "##", "~~", "|", "~",
            "^", " Mr", "Mr", "Mrs", " Dr", "US", " US", "A", "J", "\u{FFFD}", "", ".com", "e.g",
        ] {
            assert!(illegal_reason(bad).is_some(), "{bad:?} should be illegal");
        }
        for good in [
            " the", "The", " A", " I", " a", ",", " ,", "'s", " -", "-", ":", ";", " (", ")", "1",
            " 2019", " café", "é", " $", "%", " USA", " Mrs2",
        ] {
            assert_eq!(illegal_reason(good), None, "{good:?} should be legal");
        }
    }

    #[test]
    fn settings_are_checked_and_named() {
        let mut s = NextSentenceSettings::default();
        assert!(s.validate().is_ok());
        s.min_len = 40;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("min_len"), "{e}");
        let s = NextSentenceSettings {
            train_fraction: 1.0,
            ..Default::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("train_fraction")
        );
    }
}
