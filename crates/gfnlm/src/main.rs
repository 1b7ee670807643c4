//! `gfnlm`: sample from and score with a causal LM (the default SmolLM2 model or any GGUF file).

mod embed_cmd;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use clap::{Args, Parser, Subcommand};
use gfnlm_gguf::GgufFile;
use gfnlm_models::decode::Constraint;
use gfnlm_models::generate::{SampleOptions, sample, score};
use gfnlm_models::search::{self, DecodeMethod};
use gfnlm_models::{CausalLm, load_llama_from_gguf, parse_device};
use gfnlm_tasks::{EvalContext, Split, Task, TaskInputs, TaskSection};
use gfnlm_tokenizer::Tokenizer;
use gfnlm_train::{Collective, SingleProcess, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Parser)]
#[command(
    name = "gfnlm",
    version,
    about = "GFlowNet fine-tuning of language models: sample, score, fetch the default model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sample continuations of a prompt (batched, KV cache, shared prompt prefix).
    Sample(SampleArgs),
    /// Per-token log-probabilities of a continuation, their sum, and the top-k next tokens.
    Score(ScoreArgs),
    /// Download and cache the default model (SmolLM2-135M-Instruct, GGUF Q4_1).
    FetchModel,
    /// GFlowNet fine-tuning (LoRA + modified SubTB) on a task; resumable.
    Train(TrainArgs),
    /// Evaluate the base model or a trained adapter on a task.
    Eval(EvalArgs),
    /// List the tasks `train` and `eval` know.
    Tasks,
    /// Sentence embeddings (all-MiniLM-L6-v2 by default; mean-pooled, L2-normalised).
    Embed(embed_cmd::EmbedArgs),
    /// Semantic diversity (1 − mean pairwise cosine of sentence embeddings) of a file's lines.
    Diversity(embed_cmd::DiversityArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// GGUF file or Hugging Face folder (config.json + safetensors + tokenizer.json) to load
    /// (default: the cached SmolLM2-135M-Instruct, fetched on first use).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Compute device: flex | wgpu | tch | tch-cuda[:N] | cuda[:N] (only compiled-in backends).
    #[arg(long, default_value = "flex")]
    device: String,
}

