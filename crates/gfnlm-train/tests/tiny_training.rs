//! The training machinery on a tiny random-weight Llama (fast): the one-pass policy terms equal
//! what a step-by-step sampler sees, and a resumed run reproduces an uninterrupted one.

use burn::module::Module;
use burn::tensor::Device;
use gfnlm_models::decode::Behaviour;
use gfnlm_models::generate::{SampleOptions, sample};
use gfnlm_models::{CausalLm, LlamaConfig, LlamaForCausalLm};
use gfnlm_tasks::{Constraint, RngTask};
use gfnlm_train::{TrainConfig, Trainer, Trajectory, policy_terms};

/// A trainer for the tiny rng task with the config's update rule.
fn trainer(cfg: TrainConfig, base: LlamaForCausalLm, device: &Device) -> Trainer {
    let update = gfnlm_train::update_from_config(&cfg);
    Trainer::new(
        cfg,
        CausalLm::Llama(base),
        Box::new(tiny_task()),
        update,
        device.clone(),
    )
    .unwrap()
}

fn llama(m: &CausalLm) -> &LlamaForCausalLm {
    match m {
        CausalLm::Llama(m) => m,
        other => panic!("not a Llama: {:?}", other.architecture()),
    }
}

/// `device.seed` + random init use the device's global generator: tests running in parallel
/// threads would interleave their draws and get different weights.
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tiny(device: &Device) -> LlamaForCausalLm {
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(11);
    LlamaConfig {
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
    }
    .init_random(device)
}

fn host(t: burn::tensor::Tensor<2>) -> (Vec<f32>, usize) {
    let [_, c] = t.dims();
    (t.into_data().convert::<f32>().try_into_vec().unwrap(), c)
}

