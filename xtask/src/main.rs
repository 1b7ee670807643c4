//! `cargo xtask <task>`: project chores that are not part of the library API.
//!
//! - `fetch-model`: download, verify and cache the default model (SmolLM2-135M-Instruct GGUF).
//! - `bench [criterion args]`: run the criterion benches in release mode.

use std::process::Command;

use anyhow::{Result, bail};

const USAGE: &str = "usage: cargo xtask <fetch-model | bench [ARGS...]>";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fetch-model") => {
            let path = gfnlm_fetch::ensure_default_model()?;
            let sha = gfnlm_fetch::sha256_file(&path)?;
            if std::env::var_os("GFNLM_MODEL").is_none() && sha != gfnlm_fetch::MODEL_SHA256 {
                bail!(
                    "{}: cached model has SHA-256 {sha}, expected {}; delete it and run again",
                    path.display(),
                    gfnlm_fetch::MODEL_SHA256
                );
            }
            println!("{}", path.display());
            Ok(())
        }
        Some("bench") => {
            let status = Command::new(env!("CARGO"))
                .args(["bench", "--workspace"])
                .args(&args[1..])
                .status()?;
            if !status.success() {
                bail!("cargo bench failed: {status}");
            }
            Ok(())
        }
        Some(other) => bail!("unknown task '{other}'\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
}
