//! Throughput of the default model (SmolLM2-135M-Instruct, f32 on flex): batched decoding with
//! the KV cache at batch 1 and 8, and prefill. Run with `cargo xtask bench` or
//! `cargo bench -p gfnlm-models --bench decode`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gfnlm_models::generate::{SampleOptions, sample, tokens_tensor};

fn bench(c: &mut Criterion) {
    let spec = std::env::var("GFNLM_BENCH_DEVICE").unwrap_or_else(|_| "flex".into());
    let device = gfnlm_models::parse_device(&spec).unwrap();
    let path = gfnlm_fetch::ensure_default_model().unwrap();
    let (model, _) = gfnlm_models::load_llama_gguf(&path, &device).unwrap();
    // "Once upon a time, there was a little" (9 tokens, from the parity fixtures' expected.json).
    let prompt: Vec<u32> = vec![6403, 1980, 253, 655, 28, 665, 436, 253, 1838];
    let new_tokens = 20;

    let mut group = c.benchmark_group("smollm2_decode");
    group.sample_size(10);
    for batch in [1usize, 8] {
        group.throughput(Throughput::Elements((batch * new_tokens) as u64));
        let opts = SampleOptions {
            num_samples: batch,
            max_new_tokens: new_tokens,
            temperature: 1.0,
            seed: 0,
            stop_token: None,
        };
        group.bench_function(format!("batch{batch}_prompt9_new{new_tokens}"), |b| {
            b.iter(|| sample(&model, &prompt, &opts, &device))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("smollm2_prefill");
    group.sample_size(10);
    for len in [9usize, 128] {
        let tokens: Vec<u32> = (0..len).map(|i| prompt[i % prompt.len()]).collect();
        group.throughput(Throughput::Elements(len as u64));
        group.bench_function(format!("batch1_len{len}"), |b| {
            b.iter(|| {
                let mut cache = model.new_cache();
                model
                    .forward_last(
                        tokens_tensor(std::slice::from_ref(&tokens), &device),
                        Some(&mut cache),
                    )
                    .into_data()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
