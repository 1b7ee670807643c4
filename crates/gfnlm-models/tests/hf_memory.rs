//! Loading does not hold two copies of the weights: the peak resident memory added by loading a
//! GPT-J checkpoint of 25.8 MB of f32 safetensors stays well under twice the checkpoint size.
//!
//! The checkpoint is the `tiny-gptj` fixture's config at width 64 (the size of the original,
//! larger fixture), written here: the committed fixture (6.5 MB, width 16) is so small that the
//! loader's fixed-size decode chunk (4 MiB) alone is a large fraction of it.
//!
//! This binary holds a single test so that nothing else runs in the process while it measures.
//! Set `GFNLM_MEMORY_MODEL` to a GGUF file or a Hugging Face folder to print the same numbers
//! for that model (see `docs/models.md`).

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use gfnlm_models::hf::{gptj_expected_tensors, read_config};
use gfnlm_models::{CausalLm, CausalLmConfig};
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

/// Writes `tiny-gptj`'s config at width 64 (4 heads of 16, rotary_dim 8) and a matching
/// `model.safetensors` (25.8 MB of f32) into a fresh scratch folder. The file is streamed in
/// small pieces, so writing it does not raise the process's peak RSS.
fn write_wide_gptj() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gfnlm-hf-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(parity_dir().join("tiny-gptj/config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["n_embd"] = 64.into();
    config["n_head"] = 4.into();
    config["rotary_dim"] = 8.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let CausalLmConfig::GptJ(c) = read_config(&dir).unwrap() else {
        panic!("tiny-gptj's config is not GPT-J")
    };
    let tensors = gptj_expected_tensors(&c, &gfnlm_models::parse_device("flex").unwrap());

    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in &tensors {
        let bytes = 4 * shape.iter().product::<usize>();
        let entry = serde_json::json!({
            "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]
        });
        header.insert(name.clone(), entry);
        offset += bytes;
    }
    let mut header = serde_json::Value::Object(header).to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let file = std::fs::File::create(dir.join("model.safetensors")).unwrap();
    let mut out = std::io::BufWriter::new(file);
    out.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    out.write_all(header.as_bytes()).unwrap();
    let mut i = 0u64;
    for (_, shape) in &tensors {
        for _ in 0..shape.iter().product::<usize>() {
            // Deterministic values in [-0.1, 0.1).
            let x = (i.wrapping_mul(2_654_435_761) % 2000) as f32 / 10_000.0 - 0.1;
            out.write_all(&x.to_le_bytes()).unwrap();
            i += 1;
        }
    }
    out.flush().unwrap();
    dir
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
    let dir = write_wide_gptj();
    let (size, added) = measure(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    // 6,439,936 f32 parameters (wte and lm_head, 49152×64 each, dominate) plus the header.
    assert!(
        size > 4 * 6_439_936,
        "{size} bytes: not the width-64 checkpoint"
    );
    assert!(
        (added as f64) < 1.5 * size as f64,
        "loading added {added} bytes of peak RSS for {size} bytes of weights"
    );
}
