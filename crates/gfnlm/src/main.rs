//! `gfnlm`: sample from and score with a causal LM (the default SmolLM2 model or any GGUF file).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, Parser, Subcommand};
use gfnlm_gguf::GgufFile;
use gfnlm_models::generate::{SampleOptions, sample, score};
use gfnlm_models::{LlamaForCausalLm, load_llama_from_gguf, parse_device};
use gfnlm_tokenizer::Tokenizer;

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
}

#[derive(Args)]
struct ModelArgs {
    /// GGUF file to load (default: the cached SmolLM2-135M-Instruct, fetched on first use).
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

struct Loaded {
    model: LlamaForCausalLm,
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
    let gguf = GgufFile::open(&path)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)
        .with_context(|| format!("building the tokenizer from {}", path.display()))?;
    let (model, config) = load_llama_from_gguf(&gguf, &device)?;
    if tokenizer.vocab_size() != config.vocab_size {
        bail!(
            "{}: the tokenizer has {} tokens but the embedding has {} rows",
            path.display(),
            tokenizer.vocab_size(),
            config.vocab_size
        );
    }
    eprintln!(
        "gfnlm: loaded {} ({} layers, hidden {}) on {:?} in {:.2}s",
        path.display(),
        config.num_hidden_layers,
        config.hidden_size,
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

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Sample(a) => run_sample(a),
        Command::Score(a) => run_score(a),
        Command::FetchModel => {
            let p = gfnlm_fetch::ensure_default_model()?;
            println!("{}", p.display());
            Ok(())
        }
    }
}
