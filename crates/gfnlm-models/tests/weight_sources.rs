//! The one constructor per architecture (`build` over a `WeightSource`) is the only layout:
//! the module-tree walkers visit exactly the projections the constructor builds (same names,
//! same order), and the per-layer tensor counts used to refuse absurd layer counts agree
//! with it.

mod common;

use burn::tensor::Device;
use common::{gpt2, gptj, llama};
use gfnlm_models::gpt2::Gpt2Config;
use gfnlm_models::gptj::GptJConfig;
use gfnlm_models::{CausalLm, Linears, LlamaConfig, TensorRecorder};

fn device() -> Device {
    gfnlm_models::parse_device("flex").unwrap()
}

/// The walker's names, in order.
fn walked(m: &CausalLm) -> Vec<String> {
    let mut names = Vec::new();
    m.visit_linears("", &mut |n, _| names.push(n.to_string()));
    let mut m = m.clone();
    let mut mut_names = Vec::new();
    m.visit_linears_mut("", &mut |n, _| mut_names.push(n.to_string()));
    assert_eq!(names, mut_names);
    names
}

#[test]
fn walkers_visit_exactly_the_projections_the_constructor_builds() {
    let device = device();
    for tied in [true, false] {
        let c = llama(tied, 3);
        let r = TensorRecorder::record(&device, |s| c.build(s));
        assert_eq!(walked(&c.init_random(&device).into()), r.linears);
        assert_eq!(r.linears.len(), 7 * 3 + usize::from(!tied));
        assert_eq!(r.linears[0], "model.layers.0.self_attn.q_proj");
    }
    let c = gpt2(3);
    let r = TensorRecorder::record(&device, |s| c.build(s));
    assert_eq!(walked(&c.init_random(&device).into()), r.linears);
    assert_eq!(r.linears.len(), 4 * 3);
    let c = gptj(3);
    let r = TensorRecorder::record(&device, |s| c.build(s));
    assert_eq!(walked(&c.init_random(&device).into()), r.linears);
    assert_eq!(r.linears.last().map(String::as_str), Some("lm_head"));
}

#[test]
fn tensor_counts_per_layer_agree_with_the_layout() {
    let device = device();
    let count = |f: &dyn Fn(&mut TensorRecorder)| {
        let mut r = TensorRecorder::new(&device);
        f(&mut r);
        r.tensors.len()
    };
    let llama_n = |n| {
        count(&|r| {
            let Ok(_) = llama(true, n).build(r);
        })
    };
    assert_eq!(llama_n(0), LlamaConfig::FIXED_TENSORS);
    assert_eq!(llama_n(2) - llama_n(1), LlamaConfig::TENSORS_PER_LAYER);
    let gpt2_n = |n| {
        count(&|r| {
            let Ok(_) = gpt2(n).build(r);
        })
    };
    assert_eq!(gpt2_n(0), Gpt2Config::FIXED_TENSORS);
    assert_eq!(gpt2_n(2) - gpt2_n(1), Gpt2Config::TENSORS_PER_LAYER);
    let gptj_n = |n| {
        count(&|r| {
            let Ok(_) = gptj(n).build(r);
        })
    };
    assert_eq!(gptj_n(0), GptJConfig::FIXED_TENSORS);
    assert_eq!(gptj_n(2) - gptj_n(1), GptJConfig::TENSORS_PER_LAYER);
}

#[test]
fn reduced_precision_casts_every_walked_projection() {
    let device = device();
    let mut m = llama(false, 2).init_random(&device);
    if m.set_weight_precision(gfnlm_models::WeightPrecision::Bf16)
        .is_err()
    {
        return; // no bf16 on this device
    }
    let mut n = 0;
    m.for_each_linear(&mut |name, l| {
        assert_eq!(l.weight.val().dtype(), burn::tensor::DType::BF16, "{name}");
        n += 1;
    });
    assert_eq!(n, 15);
    assert_eq!(
        m.model.embed_tokens.weight.val().dtype(),
        burn::tensor::DType::BF16
    );
    assert_eq!(m.model.norm.weight.val().dtype(), burn::tensor::DType::F32);
}
