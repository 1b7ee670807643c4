//! The rng task on the real SmolLM2 tokenizer, and its metrics on PyTorch's base-model table.

use gfnlm_tasks::{RngMetrics, RngTask};
use gfnlm_tokenizer::Tokenizer;

fn parity() -> serde_json::Value {
    let p = gfnlm_test_support::parity_dir().join("smollm2.json");
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

#[test]
fn task_on_smollm2_tokenizer_matches_the_reference_prompt_and_digits() {
    let path = gfnlm_fetch::ensure_default_model().unwrap();
    let gguf = gfnlm_gguf::GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let task = RngTask::new(&tok, None, -20.0).unwrap();
    let reference = parity();
    let it = &reference["integer_task"];
    let want: Vec<u32> = it["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(task.prompt, want);
    assert_eq!(task.terminator, 2);
    for row in it["table"].as_array().unwrap() {
        let k = row["integer"].as_u64().unwrap() as u32;
        let ids: Vec<u32> = row["continuation_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(task.spell(k), ids, "{k}");
        assert_eq!(task.parse(&ids[..ids.len() - 1]), Some(k));
    }
}

#[test]
fn metrics_reproduce_the_reference_summary_of_the_base_model() {
    let reference = parity();
    let it = &reference["integer_task"];
    let lp: Vec<f64> = it["table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["logp_total"].as_f64().unwrap())
        .collect();
    let m = RngMetrics::from_log_probs(&lp);
    let close = |a: f64, b: &serde_json::Value, tol: f64| (a - b.as_f64().unwrap()).abs() < tol;
    assert!(
        close(m.valid_mass, &it["total_mass"], 1e-9),
        "{}",
        m.valid_mass
    );
    assert!(
        close(m.kl_q_u, &it["kl_normalized_from_uniform_nats"], 1e-9),
        "{}",
        m.kl_q_u
    );
    assert!(
        close(m.kl_u_q, &it["kl_uniform_from_normalized_nats"], 1e-9),
        "{}",
        m.kl_u_q
    );
    assert!(
        close(m.entropy, &it["normalized_entropy_nats"], 1e-9),
        "{}",
        m.entropy
    );
    assert_eq!(m.top[0].0, 100);
    assert!((m.top[0].1 - 0.41).abs() < 0.01);
}
