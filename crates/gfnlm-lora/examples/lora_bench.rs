//! Times LoRA on SmolLM2-135M (r = 64, α = 16 on q,k,v,o,gate,up,down), comparing this crate's
//! low-rank path `x·W + s·(x·A)·B` with burn 0.22's built-in LoRA (`Module::apply_lora`), which
//! materialises `W + s·A·B` on every forward.
//!
//! ```text
//! cargo run --release -p gfnlm-lora --example lora_bench -- <lowrank|burn|merged|none> <train|decode> [reps]
//! ```
//!
//! `train`: forward + backward of a batch of 8×29 tokens on the autodiff device (mean token
//! log-prob loss). `decode`: one KV-cached decode step at batch 8 after a 16-token prompt.
//! `merged` is the low-rank model after `gfnlm_lora::merge` (decode only; it also prints the
//! merge and unmerge times). `none` is the plain model (in `train` it trains every weight).
//! Prints the median and all timings, plus the process's peak resident memory (VmHWM). Run each
//! configuration in its own process so the peaks are comparable.

use std::time::Instant;

use burn::module::{Lora, Module, ParamGroup};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use gfnlm_lora::{LLAMA_TARGETS, LoraConfig, apply_lora_seeded, trainable_parameter_count};
use gfnlm_models::LlamaForCausalLm;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn tokens(b: usize, t: usize, offset: usize, device: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = (0..b * t)
        .map(|i| ((i * 7919 + offset * 104_729) % 49_000 + 100) as i64)
        .collect();
    Tensor::from_data(TensorData::new(v, [b, t]), device)
}

fn attach(model: LlamaForCausalLm, mode: &str, device: &Device) -> LlamaForCausalLm {
    match mode {
        "lowrank" => {
            let mut m = model;
            let report = apply_lora_seeded(&mut m, &LoraConfig::paper_llama(), 0, device).unwrap();
            eprintln!("{report}");
            m
        }
        "burn" => {
            let group = ParamGroup::from_any_predicates(
                LLAMA_TARGETS
                    .iter()
                    .map(|t| format!("{t}.weight"))
                    .collect::<Vec<_>>(),
            );
            let m = model.apply_lora(Lora::new(64, 16.0).set_param_group(group));
            let mut n = 0;
            let mut count = |w: &burn::module::Param<Tensor<2>>| {
                n += w.adapter().map_or(0, |a| {
                    a.a.shape().num_elements() + a.b.shape().num_elements()
                })
            };
            for l in &m.model.layers {
                for p in [
                    &l.self_attn.q_proj,
                    &l.self_attn.k_proj,
                    &l.self_attn.v_proj,
                    &l.self_attn.o_proj,
                    &l.mlp.gate_proj,
                    &l.mlp.up_proj,
                    &l.mlp.down_proj,
                ] {
                    count(&p.weight);
                }
            }
            assert!(
                m.model.embed_tokens.weight.adapter().is_none(),
                "embedding must not be adapted"
            );
            eprintln!("burn built-in LoRA: {n} adapter params");
            m
        }
        "merged" => {
            let mut m = attach(model, "lowrank", device);
            let start = Instant::now();
            let n = gfnlm_lora::merge(&mut m);
            let merge_ms = start.elapsed().as_secs_f64() * 1e3;
            let start = Instant::now();
            gfnlm_lora::unmerge(&mut m);
            let unmerge_ms = start.elapsed().as_secs_f64() * 1e3;
            gfnlm_lora::merge(&mut m);
            println!("merged {n} adapters: merge {merge_ms:.0} ms, unmerge {unmerge_ms:.0} ms");
            m
        }
        "none" => model,
        other => panic!("mode must be lowrank, burn, merged or none, got {other}"),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("lowrank");
    let phase = args.get(2).map(String::as_str).unwrap_or("decode");
    let reps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let path = gfnlm_fetch::ensure_default_model().expect("SmolLM2 (cargo xtask fetch-model)");
    let plain = Device::flex();
    let device = if phase == "train" {
        plain.autodiff()
    } else {
        plain.clone()
    };
    let (model, _) = gfnlm_models::load_llama_gguf(&path, &device).unwrap();
    let model = attach(model, mode, &device);
    if mode == "lowrank" {
        eprintln!("trainable: {}", trainable_parameter_count(&model));
    }
    let rss_loaded = peak_rss_mib();

    let mut times = Vec::new();
    match phase {
        "train" => {
            let (b, t) = (8, 29);
            for rep in 0..reps + 1 {
                let toks = tokens(b, t, rep, &device);
                let start = Instant::now();
                let logits = model.forward(toks.clone(), None);
                let lp = log_softmax(logits, 2);
                let targets = toks.slice([0..b, 1..t]).reshape([b, t - 1, 1]);
                let loss = lp.slice([0..b, 0..t - 1]).gather(2, targets).mean().neg();
                let grads = loss.backward();
                drop(grads);
                let dt = start.elapsed().as_secs_f64() * 1e3;
                if rep > 0 {
                    times.push(dt); // the first run warms the allocator
                }
            }
        }
        "decode" => {
            let b = 8;
            let mut cache = model.new_cache();
            let _ = model.forward_last(tokens(b, 16, 0, &device), Some(&mut cache));
            for rep in 0..reps + 1 {
                let start = Instant::now();
                let logits = model.forward_last(tokens(b, 1, rep + 1, &device), Some(&mut cache));
                let _ = logits.into_data();
                let dt = start.elapsed().as_secs_f64() * 1e3;
                if rep > 0 {
                    times.push(dt);
                }
            }
        }
        other => panic!("phase must be train or decode, got {other}"),
    }
    let all: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
    let med = median(&mut times);
    println!(
        "mode={mode} phase={phase} reps={reps} median_ms={med:.1} peak_rss_after_load_mib={rss_loaded:.0} peak_rss_mib={:.0} all_ms=[{}]",
        peak_rss_mib(),
        all.join(", ")
    );
}
