//! What the benchmark examples share: the device and precision from the environment, and the
//! default model loaded on that device.

use burn::tensor::Device;
use gfnlm_models::{CausalLm, WeightPrecision};

/// `GFNLM_BENCH_DEVICE` (default `flex`) as a device spec and the parsed plain device.
pub fn bench_device() -> (String, Device) {
    let spec = std::env::var("GFNLM_BENCH_DEVICE").unwrap_or_else(|_| "flex".into());
    let device = gfnlm_models::parse_device(&spec).unwrap_or_else(|e| panic!("{e}"));
    (spec, device)
}

/// The default model on `device`, its frozen weights stored in `GFNLM_BENCH_PRECISION`
/// (`f32` when unset; see `gfnlm_models::precision`).
pub fn load_default_model(device: &Device) -> CausalLm {
    let path = gfnlm_fetch::ensure_default_model().expect("default model");
    let (mut model, _) = CausalLm::load(&path, device).expect("model loads");
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

/// Waits for the device to finish pending work: reads the first adapter matrix back.
#[allow(dead_code)]
pub fn sync(model: &CausalLm) {
    let mut done = false;
    gfnlm_lora::AdaptableModel::for_each_linear(model, &mut |_, l| {
        if let (false, Some(lora)) = (done, l.lora.as_ref()) {
            let _ = lora.lora_b.val().into_data();
            done = true;
        }
    });
}
