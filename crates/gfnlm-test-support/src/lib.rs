//! Helpers shared by the workspace's tests (a dev-dependency only).

use std::path::PathBuf;

/// The PyTorch parity fixtures: `$GFNLM_PARITY_DIR`, else this crate's `fixtures/` folder
/// (made by `scripts/make-parity-fixtures.py`, see `fixtures/README.md`).
pub fn parity_dir() -> PathBuf {
    std::env::var_os("GFNLM_PARITY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures")))
}

/// The paper's datasets, committed at the repository root (`datasets/`, see its README.md).
pub fn datasets_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets"))
}

/// SmolLM2's `tokenizer.json` in the fixtures. Only `tiny-llama/` carries the tokenizer
/// (`tokenizer.json` + `tokenizer_config.json`); the other tiny models use the same one.
pub fn tokenizer_json() -> PathBuf {
    parity_dir().join("tiny-llama/tokenizer.json")
}
