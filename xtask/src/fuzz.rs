//! `cargo xtask fuzz [--seconds N] [--seed S] [--target T]...`: builds the workspace in release
//! (the same feature set as the tests, so burn is not rebuilt) and runs `gfnlm-fuzz`, which
//! fuzzes the file readers and saves failing inputs under `crates/gfnlm-fuzz/crashes/`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Builds the release binaries and runs the fuzzer with `args`; fails when it found a bad case.
pub fn run(args: &[String]) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--workspace"])
        .current_dir(&root)
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("cargo build --release --workspace failed: {status}");
    }
    let exe = crate::target_dir().join("release/gfnlm-fuzz");
    let status = Command::new(&exe)
        .args(args)
        .current_dir(&root)
        .status()
        .with_context(|| exe.display().to_string())?;
    if !status.success() {
        bail!("gfnlm-fuzz found bad cases or failed ({status}); see crates/gfnlm-fuzz/crashes/");
    }
    Ok(())
}
