//! `gfnlm`: sample from and score with a causal LM (the default SmolLM2 model or any GGUF file).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use clap::{Args, Parser, Subcommand};
use gfnlm_gguf::GgufFile;
use gfnlm_models::generate::{SampleOptions, sample, score};
use gfnlm_models::{CausalLm, LlamaForCausalLm, load_llama_from_gguf, parse_device};
use gfnlm_tasks::RngTask;
use gfnlm_tokenizer::Tokenizer;
use gfnlm_train::eval::RngEvaluation;
use gfnlm_train::{TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;

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
    /// Exact and sampled evaluation of the base model or a trained adapter on a task.
    Eval(EvalArgs),
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
    /// Sampling temperature (> 0).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep sampling past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
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
struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Task to train on.
    #[arg(long, default_value = "rng")]
    task: String,
    /// TOML config (defaults for every missing key; see docs/training.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder: metrics.jsonl, checkpoints, the final adapter.
    #[arg(long, default_value = "results/rng/run")]
    out: PathBuf,
    /// Continue from the latest checkpoint in --out.
    #[arg(long)]
    resume: bool,
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
    /// Task to evaluate.
    #[arg(long, default_value = "rng")]
    task: String,
    /// PEFT adapter folder to evaluate (default: the base model).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// TOML config of the run (task settings).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Samples for the empirical histogram.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the evaluation as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Loaded {
    model: CausalLm,
    tokenizer: Tokenizer,
    device: Device,
}

impl Loaded {
    /// The Llama model, for the commands that only support that family so far.
    fn into_llama(self, what: &str) -> Result<(LlamaForCausalLm, Tokenizer, Device)> {
        match self.model {
            CausalLm::Llama(m) => Ok((m, self.tokenizer, self.device)),
            other => bail!(
                "`gfnlm {what}` supports Llama-family models so far; this checkpoint is {:?} \
                 (sample and score work with every architecture)",
                other.architecture()
            ),
        }
    }
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
    let l = load(&args.model)?;
    let prompt = l.tokenizer.encode(&args.prompt, false)?;
    if prompt.is_empty() {
        bail!("--prompt must not be empty");
    }
    let opts = SampleOptions {
        num_samples: args.num_samples,
        max_new_tokens: args.max_tokens,
        temperature: args.temperature,
        seed: args.seed,
        stop_token: if args.ignore_eos {
            None
        } else {
            l.tokenizer.eos_id()
        },
    };
    let t0 = Instant::now();
    let samples = sample(&l.model, &prompt, &opts, &l.device);
    let secs = t0.elapsed().as_secs_f64();
    let n_tokens: usize = samples.iter().map(|s| s.tokens.len()).sum();
    for (i, s) in samples.iter().enumerate() {
        let text = l.tokenizer.decode(&s.tokens)?;
        println!(
            "[{i}] logp={:>9.3}  {:?}",
            s.logprob(),
            format!("{}{}", args.prompt, text)
        );
    }
    eprintln!(
        "gfnlm: {n_tokens} tokens in {secs:.2}s ({:.1} tok/s, batch {})",
        n_tokens as f64 / secs,
        args.num_samples
    );
    Ok(())
}

