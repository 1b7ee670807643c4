//! Loading does not hold two copies of the weights: the peak resident memory added by loading
//! `tiny-gptj` (25.8 MB of f32 safetensors) stays well under twice the checkpoint size.
//!
//! This binary holds a single test so that nothing else runs in the process while it measures.
//! Set `GFNLM_MEMORY_MODEL` to a GGUF file or a Hugging Face folder to print the same numbers
//! for that model (see `docs/models.md`).

use std::path::Path;

use burn::tensor::Tensor;
use gfnlm_models::CausalLm;
use gfnlm_test_support::parity_dir;

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn weights_bytes(path: &Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).unwrap().len();
    }
    std::fs::read_dir(path)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// `(weights on disk, peak RSS during load − RSS before)` in bytes.
fn measure(path: &Path) -> (u64, u64) {
    let device = gfnlm_models::parse_device("flex").unwrap();
    // Warm the backend up first so that its own start-up memory is not counted.
    let _ = Tensor::<2>::ones([64, 64], &device)
        .matmul(Tensor::ones([64, 64], &device))
        .into_data();
    let before = status_bytes("VmRSS").unwrap();
    let (model, _) = CausalLm::load(path, &device).unwrap();
    let peak = status_bytes("VmHWM").unwrap();
    let after = status_bytes("VmRSS").unwrap();
    let size = weights_bytes(path);
    eprintln!(
        "{}: weights {:.1} MB, RSS before {:.1} MB, peak {:.1} MB (+{:.1} MB = {:.2}x weights), \
         after {:.1} MB",
        path.display(),
        size as f64 / 1e6,
        before as f64 / 1e6,
        peak as f64 / 1e6,
        (peak - before) as f64 / 1e6,
        (peak - before) as f64 / size as f64,
        after as f64 / 1e6,
    );
    drop(model);
    (size, peak.saturating_sub(before))
}

#[test]
fn loading_keeps_peak_memory_under_two_copies_of_the_weights() {
    if status_bytes("VmHWM").is_none() {
        eprintln!("no /proc/self/status on this system; skipping the memory measurement");
        return;
    }
    if let Some(path) = std::env::var_os("GFNLM_MEMORY_MODEL") {
        measure(Path::new(&path));
        return;
    }
    let (size, added) = measure(&parity_dir().join("tiny-gptj"));
    assert!(
        (added as f64) < 1.5 * size as f64,
        "loading added {added} bytes of peak RSS for {size} bytes of weights"
    );
}