#[test]
fn one_pass_policy_terms_equal_the_step_by_step_sampler() {
    let device = gfnlm_models::parse_device("flex").unwrap();
    let model = tiny(&device);
    let prompt = vec![3u32, 9, 27, 17];
    let max_len = 5;
    let samples = sample(
        &model,
        &prompt,
        &SampleOptions {
            num_samples: 6,
            max_new_tokens: max_len + 1,
            temperature: 1.0,
            seed: 5,
            stop_token: Some(2),
        },
        &device,
    );
    let constraint = Constraint {
        termination: 2,
        allowed: None,
        vocab_alpha: -99.0,
        min_len: 0,
        max_len,
    };
    let trajs: Vec<Trajectory> = samples
        .iter()
        .map(|s| {
            let mut tokens = s.tokens.clone();
            let ended = tokens.last() == Some(&2);
            if ended {
                tokens.pop();
            }
            tokens.truncate(max_len);
            Trajectory::new(tokens, !ended)
        })
        .collect();
    let terms = policy_terms(&model, &prompt, &trajs, &constraint, &device);
    let (pf, t) = host(terms.log_pf);
    let (pt, t1) = host(terms.log_pterm);
    assert_eq!(t1, t + 1);
    let mut checked = 0;
    for (i, (s, tr)) in samples.iter().zip(&trajs).enumerate() {
        for k in 0..tr.tokens.len() {
            assert!(
                (pf[i * t + k] - s.token_logprobs[k]).abs() < 1e-4,
                "row {i} step {k}"
            );
            checked += 1;
        }
        if !tr.forced {
            let n = tr.tokens.len();
            assert!(
                (pt[i * t1 + n] - s.token_logprobs[n]).abs() < 1e-4,
                "row {i} ⊤"
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "too few steps compared: {checked}");
}

fn tiny_task() -> RngTask {
    RngTask::from_parts(
        vec![5, 6, 7],
        [10, 11, 12, 13, 14, 15, 16, 17, 18, 19],
        2,
        -20.0,
    )
}

fn config() -> TrainConfig {
    let mut cfg = TrainConfig {
        steps: 4,
        batch_size: 4,
        lr: 1e-2,
        warmup_steps: 1,
        checkpoint_every: 2,
        ..TrainConfig::default()
    };
    cfg.lora.r = 4;
    cfg.lora.alpha = 8.0;
    cfg
}

#[test]
fn resumed_run_reproduces_the_uninterrupted_run() {
    check_resume(config(), "subtb");
}

/// Trajectory balance learns log Z beside the adapters; it is checkpointed and resumed too.
#[test]
fn tb_learns_log_z_and_resumes_it() {
    let cfg = TrainConfig {
        objective: gfnlm_train::config::Objective::Tb,
        lr_log_z: 0.3,
        ..config()
    };
    let stats = check_resume(cfg, "tb");
    let z: Vec<f64> = stats
        .iter()
        .map(|s| s.log_z.expect("tb logs log Z"))
        .collect();
    // Adam's first step moves by exactly lr_log_z; later steps keep moving it.
    assert!((z[0].abs() - 0.3).abs() < 1e-9, "first log Z step: {z:?}");
    assert!(z.windows(2).all(|w| w[0] != w[1]), "log Z stalled: {z:?}");
}

/// Mixed precision (`precision = "bf16"`): frozen weights stored in bf16, adapters in f32; the
/// run still learns and resumes exactly.
#[test]
fn bf16_frozen_weights_train_and_resume() {
    let cfg = TrainConfig {
        precision: gfnlm_models::WeightPrecision::Bf16,
        ..config()
    };
    let device = gfnlm_models::parse_device("flex").unwrap().autodiff();
    let t = trainer(cfg.clone(), tiny(&device), &device);
    let q = &llama(&t.model).model.layers[0].self_attn.q_proj;
    assert_eq!(q.weight.val().dtype(), burn::tensor::DType::BF16);
    let lora = q.lora.as_ref().expect("adapter");
    assert_eq!(lora.lora_b.val().dtype(), burn::tensor::DType::F32);
    check_resume(cfg, "bf16");
}

/// `sample_merged`: a copy of the policy with non-zero adapters folded into its weights draws
/// the same trajectories as the low-rank path, and the trainer's own model stays unmerged.
#[test]
fn merged_sampling_draws_the_same_trajectories() {
    let cfg = TrainConfig {
        sample_merged: true,
        ..config()
    };
    let device = gfnlm_models::parse_device("flex").unwrap().autodiff();
    let mut t = trainer(cfg, tiny(&device), &device);
    // Non-zero B, so that merging changes the weights.
    gfnlm_lora::AdaptableModel::for_each_linear_mut(&mut t.model, &mut |_, l| {
        if let Some(a) = l.lora.as_mut() {
            a.lora_b = a.lora_b.clone().map(|b| b.ones_like().mul_scalar(0.05));
        }
    });
    let plain = t.policy();
    let mut merged = plain.clone();
    assert!(gfnlm_lora::merge(&mut merged) > 0);
    let q = |m: &CausalLm| {
        let w = &llama(m).model.layers[0].self_attn.q_proj.weight;
        w.val()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    };
    assert_ne!(q(&plain), q(&merged), "merging changed nothing");
    let valid = device.clone().without_autodiff();
    let constraint = tiny_task().constraint(-99.0, true);
    let draw = |m: &CausalLm| {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        let behaviour = Behaviour {
            temperature: 1.0,
            epsilon: 0.05,
        };
        gfnlm_train::sample_trajectories(
            m,
            &[5, 6, 7],
            32,
            &constraint,
            behaviour,
            None,
            &mut rng,
            &valid,
        )
    };
    let (a, b) = (draw(&plain), draw(&merged));
    assert_eq!(a, b);
    assert!(
        a.iter().any(|t| t.tokens.len() > 1),
        "trivial trajectories: {a:?}"
    );
    // Training after merged sampling still sees the unmerged model.
    let out = std::env::temp_dir().join(format!("gfnlm-merged-{}", std::process::id()));
    t.train_step(&out).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    let lora = llama(&t.model).model.layers[0]
        .self_attn
        .q_proj
        .lora
        .as_ref()
        .unwrap();
    assert!(!lora.merged);
}

/// Runs 4 steps, checkpoints at 2, resumes a second trainer from there and compares; returns
/// the uninterrupted run's stats.
fn check_resume(cfg: TrainConfig, tag: &str) -> Vec<gfnlm_train::StepStats> {
    let config = || cfg.clone();
    let out = std::env::temp_dir().join(format!("gfnlm-resume-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let device = gfnlm_models::parse_device("flex").unwrap().autodiff();
    let base = tiny(&device);

    let mut a = trainer(config(), base.clone(), &device);
    let mut stats_a = Vec::new();
    while a.step < 4 {
        stats_a.push(a.train_step(&out).unwrap());
        if a.step == 2 {
            a.save_checkpoint(&out.join("ckpt")).unwrap();
        }
    }
    // The adapters actually learned something.
    let lp = |m: &CausalLm| {
        gfnlm_tasks::rng::constrained_log_probs(
            &m.valid(),
            &tiny_task(),
            &tiny_task().constraint(-99.0, true),
            &device.clone().without_autodiff(),
        )
    };
    let trained = lp(&a.model);

    let mut b = trainer(config(), base.clone(), &device);
    let ckpt = Trainer::latest_checkpoint(&out.join("ckpt")).expect("checkpoint written");
    b.resume(&ckpt).unwrap();
    assert_eq!(b.step, 2);
    let mut stats_b = Vec::new();
    while b.step < 4 {
        stats_b.push(b.train_step(&out).unwrap());
    }
    for (x, y) in stats_a[2..].iter().zip(&stats_b) {
        assert_eq!(x.step, y.step);
        assert_eq!(x.behaviour, y.behaviour);
        assert_eq!(x.mean_log_r, y.mean_log_r);
        assert_eq!(x.log_z, y.log_z, "step {}: log Z", x.step);
        assert!(
            (x.loss - y.loss).abs() <= 1e-5 * x.loss.abs().max(1.0),
            "step {}: {} vs {}",
            x.step,
            x.loss,
            y.loss
        );
    }
    let resumed = lp(&b.model);
    for (x, y) in trained.iter().zip(&resumed) {
        assert!((x - y).abs() < 1e-4, "final policies differ: {x} vs {y}");
    }
    let fresh = trainer(config(), base, &device);
    let untrained = lp(&fresh.model);
    let moved = trained
        .iter()
        .zip(&untrained)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        moved > 1e-3,
        "four steps at lr 1e-2 should move the policy (moved {moved})"
    );
    let _ = std::fs::remove_dir_all(&out);
    stats_a
}
