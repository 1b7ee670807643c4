//! What the benchmark examples share: the device and precision from the environment, and the
//! default model loaded on that device.

use burn::tensor::Device;
use gfnlm_models::{LlamaForCausalLm, WeightPrecision};

/// `GFNLM_BENCH_DEVICE` (default `flex`) as a device spec and the parsed plain device.
pub fn bench_device() -> (String, Device) {
    let spec = std::env::var("GFNLM_BENCH_DEVICE").unwrap_or_else(|_| "flex".into());
    let device = gfnlm_models::parse_device(&spec).unwrap_or_else(|e| panic!("{e}"));
    (spec, device)
}

/// The default model on `device`, its frozen weights stored in `GFNLM_BENCH_PRECISION`
/// (`f32` when unset; see `gfnlm_models::precision`).
pub fn load_default_model(device: &Device) -> LlamaForCausalLm {
    let path = gfnlm_fetch::ensure_default_model().expect("default model");
    let (mut model, _) = gfnlm_models::load_llama_gguf(&path, device).expect("model loads");
    let precision: WeightPrecision = std::env::var("GFNLM_BENCH_PRECISION")
        .unwrap_or_else(|_| "f32".into())
        .parse()
        .unwrap_or_else(|e| panic!("GFNLM_BENCH_PRECISION: {e}"));
    model
        .set_weight_precision(precision)
        .unwrap_or_else(|e| panic!("{e}"));
    println!("weight precision: {precision}");
    model
}
