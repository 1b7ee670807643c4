//! Decode and prefill throughput of the default model on one device, without criterion (so it
//! builds with whatever backend features are on; it lives here rather than in gfnlm-models,
//! whose criterion dev-dependency changes feature unification and rebuilds burn): batch 1 and 8,
//! 9-token prompt, 20 new tokens, median of 5 runs after a warm-up run.
//!
//! `GFNLM_BENCH_PRECISION=bf16` stores the weights in bf16 (`gfnlm_models::precision`).
//!
//! `GFNLM_BENCH_DEVICE=tch cargo run --release -p gfnlm-train --features tch --example decode_throughput`

mod common;

use std::time::Instant;

use gfnlm_models::generate::{SampleOptions, sample, tokens_tensor};

/// Median wall time of `runs` calls of `f`, after one warm-up call.
fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..=runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (spec, device) = common::bench_device();
    let model = common::load_default_model(&device);
    // "Once upon a time, there was a little" (9 tokens).
    let prompt: Vec<u32> = vec![6403, 1980, 253, 655, 28, 665, 436, 253, 1838];
    let new_tokens = 20;
    let runs = 5;
    for batch in [1usize, 8] {
        let opts = SampleOptions {
            num_samples: batch,
            max_new_tokens: new_tokens,
            temperature: 1.0,
            seed: 0,
            stop_token: None,
        };
        let m = median_secs(runs, || {
            let s = sample(&model, &prompt, &opts, &device);
            assert_eq!(s.len(), batch);
        });
        println!(
            "{spec}: decode batch {batch}: {:.1} tok/s (median {m:.3} s for {} tokens)",
            (batch * new_tokens) as f64 / m,
            batch * new_tokens
        );
    }
    let tokens: Vec<u32> = (0..128).map(|i| prompt[i % prompt.len()]).collect();
    let m = median_secs(runs, || {
        let mut cache = model.new_cache();
        let _ = model
            .forward_last(
                tokens_tensor(std::slice::from_ref(&tokens), &device),
                Some(&mut cache),
            )
            .into_data();
    });
    println!(
        "{spec}: prefill 128 tokens: {:.1} tok/s (median {m:.3} s)",
        128.0 / m
    );
}
