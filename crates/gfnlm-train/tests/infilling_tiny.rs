//! Story infilling through the generic trainer on the tiny Llama fixture (real tokenizer, the
//! repository's stories): supervised fine-tuning on the gold middles lowers their loss, and
//! GFlowNet steps run with finite losses on rewards from the base model.

use burn::tensor::Device;
use gfnlm_models::CausalLm;
use gfnlm_models::hf::load_llama_dir;
use gfnlm_tasks::{TaskInputs, TaskSection};
use gfnlm_tokenizer::Tokenizer;
use gfnlm_train::config::UpdateRule;
use gfnlm_train::{TrainConfig, Trainer};

fn trainer(update: UpdateRule, steps: usize) -> Trainer {
    let tok = Tokenizer::from_file(gfnlm_test_support::tokenizer_json()).unwrap();
    let mut section = TaskSection::named("infilling");
    for (k, v) in [
        ("num_train", serde_json::json!(4)),
        ("num_test", serde_json::json!(0)),
        ("max_len", serde_json::json!(12)),
    ] {
        section.settings.insert(k.into(), v);
    }
    let data = gfnlm_test_support::datasets_dir();
    let inputs = TaskInputs {
        tokenizer: &tok,
        data_dir: &data,
    };
    let mut cfg = TrainConfig {
        steps,
        batch_size: 4,
        grad_accum: 2,
        lr: 2e-2,
        warmup_steps: 1,
        update,
        task: section,
        ..TrainConfig::default()
    };
    cfg.lora.r = 4;
    cfg.lora.alpha = 8.0;
    let device = Device::default().autodiff();
    let (m, _) = load_llama_dir(
        &gfnlm_test_support::parity_dir().join("tiny-llama"),
        &device,
    )
    .unwrap();
    let task = gfnlm_tasks::from_config(&cfg.task, &inputs).unwrap();
    let update = gfnlm_train::update_from_config(&cfg);
    Trainer::new(cfg, CausalLm::Llama(m), task, update, device).unwrap()
}

#[test]
fn sft_on_gold_middles_and_gflownet_steps_run_on_stories() {
    let out = std::env::temp_dir().join(format!("gfnlm-infill-train-{}", std::process::id()));
    let mut sft = trainer(UpdateRule::Sft, 25);
    let losses: Vec<f64> = (0..25)
        .map(|_| sft.train_step(&out).unwrap().loss)
        .collect();
    let (first, last) = (losses[0], losses[20..].iter().sum::<f64>() / 5.0);
    assert!(last < first - 0.3, "SFT loss {first} → {last}: {losses:?}");
    let mut gfn = trainer(UpdateRule::Gflownet, 3);
    for _ in 0..3 {
        let s = gfn.train_step(&out).unwrap();
        assert!(s.loss.is_finite() && s.skipped == 0, "{s:?}");
        assert!(s.mean_log_r < 0.0 && s.mean_log_r.is_finite());
        assert!(s.mean_len >= 5.0 && s.mean_len <= 12.0, "{}", s.mean_len);
        assert!(s.task_metrics.contains_key("forced_stop"));
    }
    let _ = std::fs::remove_dir_all(&out);
}