fn run_score(args: ScoreArgs) -> Result<()> {
    let l = load(&args.model)?;
    let prompt = l.tokenizer.encode(&args.prompt, false)?;
    if prompt.is_empty() {
        bail!("--prompt must not be empty");
    }
    let cont = l.tokenizer.encode(&args.continuation, false)?;
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

fn load_config(path: &Option<PathBuf>) -> Result<TrainConfig> {
    match path {
        Some(p) => TrainConfig::from_file(p).map_err(anyhow::Error::msg),
        None => Ok(TrainConfig::default()),
    }
}

fn check_task(task: &str) -> Result<()> {
    if task != "rng" {
        bail!("unknown task '{task}' (available: rng)");
    }
    Ok(())
}

fn run_train(args: TrainArgs) -> Result<()> {
    check_task(&args.task)?;
    let mut cfg = load_config(&args.config)?;
    if let Some(s) = args.steps {
        cfg.steps = s;
    }
    if let Some(p) = args.precision {
        cfg.precision = p;
    }
    let (model, tokenizer, plain) = load(&args.model)?.into_llama("train")?;
    let device = plain.autodiff();
    let model = model.to_device(&device);
    let task = RngTask::new(&tokenizer, None, cfg.task.invalid_log_reward)?;
    let mut trainer = Trainer::new(cfg.clone(), model, task, device)?;
    let ckpt_dir = args.out.join("checkpoints");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if args.resume {
        match Trainer::latest_checkpoint(&ckpt_dir) {
            Some(c) => {
                trainer.resume(&c)?;
                eprintln!(
                    "gfnlm: resumed from {} (step {})",
                    c.display(),
                    trainer.step
                );
            }
            None => eprintln!(
                "gfnlm: --resume: no checkpoint in {}, starting fresh",
                ckpt_dir.display()
            ),
        }
    } else if Trainer::latest_checkpoint(&ckpt_dir).is_some() {
        bail!(
            "{} already holds checkpoints: pass --resume to continue that run, or choose another --out",
            ckpt_dir.display()
        );
    }
    let metrics_path = args.out.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("opening {}", metrics_path.display()))?;
    let report = gfnlm_lora::trainable_parameter_count(&trainer.model);
    eprintln!(
        "gfnlm: training {} LoRA parameters (of {}) for {} steps; metrics → {}",
        report,
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
        let stats = trainer.train_step(&args.out)?;
        use std::io::Write;
        let mut line = serde_json::to_value(&stats)?;
        line["elapsed_s"] = serde_json::json!(t0.elapsed().as_secs_f64());
        writeln!(metrics, "{line}")?;
        bar.set_position(stats.step as u64);
        bar.set_message(format!(
            "loss {:.3e} logR {:.2} valid {:.2} {:.1} tok/s",
            stats.loss,
            stats.mean_log_r,
            stats.valid_frac,
            (stats.mean_len + 1.0) * (cfg.batch_size * cfg.grad_accum) as f64 / stats.seconds
        ));
        if stats.step % cfg.checkpoint_every.max(1) == 0 || stats.step == cfg.steps {
            trainer.save_checkpoint(&ckpt_dir)?;
        }
    }
    bar.finish();
    let adapter = args.out.join("adapter");
    gfnlm_lora::save_peft(
        &trainer.model,
        &gfnlm_train::trainer::lora_config(&cfg),
        &adapter,
    )?;
    eprintln!("gfnlm: adapter written to {}", adapter.display());
    Ok(())
}

fn print_rng_eval(name: &str, e: &RngEvaluation) {
    for (label, r) in [
        ("constrained sampler", &e.constrained),
        ("unconstrained LM", &e.unconstrained),
    ] {
        println!(
            "{name} [{label}]: valid mass {:.4e}  KL(q||U) {:.4}  KL(U||q) {:.4}  entropy {:.3} (uniform 4.615)  top {:?}",
            r.valid_mass,
            r.kl_q_u,
            r.kl_u_q,
            r.entropy,
            r.top
                .iter()
                .take(3)
                .map(|(k, p)| format!("{k}:{p:.3}"))
                .collect::<Vec<_>>()
        );
    }
    println!(
        "{name} [samples]: {} draws, {:.1}% valid",
        e.samples,
        100.0 * (e.samples - e.invalid_samples) as f64 / e.samples.max(1) as f64
    );
}

fn run_eval(args: EvalArgs) -> Result<()> {
    check_task(&args.task)?;
    let cfg = load_config(&args.config)?;
    let (mut model, tokenizer, device) = load(&args.model)?.into_llama("eval")?;
    if let Some(dir) = &args.adapter {
        let lc = gfnlm_lora::load_peft(&mut model, dir, &device)?;
        eprintln!(
            "gfnlm: adapter {} (r = {}, α = {})",
            dir.display(),
            lc.r,
            lc.alpha
        );
    }
    let task = RngTask::new(&tokenizer, None, cfg.task.invalid_log_reward)?;
    let constraint = task.constraint(cfg.task.vocab_alpha, cfg.task.restrict_vocab);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let e = gfnlm_train::eval::evaluate_rng(
        &model,
        &task,
        &constraint,
        args.samples,
        &mut rng,
        &device,
    );
    print_rng_eval(
        if args.adapter.is_some() {
            "tuned"
        } else {
            "base"
        },
        &e,
    );
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&e)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Sample(a) => run_sample(a),
        Command::Score(a) => run_score(a),
        Command::Train(a) => run_train(a),
        Command::Eval(a) => run_eval(a),
        Command::FetchModel => {
            let p = gfnlm_fetch::ensure_default_model()?;
            println!("{}", p.display());
            Ok(())
        }
    }
}