#[derive(Args)]
struct SampleArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text to continue (no BOS is added).
    #[arg(long)]
    prompt: String,
    /// Number of samples.
    #[arg(short = 'n', long = "num-samples", default_value_t = 8)]
    num_samples: usize,
    /// Most new tokens per sample.
    #[arg(long, default_value_t = 20)]
    max_tokens: usize,
    /// Sampling temperature (> 0); with the default `--method ancestral`, a value other than 1
    /// samples tempered.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep sampling past the end-of-sequence token.
    #[arg(long, conflicts_with = "stop")]
    ignore_eos: bool,
    /// Decoding method: greedy | beam | diverse-beam | nucleus | ancestral | tempered (see
    /// docs/models.md, "Decoding methods").
    #[arg(long, default_value = "ancestral")]
    method: String,
    /// Beam width of beam and diverse-beam (default: 5 × --num-samples).
    #[arg(long)]
    beams: Option<usize>,
    /// Groups of diverse-beam (default: --num-samples when it divides --beams, else 1);
    /// diversity penalty 1.
    #[arg(long)]
    groups: Option<usize>,
    /// Probability mass kept by nucleus sampling.
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// A sequence ends at this text, which must be one token, e.g. "." (default: the
    /// end-of-sequence token). The stop token is not part of the output.
    #[arg(long)]
    stop: Option<String>,
    /// PEFT LoRA adapter folder to apply to the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Print JSON: {"method": label, "samples": [{"text", "tokens"}]}.
    #[arg(long)]
    json: bool,
    /// Sample as this task's policy: its constraint (allowed tokens, ⊤, min/max length, which
    /// replace --max-tokens and --stop) and, with `--tool on`, its tool (e.g. arithmetic's
    /// calculator). Tool output is shown in ⟦ ⟧.
    #[arg(long, conflicts_with_all = ["stop", "ignore_eos", "beams", "groups"])]
    task: Option<String>,
    /// A training config whose `[task]` configures --task.
    #[arg(long, requires = "task")]
    config: Option<PathBuf>,
    /// Run the task's tool after each action: on | off.
    #[arg(long, default_value = "on", value_parser = ["on", "off"], requires = "task")]
    tool: String,
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Conditioning text (no BOS is added).
    #[arg(long)]
    prompt: String,
    /// Text whose tokens are scored after the prompt.
    #[arg(long)]
    continuation: String,
    /// How many next-token alternatives to list per position.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TaskArgs {
    /// Task (`gfnlm tasks` lists them; default: the config's `[task] name`, else rng).
    #[arg(long)]
    task: Option<String>,
    /// TOML config (defaults for every missing key; see docs/training.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Folder of the datasets (default: $GFNLM_DATA_DIR, else the repository's datasets/).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    task: TaskArgs,
    /// Output folder: metrics.jsonl, checkpoints, the final adapter (default: results/TASK/run).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from the newest checkpoint in --out that verifies (damaged newer ones are
    /// skipped, saying so); starts fresh only if --out holds no checkpoint at all.
    #[arg(long)]
    resume: bool,
    /// Start from step 0 although --out holds checkpoints: they (and metrics.jsonl) are moved
    /// aside to `checkpoints.before-restart-TIME` (and `metrics.jsonl.before-restart-TIME`).
    #[arg(long, conflicts_with = "resume")]
    restart: bool,
    /// Override the number of optimizer steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Override the config's `precision` (storage dtype of the frozen weights: f32, bf16, f16).
    #[arg(long)]
    precision: Option<gfnlm_models::WeightPrecision>,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    task: TaskArgs,
    /// PEFT adapter folder to evaluate (default: the base model).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Split to evaluate on.
    #[arg(long, default_value = "validation", value_parser = parse_split)]
    split: Split,
    /// Samples to draw where the evaluation samples (default: the task's; rng 2000,
    /// next-sentence 20 per prompt); 0 gives the exact figures only where a task has them (rng).
    #[arg(long)]
    samples: Option<usize>,
    /// Evaluate on this data file (in the task's dataset format, e.g. a prompt file for
    /// next-sentence) instead of --split.
    #[arg(long, alias = "prompts")]
    data: Option<PathBuf>,
    /// Decode with this method instead of sampling the model (tasks that generate, e.g.
    /// next-sentence): greedy | beam | diverse-beam | nucleus | ancestral | tempered.
    #[arg(long)]
    method: Option<String>,
    /// Beam width of beam / diverse-beam (default: the number of samples n).
    #[arg(long)]
    beams: Option<usize>,
    /// Groups of diverse-beam (default: n).
    #[arg(long)]
    groups: Option<usize>,
    /// p of nucleus sampling.
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// Temperature of tempered sampling.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the evaluation as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the task's markdown table of the results to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// Most sequences one `gfnlm sample` call decodes (`-n`), and most beams: they are decoded as
/// one batch, `n × vocab` logits a step.
const MAX_SAMPLES: usize = 4096;
/// Most beams of beam and diverse-beam search (`--beams`), same reason.
const MAX_BEAMS: usize = 4096;
/// Most samples `gfnlm eval --samples` draws (evaluations decode them in chunks or per prompt).
const MAX_EVAL_SAMPLES: usize = 100_000;
/// Longest `--prompt`, `--continuation` or `--stop` text, in bytes, before tokenising; the
/// model's context length bounds the tokens after that.
const MAX_TEXT_BYTES: usize = 1 << 20;

/// Refuses a size flag outside `1..=max` (or `0..=max` when `zero_ok`), naming the flag.
fn check_flag(flag: &str, v: usize, max: usize, zero_ok: bool) -> Result<()> {
    if (v == 0 && !zero_ok) || v > max {
        bail!(
            "{flag} must be in {}..={max}, got {v}",
            if zero_ok { 0 } else { 1 }
        );
    }
    Ok(())
}

/// Refuses a text flag longer than [`MAX_TEXT_BYTES`].
fn check_text(flag: &str, text: &str) -> Result<()> {
    if text.len() > MAX_TEXT_BYTES {
        bail!(
            "{flag} is {} bytes; gfnlm takes at most {MAX_TEXT_BYTES} (the model's context is \
             far shorter)",
            text.len()
        );
    }
    Ok(())
}

