//! Helpers shared by the workspace's tests (a dev-dependency only).

use std::path::PathBuf;

/// The PyTorch parity fixtures: `$GFNLM_PARITY_DIR`, else `../shared/parity` beside the
/// repository.
pub fn parity_dir() -> PathBuf {
    std::env::var_os("GFNLM_PARITY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/parity"
            ))
        })
}
