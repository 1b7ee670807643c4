//! Rough timing of the decode loop's parts on the default model (not a benchmark: see benches/).
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use gfnlm_models::generate::tokens_tensor;

fn main() {
    let device = gfnlm_models::parse_device("flex").unwrap();
    let path = gfnlm_fetch::ensure_default_model().unwrap();
    let (m, _) = gfnlm_models::load_llama_gguf(&path, &device).unwrap();
    let b = 8;
    let prompt: Vec<u32> = (0..9).map(|i| 500 + i).collect();
    {
        use burn::tensor::Distribution;
        let x = Tensor::<3>::random([b, 1, 576], Distribution::Normal(0.0, 1.0), &device);
        let layer = &m.model.layers[0];
        let n = 50;
        let t = Instant::now();
        for _ in 0..n {
            let _ = layer.mlp.forward(x.clone()).into_data();
        }
        println!("mlp: {:.1} µs", t.elapsed().as_secs_f64() / n as f64 * 1e6);
        let t = Instant::now();
        for _ in 0..n {
            let _ = layer.input_layernorm.forward(x.clone()).into_data();
        }
        println!("norm: {:.1} µs", t.elapsed().as_secs_f64() / n as f64 * 1e6);
        let t = Instant::now();
        for _ in 0..n {
            let _ = layer
                .self_attn
                .forward(
                    x.clone(),
                    &m.rope.tables(0, x.dims()[1], &x.device()),
                    &gfnlm_models::attention::CausalMask::new(
                        x.dims()[1],
                        x.dims()[1],
                        &x.device(),
                    ),
                    None,
                )
                .into_data();
        }
        println!(
            "attn (no cache): {:.1} µs",
            t.elapsed().as_secs_f64() / n as f64 * 1e6
        );
        let t = Instant::now();
        for _ in 0..n {
            let _ = layer.self_attn.q_proj.forward(x.clone()).into_data();
        }
        println!(
            "q_proj: {:.1} µs",
            t.elapsed().as_secs_f64() / n as f64 * 1e6
        );
        let t = Instant::now();
        for _ in 0..n {
            let _ = layer.mlp.gate_proj.forward(x.clone()).into_data();
        }
        println!(
            "gate_proj: {:.1} µs",
            t.elapsed().as_secs_f64() / n as f64 * 1e6
        );
    }
    for round in 0..2 {
        let mut cache = m.new_cache();
        let t = Instant::now();
        let _ = m.forward_last(
            tokens_tensor(std::slice::from_ref(&prompt), &device),
            Some(&mut cache),
        );
        let prefill = t.elapsed();
        let mut cache = cache.expand_batch(b);
        let (mut body, mut head, mut host) = (0.0, 0.0, 0.0);
        let steps = 20;
        for s in 0..steps {
            let toks: Vec<Vec<u32>> = (0..b).map(|r| vec![(1000 + 37 * r + s) as u32]).collect();
            let t = Instant::now();
            let h = m.forward_hidden(tokens_tensor(&toks, &device), Some(&mut cache));
            let h = h.reshape([b, 576]);
            let _ = h.clone().into_data();
            body += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let logits = m.logits(h);
            let _ = logits.clone().into_data();
            head += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let v: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec().unwrap();
            let _ = Tensor::<1>::from_data(TensorData::new(v, [b * 49152]), &device);
            host += t.elapsed().as_secs_f64();
        }
        println!(
            "round {round}: prefill(9) {:.1} ms; per decode step at B={b}: body {:.1} ms, head {:.1} ms, host {:.1} ms => {:.0} tok/s",
            prefill.as_secs_f64() * 1e3,
            body / steps as f64 * 1e3,
            head / steps as f64 * 1e3,
            host / steps as f64 * 1e3,
            (b * steps) as f64 / (body + head)
        );
    }
}
