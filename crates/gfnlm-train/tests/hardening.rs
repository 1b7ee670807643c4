//! Bad settings and diverging runs give errors that say what to change (issue #18): a task
//! that does not fit the model's context is refused before training, and a learning rate that
//! blows the adapters up ends the run with the non-finite-loss error and its batch file, the
//! same way whether the loss or the objective's input went non-finite first.

use burn::tensor::Device;
use gfnlm_models::{CausalLm, LlamaConfig};
use gfnlm_tasks::RngTask;
use gfnlm_train::{TrainConfig, TrainError, Trainer};

fn tiny(device: &Device, max_positions: usize) -> CausalLm {
    LlamaConfig {
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 1,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: max_positions,
        tie_word_embeddings: true,
    }
    .init_random(device)
    .into()
}

/// The rng task on token ids: a 3-token prompt, at most 3 digits.
fn task() -> Box<RngTask> {
    Box::new(RngTask::from_parts(
        vec![5, 6, 7],
        [10, 11, 12, 13, 14, 15, 16, 17, 18, 19],
        2,
        -20.0,
    ))
}

fn config() -> TrainConfig {
    let mut cfg = TrainConfig {
        steps: 20,
        batch_size: 4,
        warmup_steps: 0,
        replay_prob: 0.0,
        ..TrainConfig::default()
    };
    cfg.lora.r = 4;
    cfg.lora.alpha = 8.0;
    cfg
}

#[test]
fn a_task_longer_than_the_context_is_refused_before_training() {
    let device = gfnlm_models::parse_device("flex").unwrap().autodiff();
    let cfg = config();
    // 3 prompt tokens + 3 digits need 6 positions.
    let update = gfnlm_train::update_from_config(&cfg);
    let err = Trainer::new(
        cfg.clone(),
        tiny(&device, 5),
        task(),
        update,
        device.clone(),
    )
    .err()
    .expect("context too short");
    let msg = err.to_string();
    assert!(matches!(err, TrainError::Config(_)), "{msg}");
    assert!(
        msg.contains("6 positions") && msg.contains("at most 5") && msg.contains("max_len"),
        "{msg}"
    );
    let update = gfnlm_train::update_from_config(&cfg);
    assert!(Trainer::new(cfg, tiny(&device, 6), task(), update, device).is_ok());
}

#[test]
fn a_lora_rank_above_the_layer_width_is_a_config_error() {
    let device = gfnlm_models::parse_device("flex").unwrap().autodiff();
    let mut cfg = config();
    cfg.lora.r = 64; // k/v projections are 32 → 16
    let update = gfnlm_train::update_from_config(&cfg);
    let msg = Trainer::new(cfg, tiny(&device, 64), task(), update, device)
        .err()
        .expect("rank too large")
        .to_string();
    assert!(
        msg.contains("r = 64") && msg.contains("min(in, out) = 16"),
        "{msg}"
    );
}

#[test]
fn target_modules_that_match_nothing_list_the_model_s_layers() {
    let device = gfnlm_models::parse_device("flex").unwrap().autodiff();
    let mut cfg = config();
    cfg.lora.target_modules = vec!["c_attn".into()];
    let update = gfnlm_train::update_from_config(&cfg);
    let msg = Trainer::new(cfg, tiny(&device, 64), task(), update, device)
        .err()
        .expect("no target")
        .to_string();
    assert!(
        msg.contains("c_attn") && msg.contains("q_proj") && msg.contains("gate_proj"),
        "{msg}"
    );
    assert!(!msg.contains("adapter does not match"), "{msg}");
}

#[test]
fn a_huge_learning_rate_ends_with_the_non_finite_error_and_its_batch_file() {
    let device = gfnlm_models::parse_device("flex").unwrap().autodiff();
    let cfg = TrainConfig {
        lr: 1e30,
        max_nonfinite_in_a_row: 2,
        ..config()
    };
    let out = std::env::temp_dir().join(format!("gfnlm-hardening-lr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let update = gfnlm_train::update_from_config(&cfg);
    let mut trainer = Trainer::new(cfg, tiny(&device, 64), task(), update, device).unwrap();
    let err = loop {
        match trainer.train_step(&out) {
            Ok(s) => assert!(
                s.step < 20,
                "20 steps at lr = 1e30 without a non-finite loss"
            ),
            Err(e) => break e,
        }
    };
    let msg = err.to_string();
    let TrainError::NonFinite { batch_file, .. } = &err else {
        panic!("expected the non-finite error, got {msg}")
    };
    assert!(batch_file.is_file(), "{msg}");
    assert!(
        msg.contains("lr = 1e30") && msg.contains("Lower lr"),
        "{msg}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}