struct Loaded {
    model: CausalLm,
    tokenizer: Tokenizer,
    device: Device,
}

fn load(args: &ModelArgs) -> Result<Loaded> {
    let device = parse_device(&args.device).map_err(anyhow::Error::msg)?;
    let path = match &args.model {
        Some(p) => p.clone(),
        None => gfnlm_fetch::ensure_default_model()?,
    };
    let t0 = Instant::now();
    let (model, tokenizer) = if path.is_dir() {
        let tok_path = path.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path).with_context(|| {
            format!(
                "loading {} (HF folders need a tokenizer.json)",
                tok_path.display()
            )
        })?;
        let (model, _) = CausalLm::load(&path, &device)?;
        (model, tokenizer)
    } else {
        let gguf = GgufFile::open(&path)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)
            .with_context(|| format!("building the tokenizer from {}", path.display()))?;
        let (model, _) = load_llama_from_gguf(&gguf, &device)?;
        (CausalLm::Llama(model), tokenizer)
    };
    if tokenizer.vocab_size() > model.vocab_size() {
        bail!(
            "{}: the tokenizer has {} tokens but the embedding has only {} rows",
            path.display(),
            tokenizer.vocab_size(),
            model.vocab_size()
        );
    }
    eprintln!(
        "gfnlm: loaded {} ({:?}, {} layers) on {:?} in {:.2}s",
        path.display(),
        model.architecture(),
        model.num_layers(),
        device,
        t0.elapsed().as_secs_f64()
    );
    Ok(Loaded {
        model,
        tokenizer,
        device,
    })
}

fn run_sample(args: SampleArgs) -> Result<()> {
    if !(args.temperature > 0.0 && args.temperature.is_finite()) {
        bail!(
            "--temperature must be a positive number, got {}",
            args.temperature
        );
    }
    let n = args.num_samples;
    check_flag("-n/--num-samples", n, MAX_SAMPLES, true)?;
    check_text("--prompt", &args.prompt)?;
    if let Some(stop) = &args.stop {
        check_text("--stop", stop)?;
    }
    let beams = args.beams.unwrap_or(5 * n.max(1));
    if matches!(args.method.as_str(), "beam" | "diverse-beam") {
        check_flag("--beams (default 5 × -n)", beams, MAX_BEAMS, false)?;
    }
    let groups = args.groups.unwrap_or(if n > 0 && beams.is_multiple_of(n) {
        n
    } else {
        1
    });
    let mut method = DecodeMethod::parse(&args.method, beams, groups, args.top_p, args.temperature)
        .map_err(|e| anyhow::anyhow!("--method: {e}"))?;
    if method == DecodeMethod::Ancestral && args.temperature != 1.0 {
        method = DecodeMethod::Tempered {
            temperature: args.temperature,
        };
    }
    method.check(n).map_err(anyhow::Error::msg)?;
    let Loaded {
        mut model,
        tokenizer,
        device,
    } = load(&args.model)?;
    if let Some(dir) = &args.adapter {
        let lc = gfnlm_lora::load_peft(&mut model, dir, &device)?;
        eprintln!(
            "gfnlm: adapter {} (r = {}, α = {})",
            dir.display(),
            lc.r,
            lc.alpha
        );
    }
    let prompt = tokenizer.encode(&args.prompt, false)?;
    if prompt.is_empty() {
        bail!("--prompt must not be empty");
    }
    if args.task.is_some() {
        return sample_task(&args, &model, &tokenizer, &prompt, &device);
    }
    model.check_context(prompt.len(), args.max_tokens, "--max-tokens")?;
    let stop = match &args.stop {
        Some(text) => match tokenizer.encode(text, false)?.as_slice() {
            [t] => Some(*t),
            toks => bail!(
                "--stop {text:?} must be one token, it is {} tokens",
                toks.len()
            ),
        },
        None if args.ignore_eos => None,
        None => tokenizer.eos_id(),
    };
    let t0 = Instant::now();
    let sampling = matches!(
        method,
        DecodeMethod::Ancestral | DecodeMethod::Tempered { .. }
    );
    if sampling && !args.json {
        // The original output: each sample with its log-probability (stop token included).
        let opts = SampleOptions {
            num_samples: n,
            max_new_tokens: args.max_tokens,
            temperature: args.temperature,
            seed: args.seed,
            stop_token: stop,
        };
        let samples = sample(&model, &prompt, &opts, &device);
        let secs = t0.elapsed().as_secs_f64();
        let n_tokens: usize = samples.iter().map(|s| s.tokens.len()).sum();
        for (i, s) in samples.iter().enumerate() {
            let text = tokenizer.decode(&s.tokens)?;
            println!(
                "[{i}] logp={:>9.3}  {:?}",
                s.logprob(),
                format!("{}{}", args.prompt, text)
            );
        }
        eprintln!(
            "gfnlm: {n_tokens} tokens in {secs:.2}s ({:.1} tok/s, batch {n})",
            n_tokens as f64 / secs,
        );
        return Ok(());
    }
    // No stop token: an id no vocabulary has.
    let constraint = Constraint::unconstrained(stop.unwrap_or(u32::MAX), args.max_tokens);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let seqs = search::decode(&model, &prompt, n, &method, &constraint, &mut rng, &device);
    let secs = t0.elapsed().as_secs_f64();
    let texts = seqs
        .iter()
        .map(|s| tokenizer.decode(s))
        .collect::<Result<Vec<_>, _>>()?;
    if args.json {
        let samples: Vec<_> = seqs
            .iter()
            .zip(&texts)
            .map(|(s, t)| serde_json::json!({"text": t, "tokens": s}))
            .collect();
        let out = serde_json::json!({"method": method.label(), "samples": samples});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (i, t) in texts.iter().enumerate() {
            println!("[{i}] {:?}", format!("{}{}", args.prompt, t));
        }
    }
    eprintln!(
        "gfnlm: {} — {n} sequences, {} tokens in {secs:.2}s",
        method.label(),
        seqs.iter().map(Vec::len).sum::<usize>()
    );
    Ok(())
}

