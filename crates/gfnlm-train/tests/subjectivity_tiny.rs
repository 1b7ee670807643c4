//! Subjectivity through the generic trainer on the tiny Llama fixture (real tokenizer, the
//! repository's SUBJ files): E-step GFlowNet steps run with finite losses on the penalised
//! reward, and the M-step's supervised fine-tuning on rationale + label lowers its loss.

use burn::tensor::Device;
use gfnlm_models::CausalLm;
use gfnlm_models::hf::load_llama_dir;
use gfnlm_tasks::{Split, TaskInputs, TaskSection};
use gfnlm_tokenizer::Tokenizer;
use gfnlm_train::config::UpdateRule;
use gfnlm_train::{TrainConfig, Trainer};

fn trainer(update: UpdateRule, steps: usize, settings: &[(&str, serde_json::Value)]) -> Trainer {
    let tok = Tokenizer::from_file(gfnlm_test_support::tokenizer_json()).unwrap();
    let mut section = TaskSection::named("subjectivity");
    for (k, v) in settings {
        section.settings.insert((*k).into(), v.clone());
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
fn e_step_gflownet_and_m_step_sft_run_through_the_trainer() {
    let out = std::env::temp_dir().join(format!("gfnlm-subj-train-{}", std::process::id()));
    let mut e = trainer(UpdateRule::Gflownet, 3, &[]);
    for _ in 0..3 {
        let s = e.train_step(&out).unwrap();
        assert!(s.loss.is_finite() && s.skipped == 0, "{s:?}");
        assert!(s.mean_len >= 1.0 && s.mean_len <= 5.0, "{}", s.mean_len);
        assert!(s.mean_log_r < 0.0 && s.mean_log_r.is_finite());
    }
    // Rationales as `gfnlm eval --split train` writes them, two per training sentence.
    let tok = Tokenizer::from_file(gfnlm_test_support::tokenizer_json()).unwrap();
    let z = [
        tok.encode(" it tells the plot", false).unwrap(),
        tok.encode(" full of opinion", false).unwrap(),
    ];
    let rationales: Vec<serde_json::Value> = e
        .task
        .examples(Split::Train)
        .iter()
        .map(|ex| serde_json::json!({"id": ex.id, "prompt": ex.prompt, "tokens": z}))
        .collect();
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join("rationales.json");
    std::fs::write(
        &file,
        serde_json::json!({ "rationales": rationales }).to_string(),
    )
    .unwrap();
    let mut m = trainer(
        UpdateRule::Sft,
        25,
        &[
            ("phase", serde_json::json!("m-step")),
            ("rationales", serde_json::json!(file.display().to_string())),
        ],
    );
    assert_eq!(m.task.examples(Split::Train).len(), 20);
    let losses: Vec<f64> = (0..25).map(|_| m.train_step(&out).unwrap().loss).collect();
    let (first, last) = (losses[0], losses[20..].iter().sum::<f64>() / 5.0);
    assert!(
        last < first - 0.3,
        "M-step loss {first} → {last}: {losses:?}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
