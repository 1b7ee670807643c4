//! Cross-backend checks (the tests live in `tests/`): the GFlowNet objectives — values and
//! gradients — and one LoRA training step on the tiny Llama fixture give the same numbers on
//! every backend compiled into this build, within 1e-4, and match f64 references.
//!
//! The default build has only flex, so the tests then check flex against the references; build
//! with `--features wgpu,tch` (see `cargo xtask setup-backend` and `docs/backends.md`) to compare
//! backends: `cargo xtask test-backends` does both.

use burn::tensor::Device;

/// The backends the tests run on: `GFNLM_TEST_DEVICES` (comma-separated `--device` names, e.g.
/// `flex,tch-cuda`) if set, else every CPU-capable backend compiled in (`flex`, `wgpu`, `tch`).
/// The first entry is the reference the others are compared with.
///
/// Panics with the parse error (which lists the compiled-in backends) on an unknown name.
pub fn backends_under_test() -> Vec<(String, Device)> {
    let names: Vec<String> = match std::env::var("GFNLM_TEST_DEVICES") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        Err(_) => ["flex", "wgpu", "tch"]
            .into_iter()
            .filter(|name| gfnlm_models::compiled_backends().contains(name))
            .map(String::from)
            .collect(),
    };
    assert!(
        !names.is_empty(),
        "no backend to test: set GFNLM_TEST_DEVICES or build with a backend feature"
    );
    names
        .into_iter()
        .map(|name| {
            let device = gfnlm_models::parse_device(&name)
                .unwrap_or_else(|e| panic!("GFNLM_TEST_DEVICES: {e}"));
            (name, device)
        })
        .collect()
}

/// `|got − want| ≤ tol · max(1, |want|)`.
pub fn close(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol * want.abs().max(1.0)
}
