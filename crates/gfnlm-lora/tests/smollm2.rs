//! The paper's LoRA setting on the real SmolLM2-135M-Instruct (fetched by
//! `cargo xtask fetch-model`, never stored in the repo).

use burn::tensor::Device;
use gfnlm_lora::*;

#[test]
fn smollm2_r64_has_peft_trainable_count() {
    let path = gfnlm_fetch::ensure_default_model()
        .unwrap_or_else(|e| panic!("the default model is needed for this test: {e}"));
    let device = Device::flex();
    let (mut model, _) = gfnlm_models::load_llama_gguf(&path, &device).unwrap();
    let base_total = total_parameter_count(&model);
    let report = apply_lora(&mut model, &LoraConfig::paper_llama(), &device).unwrap();
    println!("{report}");
    assert_eq!(report.adapted.len(), 30 * 7);
    // PEFT's print_trainable_parameters() for r = 64 on q,k,v,o,gate,up,down.
    assert_eq!(report.trainable_params, 19_537_920);
    assert_eq!(trainable_parameter_count(&model), 19_537_920);
    assert_eq!(report.total_params, base_total + 19_537_920);
}
