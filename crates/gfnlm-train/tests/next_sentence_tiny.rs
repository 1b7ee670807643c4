//! next-sentence through the generic trainer on the tiny Llama fixture (real tokenizer):
//! rollouts respect the task's constraint, the loss is finite, the unpenalised likelihood is
//! logged beside the reward, the reward temperature anneals, and a checkpoint resumes.

use burn::tensor::Device;
use gfnlm_models::CausalLm;
use gfnlm_models::hf::load_llama_dir;
use gfnlm_tasks::{Split, TaskInputs, TaskSection};
use gfnlm_tokenizer::Tokenizer;
use gfnlm_train::{TrainConfig, Trainer};

#[test]
fn next_sentence_trains_on_the_tiny_llama() {
    let dir = std::env::temp_dir().join(format!("gfnlm-ns-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let prompts = dir.join("prompts.txt");
    std::fs::write(
        &prompts,
        "The cat sat on the mat. \nIt rained all day. \nStocks fell sharply. \nShe smiled. \n",
    )
    .unwrap();
    let tok = Tokenizer::from_file(gfnlm_test_support::tokenizer_json()).unwrap();
    let mut section = TaskSection::named("next-sentence");
    for (k, v) in [
        ("prompts", serde_json::json!(prompts.to_string_lossy())),
        ("max_len", serde_json::json!(5)),
        ("train_fraction", serde_json::json!(0.75)),
    ] {
        section.settings.insert(k.into(), v);
    }
    let mut cfg = TrainConfig {
        steps: 3,
        batch_size: 4,
        grad_accum: 2,
        lr: 1e-3,
        warmup_steps: 1,
        replay_prob: 0.3,
        tempered_prob: 0.5,
        reward_temp_start: 1.0,
        reward_temp_end: 0.8,
        reward_temp_horizon: 2,
        task: section,
        ..TrainConfig::default()
    };
    cfg.lora.r = 4;
    cfg.lora.target_modules = vec!["q_proj".into(), "v_proj".into()];
    let inputs = TaskInputs {
        tokenizer: &tok,
        data_dir: &dir,
    };
    let build = |cfg: &TrainConfig| {
        let device = Device::default().autodiff();
        let (m, _) = load_llama_dir(
            &gfnlm_test_support::parity_dir().join("tiny-llama"),
            &device,
        )
        .unwrap();
        let task = gfnlm_tasks::from_config(&cfg.task, &inputs).unwrap();
        let update = gfnlm_train::update_from_config(cfg);
        Trainer::new(cfg.clone(), CausalLm::Llama(m), task, update, device).unwrap()
    };
    let mut trainer = build(&cfg);
    assert_eq!(trainer.task.examples(Split::Train).len(), 3);
    let mut temps = Vec::new();
    for _ in 0..2 {
        let s = trainer.train_step(&dir).unwrap();
        assert!(s.loss.is_finite() && s.loss >= 0.0, "{s:?}");
        assert!(s.mean_len <= 5.0);
        let lp = s.task_metrics.get("log_p_unpenalised");
        if s.behaviour.iter().any(|b| b != "replay") {
            let lp = *lp.expect("the unpenalised likelihood is logged");
            assert!(lp.is_finite() && lp < 0.0, "{lp}");
        }
        temps.push(s.reward_temp);
    }
    assert_eq!(temps, vec![1.0, 0.9]);
    let ckpt = trainer.save_checkpoint(&dir.join("ckpt")).unwrap();
    let next = trainer.train_step(&dir).unwrap();
    let mut again = build(&cfg);
    again.resume(&ckpt).unwrap();
    let replayed = again.train_step(&dir).unwrap();
    assert_eq!(next.loss, replayed.loss, "resume is exact");
    assert_eq!(next.task_metrics, replayed.task_metrics);
    let _ = std::fs::remove_dir_all(&dir);
}
