//! Timing of one GFlowNet training step on SmolLM2 with the breakdown the issue asks for:
//! sample / reward / forward+backward / optimizer. Setting: LoRA r = 64 on all seven projections,
//! a 9-token prompt, batch 8, up to 20 new tokens, LM-likelihood reward (base = adapters off),
//! modified SubTB, one AdamW step.
//!
//! `cargo run --release -p gfnlm-train --example train_step [-- STEPS]`; another backend:
//! `GFNLM_BENCH_DEVICE=tch cargo run --release -p gfnlm-train --features tch --example train_step`
//! (see docs/backends.md). `GFNLM_BENCH_PRECISION=bf16` stores the frozen weights in bf16
//! (mixed precision, `gfnlm_models::precision`). Prints one CSV row per step and the medians.

mod common;

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Tensor, TensorData};
use gfnlm_lora::{LoraConfig, apply_lora_seeded, set_adapters_enabled};
use gfnlm_models::decode::{Behaviour, Constraint};
use gfnlm_objectives::{TrajectoryBatch, modified_subtb};
use gfnlm_rewards::LmLikelihood;
use gfnlm_train::{policy_terms, sample_trajectories};
use rand::SeedableRng;

fn main() {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (spec, plain) = common::bench_device();
    let full_length = std::env::var("GFNLM_BENCH_FULL_LENGTH").is_ok_and(|v| v == "1");
    let merged_sampling = std::env::var("GFNLM_BENCH_MERGED").is_ok_and(|v| v == "1");
    println!("device: {spec}, merged sampling: {merged_sampling}");
    let device = plain.clone().autodiff();
    let mut model = common::load_default_model(&device);
    let lora = LoraConfig::new(
        64,
        16.0,
        &[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    );
    apply_lora_seeded(&mut model, &lora, 0, &device).unwrap();
    // Make the adapters non-trivial so the policy differs from the base.
    let mut optim = AdamWConfig::new().init();
    // "Once upon a time, there was a little" (9 tokens).
    let prompt: Vec<u32> = vec![6403, 1980, 253, 655, 28, 665, 436, 253, 1838];
    let constraint = Constraint {
        termination: 30, // "." ends a sentence, as in the next-sentence task
        allowed: None,
        vocab_alpha: -99.0,
        // GFNLM_BENCH_FULL_LENGTH=1: every row runs the full 20 tokens (⊤ masked before), so
        // runs that sample differently (another precision or backend) do the same work.
        min_len: if full_length { 20 } else { 1 },
        max_len: 20,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    println!("step, sample_s, reward_s, fwd_bwd_s, optim_s, total_s, mean_len, loss");
    let mut rows: Vec<[f64; 5]> = Vec::new();
    for step in 0..steps {
        let t0 = Instant::now();
        let policy = model.valid();
        let sampler = if merged_sampling {
            let mut merged = policy.clone();
            gfnlm_lora::merge(&mut merged);
            merged
        } else {
            policy.clone()
        };
        let trajs = sample_trajectories(
            &sampler,
            &prompt,
            8,
            &constraint,
            Behaviour::ON_POLICY,
            None,
            &mut rng,
            &plain,
        );
        let t_sample = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let mut base = policy;
        set_adapters_enabled(&mut base, false);
        let seqs: Vec<Vec<u32>> = trajs.iter().map(|t| t.tokens.clone()).collect();
        let rewards =
            LmLikelihood::new(constraint.termination).log_rewards(&base, &prompt, &seqs, &plain);
        let b = trajs.len();
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut log_r = vec![0f32; b * (t + 1)];
        for (i, r) in rewards.iter().enumerate() {
            for (k, v) in r.iter().enumerate() {
                log_r[i * (t + 1) + k] = *v as f32;
            }
        }
        let t_reward = t1.elapsed().as_secs_f64();

        let t2 = Instant::now();
        let terms = policy_terms(&model, &prompt, &trajs, &constraint, &device);
        let log_r = Tensor::<2>::from_data(TensorData::new(log_r, [b, t + 1]), &device);
        let lengths: Vec<usize> = trajs.iter().map(|t| t.tokens.len()).collect();
        let mut batch =
            TrajectoryBatch::new(terms.log_pf, terms.log_pterm, log_r, lengths.clone()).unwrap();
        if t == constraint.max_len {
            batch = batch.with_forced_stop(constraint.max_len).unwrap();
        }
        let loss = modified_subtb(&batch, 1.0).unwrap();
        let loss_v = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let t_fb = t2.elapsed().as_secs_f64();

        let t3 = Instant::now();
        model = optim.step(1e-4, model, grads);
        common::sync(&model);
        let t_opt = t3.elapsed().as_secs_f64();
        let mean_len = lengths.iter().sum::<usize>() as f64 / b as f64;
        let total = t0.elapsed().as_secs_f64();
        println!(
            "{step}, {t_sample:.3}, {t_reward:.3}, {t_fb:.3}, {t_opt:.3}, {total:.3}, {mean_len:.1}, {loss_v:.3}"
        );
        rows.push([t_sample, t_reward, t_fb, t_opt, total]);
    }
    // Medians over the steps after the first (warm-up: allocation, kernel compilation).
    let timed = if rows.len() > 1 {
        &rows[1..]
    } else {
        &rows[..]
    };
    let median = |i: usize| {
        let mut v: Vec<f64> = timed.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!(
        "median ({spec}, {} steps after the first): sample {:.3} s, reward {:.3} s, fwd+bwd {:.3} s, optim {:.3} s, total {:.3} s",
        timed.len(),
        median(0),
        median(1),
        median(2),
        median(3),
        median(4)
    );
}