/// `gfnlm sample --task T [--config C] [--tool on|off]`: samples the task's policy under its
/// constraint (ancestral or tempered), with its tool, and marks tool output.
fn sample_task(
    args: &SampleArgs,
    model: &CausalLm,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    device: &Device,
) -> Result<()> {
    if !matches!(args.method.as_str(), "ancestral" | "tempered") {
        bail!(
            "--task samples the policy (--method ancestral or tempered), not '{}'",
            args.method
        );
    }
    let task_args = TaskArgs {
        task: args.task.clone(),
        config: args.config.clone(),
        data_dir: None,
    };
    let cfg = load_config(&task_args)?;
    let task = build_task(&cfg, &task_args, tokenizer)?;
    let example = gfnlm_tasks::Example::prompt_only("cli", prompt.to_vec());
    let constraint = task.constraint(&example);
    model.check_context(prompt.len(), constraint.max_len, "the task's max_len")?;
    let tool = if args.tool == "on" { task.tool() } else { None };
    if args.tool == "on" && tool.is_none() {
        eprintln!("gfnlm: task '{}' has no tool", task.name());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let behaviour = gfnlm_models::decode::Behaviour {
        temperature: args.temperature,
        epsilon: 0.0,
    };
    let t0 = Instant::now();
    let trajectories = gfnlm_models::decode::sample_trajectories(
        model,
        prompt,
        args.num_samples,
        &constraint,
        behaviour,
        tool,
        &mut rng,
        device,
    );
    let secs = t0.elapsed().as_secs_f64();
    let mut samples = Vec::new();
    for (i, t) in trajectories.iter().enumerate() {
        // Runs of action tokens as they are, runs of tool tokens in ⟦ ⟧.
        let mut marked = String::new();
        let mut start = 0;
        while start < t.tokens.len() {
            let from_tool = !t.is_action(start);
            let end = (start..t.tokens.len())
                .find(|&k| t.is_action(k) == from_tool)
                .unwrap_or(t.tokens.len());
            let text = tokenizer.decode(&t.tokens[start..end])?;
            if from_tool {
                marked.push_str(&format!("⟦{text}⟧"));
            } else {
                marked.push_str(&text);
            }
            start = end;
        }
        if args.json {
            samples.push(serde_json::json!({
                "text": tokenizer.decode(&t.tokens)?,
                "marked": marked,
                "tokens": t.tokens,
                "tool": (0..t.tokens.len()).map(|k| !t.is_action(k)).collect::<Vec<_>>(),
                "tool_calls": t.tool_calls(),
                "forced_stop": t.forced,
            }));
        } else {
            println!("[{i}] {:?}", format!("{}{marked}", args.prompt));
        }
    }
    if args.json {
        let out = serde_json::json!({"task": task.name(), "tool": args.tool, "samples": samples});
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    eprintln!(
        "gfnlm: task {} — {} samples, {} tool calls, in {secs:.2}s",
        task.name(),
        trajectories.len(),
        trajectories.iter().map(|t| t.tool_calls()).sum::<usize>()
    );
    Ok(())
}

fn run_score(args: ScoreArgs) -> Result<()> {
    check_text("--prompt", &args.prompt)?;
    check_text("--continuation", &args.continuation)?;
    let l = load(&args.model)?;
    let prompt = l.tokenizer.encode(&args.prompt, false)?;
    if prompt.is_empty() {
        bail!("--prompt must not be empty");
    }
    let cont = l.tokenizer.encode(&args.continuation, false)?;
    l.model
        .check_context(prompt.len(), cont.len(), "the --continuation")?;
    let s = score(&l.model, &prompt, &cont, args.top_k, &l.device);
    let tok = |id: u32| l.tokenizer.id_to_token(id).unwrap_or_default();
    if args.json {
        let tokens: Vec<_> = cont
            .iter()
            .zip(&s.token_logprobs)
            .map(|(&id, &lp)| serde_json::json!({"id": id, "token": tok(id), "logprob": lp}))
            .collect();
        let top: Vec<Vec<_>> = s
            .top_next
            .iter()
            .map(|row| {
                row.iter()
                    .map(|&(id, lp)| serde_json::json!({"id": id, "token": tok(id), "logprob": lp}))
                    .collect()
            })
            .collect();
        let out = serde_json::json!({
            "prompt_ids": prompt,
            "continuation_ids": cont,
            "tokens": tokens,
            "logprob_sum": s.total(),
            "top_next": top,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{:>4}  {:>8}  {:<20} top-{} next",
            "pos", "logprob", "token", args.top_k
        );
        for (i, row) in s.top_next.iter().enumerate() {
            let (id, lp) = match cont.get(i) {
                Some(&id) => (tok(id), format!("{:.4}", s.token_logprobs[i])),
                None => ("<end>".to_string(), String::new()),
            };
            let alts: Vec<String> = row
                .iter()
                .map(|&(t, lp)| format!("{:?} {:.3}", tok(t), lp))
                .collect();
            println!(
                "{i:>4}  {lp:>8}  {:<20} {}",
                format!("{id:?}"),
                alts.join(", ")
            );
        }
        println!("sum log p(continuation | prompt) = {:.4}", s.total());
    }
    Ok(())
}

fn parse_split(s: &str) -> Result<Split, String> {
    match s {
        "train" => Ok(Split::Train),
        "validation" => Ok(Split::Validation),
        "test" => Ok(Split::Test),
        other => Err(format!("unknown split '{other}' (train, validation, test)")),
    }
}

/// The config of a run: `--config` (its `[task]` must agree with `--task`), else the defaults
/// with `[task] name = --task`.
fn load_config(args: &TaskArgs) -> Result<TrainConfig> {
    let mut cfg = match &args.config {
        Some(p) => TrainConfig::from_file(p).map_err(anyhow::Error::msg)?,
        None => TrainConfig::default(),
    };
    match (&args.task, &args.config) {
        (Some(t), Some(p)) if *t != cfg.task.name => bail!(
            "--task {t} but {} configures task '{}': drop --task or pass that task's config",
            p.display(),
            cfg.task.name
        ),
        (Some(t), None) => {
            cfg.task = TaskSection::named(t);
            cfg.validate().map_err(anyhow::Error::msg)?;
        }
        _ => {}
    }
    Ok(cfg)
}

/// Builds the config's task through the registry.
fn build_task(cfg: &TrainConfig, args: &TaskArgs, tokenizer: &Tokenizer) -> Result<Box<dyn Task>> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(gfnlm_tasks::default_data_dir);
    let inputs = TaskInputs {
        tokenizer,
        data_dir: &data_dir,
    };
    Ok(gfnlm_tasks::from_config(&cfg.task, &inputs)?)
}

/// The collective of this process: MPI when an MPI launcher started it (and MPI is compiled
/// in), else one process.
fn collective() -> Result<Rc<dyn Collective>> {
    let announced = gfnlm_train::collective::launcher_world_size();
    #[cfg(feature = "mpi")]
    if announced.is_some() {
        let c = gfnlm_train::collective::mpi::MpiCollective::init().map_err(anyhow::Error::msg)?;
        return Ok(Rc::new(c));
    }
    #[cfg(not(feature = "mpi"))]
    match announced {
        Some(1) | None => {}
        Some(n) => bail!(
            "{}, but this gfnlm was built without MPI: build it with `cargo build --release -p \
             gfnlm --features mpi` (after `cargo xtask setup-backend mpi`), or run one process \
             without mpirun",
            if n == 0 {
                "GFNLM_MPI=1 asks for MPI".to_string()
            } else {
                format!("started as one of {n} MPI ranks")
            }
        ),
    }
    Ok(Rc::new(SingleProcess))
}

/// `gfnlm train`: in a data-parallel run (under `mpirun`) an error on any rank stops every rank
/// (MPI_Abort) instead of leaving the others waiting in a collective.
fn run_train(args: TrainArgs) -> Result<()> {
    let collective = collective()?;
    let result = train_ranked(args, collective.clone());
    if let Err(e) = &result
        && collective.size() > 1
    {
        eprintln!(
            "gfnlm (rank {} of {}): error: {e:#}\ngfnlm: stopping every rank of the job",
            collective.rank(),
            collective.size()
        );
        collective.abort(1);
    }
    result
}

fn train_ranked(args: TrainArgs, collective: Rc<dyn Collective>) -> Result<()> {
    let (rank, world) = (collective.rank(), collective.size());
    let lead = rank == 0;
    let mut cfg = load_config(&args.task)?;
    if let Some(s) = args.steps {
        cfg.steps = s;
    }
    if let Some(p) = args.precision {
        cfg.precision = p;
    }
    if args.steps == Some(0) {
        bail!("--steps must be ≥ 1 (0 would write an untrained adapter)");
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("results/{}/run", cfg.task.name)));
    // One trainer per folder: the lock is taken before anything is loaded or written, and
    // held until the process ends (by rank 0, the only writer, in a data-parallel run).
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let _lock = if lead {
        let (lock, stale) = gfnlm_train::RunLock::acquire(&out).map_err(anyhow::Error::msg)?;
        if let Some(note) = stale {
            eprintln!("gfnlm: {note}");
        }
        Some(lock)
    } else {
        None
    };
    let ckpt_dir = out.join("checkpoints");
    let metrics_path = out.join("metrics.jsonl");
    let held = gfnlm_train::trainer::checkpoint_folders(&ckpt_dir);
    if !held.is_empty() && !args.resume && !args.restart {
        bail!(
            "{} already holds checkpoints (newest: {}): pass --resume to continue that run, \
             --restart to start over (the old checkpoints are moved aside), or choose another --out",
            ckpt_dir.display(),
            held[0].1.display()
        );
    }
    let mut l = load(&args.model)?;
    merge_base_adapter(&cfg, &mut l.model, &l.device)?;
    let task = build_task(&cfg, &args.task, &l.tokenizer)?;
    let device = l.device.autodiff();
    let model = l.model.to_device(&device);
    let update = gfnlm_train::update_from_config(&cfg);
    let mut trainer = Trainer::new(cfg.clone(), model, task, update, device)?;
    trainer.set_collective(collective.clone())?;
    if world > 1 && lead {
        eprintln!(
            "gfnlm: data-parallel over {world} ranks (MPI): each samples {} × {} trajectories a \
             step, {} in all; gradients are averaged over the ranks; rank 0 writes {}",
            cfg.grad_accum,
            cfg.batch_size,
            world * cfg.grad_accum * cfg.batch_size,
            out.display()
        );
    }
    if args.restart && lead && ckpt_dir.exists() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for from in [&ckpt_dir, &metrics_path] {
            if from.exists() {
                let mut to = from.clone().into_os_string();
                to.push(format!(".before-restart-{secs}"));
                std::fs::rename(from, &to)
                    .with_context(|| format!("moving {} aside", from.display()))?;
                eprintln!(
                    "gfnlm: --restart: moved {} to {}",
                    from.display(),
                    PathBuf::from(&to).display()
                );
            }
        }
    }
    if args.resume {
        let said = trainer.resume_latest(&ckpt_dir);
        if !lead {
            said?;
        } else {
            match said {
                Ok(Some(r)) => {
                    for (ckpt, why) in &r.skipped {
                        eprintln!("gfnlm: skipping checkpoint {}: {why}", ckpt.display());
                    }
                    if let Some(note) = &r.latest {
                        eprintln!("gfnlm: {note}");
                    }
                    if r.verification == gfnlm_train::trainer::Verification::Unverified {
                        eprintln!(
                            "gfnlm: {} has no manifest.json (written by an older gfnlm): loaded without checking its files",
                            r.checkpoint.display()
                        );
                    }
                    eprintln!(
                        "gfnlm: resumed from {} (step {})",
                        r.checkpoint.display(),
                        trainer.step
                    );
                }
                Ok(None) => eprintln!(
                    "gfnlm: --resume: no checkpoint in {}, starting fresh",
                    ckpt_dir.display()
                ),
                Err(e @ gfnlm_train::TrainError::Checkpoint { .. }) => bail!(
                    "{e}\npass --restart (instead of --resume) to start from step 0; the checkpoints are moved aside, not deleted"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        trainer.check_ranks_at_same_step()?;
    }
    if !lead {
        // Ranks 1.. train and take part in every collective; rank 0 writes.
        while trainer.step < cfg.steps {
            let stats = trainer.train_step(&out)?;
            if checkpoint_due(&cfg, stats.step) {
                trainer.save_checkpoint(&ckpt_dir)?;
            }
        }
        return Ok(());
    }
    // Records past the checkpoint (written after it by a run that was then killed) are dropped.
    let mut metrics = gfnlm_train::MetricsLog::open(&metrics_path, trainer.step)
        .with_context(|| format!("opening {}", metrics_path.display()))?;
    eprintln!(
        "gfnlm: task {} ({} training example{}), update {}; training {} LoRA parameters (of {}) for {} steps; metrics → {}",
        trainer.task.name(),
        trainer.task.examples(Split::Train).len(),
        if trainer.task.examples(Split::Train).len() == 1 {
            ""
        } else {
            "s"
        },
        trainer.update.name(),
        gfnlm_lora::trainable_parameter_count(&trainer.model),
        gfnlm_lora::total_parameter_count(&trainer.model),
        cfg.steps,
        metrics_path.display()
    );
    let bar = ProgressBar::new(cfg.steps as u64).with_position(trainer.step as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    let t0 = Instant::now();
    while trainer.step < cfg.steps {
        let stats = trainer.train_step(&out)?;
        let mut line = serde_json::to_value(&stats)?;
        line["elapsed_s"] = serde_json::json!(t0.elapsed().as_secs_f64());
        metrics
            .append(&line)
            .with_context(|| format!("writing {}", metrics.path().display()))?;
        bar.set_position(stats.step as u64);
        bar.set_message(format!(
            "loss {:.3e} logR {:.2} valid {:.2} {:.1} tok/s",
            stats.loss,
            stats.mean_log_r,
            stats.valid_frac,
            (stats.mean_len + 1.0) * (world * cfg.batch_size * cfg.grad_accum) as f64
                / stats.seconds
        ));
        if checkpoint_due(&cfg, stats.step) {
            trainer.save_checkpoint(&ckpt_dir)?;
        }
    }
    bar.finish();
    let adapter = out.join("adapter");
    gfnlm_lora::save_peft(
        &trainer.model,
        &gfnlm_train::trainer::lora_config(&cfg),
        &adapter,
    )?;
    eprintln!("gfnlm: adapter written to {}", adapter.display());
    Ok(())
}

/// Whether a checkpoint is written after `step`: every `checkpoint_every` steps and at the end
/// (every rank of a data-parallel run takes part in each).
fn checkpoint_due(cfg: &TrainConfig, step: usize) -> bool {
    step.is_multiple_of(cfg.checkpoint_every.max(1)) || step == cfg.steps
}

/// Folds the config's `base_adapter` (if any) into the loaded weights.
fn merge_base_adapter(cfg: &TrainConfig, model: &mut CausalLm, device: &Device) -> Result<()> {
    if let Some(dir) = &cfg.base_adapter {
        let lc =
            gfnlm_train::merge_base_adapter(model, Path::new(dir), device).with_context(|| {
                format!(
                    "base_adapter = \"{dir}\" (a PEFT adapter folder, merged into the base weights)"
                )
            })?;
        eprintln!(
            "gfnlm: base adapter {dir} merged into the weights (r = {}, α = {})",
            lc.r, lc.alpha
        );
    }
    Ok(())
}

fn run_eval(args: EvalArgs) -> Result<()> {
    let cfg = load_config(&args.task)?;
    if let Some(n) = args.samples {
        // 0 is allowed: the exact figures only, without sampling (what `cargo xtask reproduce
        // rng` asks for at every checkpoint).
        check_flag("--samples", n, MAX_EVAL_SAMPLES, true)?;
    }
    for (flag, v) in [("--beams", args.beams), ("--groups", args.groups)] {
        if let Some(v) = v {
            check_flag(flag, v, MAX_BEAMS, false)?;
        }
    }
    let Loaded {
        mut model,
        tokenizer,
        device,
    } = load(&args.model)?;
    merge_base_adapter(&cfg, &mut model, &device)?;
    if let Some(dir) = &args.adapter {
        let lc = gfnlm_lora::load_peft(&mut model, dir, &device)?;
        eprintln!(
            "gfnlm: adapter {} (r = {}, α = {})",
            dir.display(),
            lc.r,
            lc.alpha
        );
    }
    let task = build_task(&cfg, &args.task, &tokenizer)?;
    let mut base = model.clone();
    gfnlm_lora::set_adapters_enabled(&mut base, false);
    let method = match &args.method {
        None => None,
        Some(name) => {
            let n = args.samples.unwrap_or(20);
            if args.beams.is_none() && matches!(name.as_str(), "beam" | "diverse-beam") {
                check_flag("--beams (default --samples)", n, MAX_BEAMS, false)?;
            }
            Some(
                gfnlm_tasks::DecodeMethod::parse(
                    name,
                    args.beams.unwrap_or(n),
                    args.groups.unwrap_or(n),
                    args.top_p,
                    args.temperature,
                )
                .map_err(|e| anyhow::anyhow!("--method: {e}"))?,
            )
        }
    };
    let ctx = EvalContext {
        method: method.as_ref(),
        model: &model,
        base: &base,
        device: &device,
        samples: args.samples,
        data: args.data.as_deref(),
        seed: args.seed,
        split: args.split,
    };
    let e = task.evaluate(&ctx)?;
    let name = if args.adapter.is_some() {
        "tuned"
    } else {
        "base"
    };
    for line in &e.summary {
        println!("{name} {line}");
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&e.metrics)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.markdown {
        std::fs::write(p, &e.markdown).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn run_tasks() {
    for r in gfnlm_tasks::REGISTRY {
        println!("{:<16} {}", r.name, r.about);
    }
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Sample(a) => run_sample(a),
        Command::Score(a) => run_score(a),
        Command::Train(a) => run_train(a),
        Command::Eval(a) => run_eval(a),
        Command::Embed(a) => embed_cmd::run_embed(a),
        Command::Diversity(a) => embed_cmd::run_diversity(a),
        Command::Tasks => {
            run_tasks();
            Ok(())
        }
        Command::FetchModel => {
            let p = gfnlm_fetch::ensure_default_model()?;
            println!("{}", p.display());
            Ok(())
        }
    }
}
