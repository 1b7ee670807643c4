//! `gfnlm embed` and `gfnlm diversity`: sentence embeddings (all-MiniLM-L6-v2 by default) and
//! the semantic diversity (1 − mean pairwise cosine similarity) of a set of texts.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use gfnlm_embed::{SentenceEncoder, semantic_diversity};
use gfnlm_models::parse_device;

/// Which encoder to load, and where.
#[derive(Args)]
pub struct EncoderArgs {
    /// Sentence-encoder folder (Hugging Face BERT: config.json, model.safetensors,
    /// tokenizer.json; default: the cached all-MiniLM-L6-v2, fetched on first use).
    #[arg(long)]
    encoder: Option<PathBuf>,
    /// Compute device: flex | wgpu | tch | tch-cuda[:N] | cuda[:N] (only compiled-in backends).
    #[arg(long, default_value = "flex")]
    device: String,
}

/// The texts to embed.
#[derive(Args)]
pub struct TextArgs {
    /// A text (repeat for several).
    #[arg(long = "text")]
    texts: Vec<String>,
    /// A file with one text per line (blank lines are skipped).
    #[arg(long)]
    file: Option<PathBuf>,
}

/// `gfnlm embed`.
#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    encoder: EncoderArgs,
    #[command(flatten)]
    input: TextArgs,
    /// Print JSON `{"encoder": NAME, "embeddings": [[...], ...]}` instead of one line per text.
    #[arg(long)]
    json: bool,
}

/// `gfnlm diversity`.
#[derive(Args)]
pub struct DiversityArgs {
    #[command(flatten)]
    encoder: EncoderArgs,
    #[command(flatten)]
    input: TextArgs,
    /// Print JSON `{"encoder": NAME, "texts": N, "semantic_diversity": D}`.
    #[arg(long)]
    json: bool,
}

impl EncoderArgs {
    fn load(&self) -> Result<SentenceEncoder> {
        let device = parse_device(&self.device).map_err(anyhow::Error::msg)?;
        let dir = match &self.encoder {
            Some(d) => d.clone(),
            None => gfnlm_fetch::ensure_minilm()?,
        };
        Ok(SentenceEncoder::load(&dir, &device)?)
    }
}

impl TextArgs {
    /// The `--text` values, then the file's non-blank lines.
    fn collect(&self) -> Result<Vec<String>> {
        let mut texts = self.texts.clone();
        if let Some(path) = &self.file {
            let content = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            texts.extend(
                content
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string),
            );
        }
        if texts.is_empty() {
            bail!("nothing to embed: pass --text TEXT (repeatable) and/or --file FILE");
        }
        Ok(texts)
    }
}

/// Embeds the texts and prints the vectors.
pub fn run_embed(args: EmbedArgs) -> Result<()> {
    let texts = args.input.collect()?;
    let encoder = args.encoder.load()?;
    let embeddings = encoder.embed(&texts)?;
    if args.json {
        let out = serde_json::json!({
            "encoder": encoder.name(),
            "embeddings": embeddings,
        });
        println!("{out}");
    } else {
        println!(
            "# encoder {}, {} texts, {} dimensions (mean-pooled, L2-normalised)",
            encoder.name(),
            texts.len(),
            encoder.dim()
        );
        for (t, e) in texts.iter().zip(&embeddings) {
            let v: Vec<String> = e.iter().map(|x| format!("{x:.6}")).collect();
            println!("{t:?}\t{}", v.join(" "));
        }
    }
    Ok(())
}

/// Prints the semantic diversity of the texts.
pub fn run_diversity(args: DiversityArgs) -> Result<()> {
    let texts = args.input.collect()?;
    let encoder = args.encoder.load()?;
    let embeddings = encoder.embed(&texts)?;
    let diversity = semantic_diversity(&embeddings);
    if args.json {
        let out = serde_json::json!({
            "encoder": encoder.name(),
            "texts": texts.len(),
            "semantic_diversity": diversity,
        });
        println!("{out}");
    } else {
        println!(
            "semantic diversity {diversity:.6} over {} texts (encoder {}; 1 − mean pairwise cosine)",
            texts.len(),
            encoder.name()
        );
    }
    Ok(())
}
