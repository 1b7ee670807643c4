//! Parity with PyTorch/transformers on the tiny Hugging Face fixtures in
//! `crates/gfnlm-test-support/fixtures` (override with `GFNLM_PARITY_DIR`): `tiny-llama` and
//! `tiny-gpt2` against `expected.json`, `tiny-gptj` against `expected-gptj.json`.
//!
//! Every recorded quantity is checked within the README's tolerances: last-position top-20
//! log-probs (by id), per-token log-probs and their sum, log-probs of the fixed ids at every
//! position, raw last-position logits, and the 10-token greedy continuation of prompt 0 with
//! and without the KV cache.

use burn::tensor::Device;
use gfnlm_models::generate::tokens_tensor;
use gfnlm_models::hf::Architecture;
use gfnlm_models::hf::{load_dir, load_gpt2_dir, load_gptj_dir, load_llama_dir};
use gfnlm_models::{CausalLm, KvCache};
use gfnlm_test_support::{parity_dir, tokenizer_json};
use serde_json::Value;

const TOL: f64 = 1e-4;

fn reference(file: &str) -> Value {
    let p = parity_dir().join(file);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; set GFNLM_PARITY_DIR to the parity folder",
            p.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn device() -> Device {
    let spec = std::env::var("GFNLM_TEST_DEVICE").unwrap_or_else(|_| "flex".into());
    gfnlm_models::parse_device(&spec).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A loaded model with its device: logits `[T][V]` of one sequence, optionally through a
/// cache (then only the new tokens' rows).
struct Lm {
    model: CausalLm,
    device: Device,
}

impl Lm {
    fn logits(&self, tokens: &[u32], cache: Option<&mut KvCache>) -> Vec<Vec<f32>> {
        let t = self
            .model
            .forward(tokens_tensor(&[tokens.to_vec()], &self.device), cache);
        let [_, t_len, v] = t.dims();
        let flat: Vec<f32> = t.into_data().convert::<f32>().try_into_vec().unwrap();
        (0..t_len)
            .map(|i| flat[i * v..(i + 1) * v].to_vec())
            .collect()
    }
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

fn argmax(row: &[f64]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap()
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, PyTorch {want} (|diff| {} > {tol})",
        (got - want).abs()
    );
}

/// Checks every prompt of `variant` in `reference` and returns the largest log-prob error.
fn check_variant(lm: &Lm, reference: &Value, variant: &str) -> f64 {
    let fixed = ids(&reference["meta"]["fixed_token_ids"]);
    let prompts = reference["prompts"].as_array().unwrap();
    let entries = reference["variants"][variant].as_array().unwrap();
    assert_eq!(prompts.len(), entries.len());
    let mut worst = 0.0f64;
    let mut track = |what: &str, got: f64, want: f64, tol: f64| {
        assert_close(what, got, want, tol);
        if tol == TOL {
            worst = worst.max((got - want).abs());
        }
    };
    for (p, (prompt, e)) in prompts.iter().zip(entries).enumerate() {
        let toks = ids(&prompt["token_ids"]);
        let logits = lm.logits(&toks, None);
        assert_eq!(logits.len(), toks.len());
        let lp: Vec<Vec<f64>> = logits.iter().map(|r| log_softmax(r)).collect();
        let last = lp.last().unwrap();
        for (id, want) in ids(&e["top20_ids"])
            .iter()
            .zip(floats(&e["top20_logprobs"]))
        {
            track(
                &format!("{variant} prompt {p} top-20 id {id}"),
                last[*id as usize],
                want,
                TOL,
            );
        }
        let per_token = floats(&e["per_token_logprobs"]);
        assert_eq!(per_token.len(), toks.len() - 1);
        let mut sum = 0.0;
        for (i, want) in per_token.iter().enumerate() {
            let got = lp[i][toks[i + 1] as usize];
            sum += got;
            track(
                &format!("{variant} prompt {p} token {}", i + 1),
                got,
                *want,
                TOL,
            );
        }
        let n = per_token.len() as f64;
        track(
            &format!("{variant} prompt {p} seq_logprob_sum"),
            sum,
            e["seq_logprob_sum"].as_f64().unwrap(),
            n * TOL,
        );
        let table = e["fixed_ids_logprobs_all_positions"].as_array().unwrap();
        assert_eq!(table.len(), toks.len());
        for (pos, row) in table.iter().enumerate() {
            for (id, want) in fixed.iter().zip(floats(row)) {
                track(
                    &format!("{variant} prompt {p} position {pos} id {id}"),
                    lp[pos][*id as usize],
                    want,
                    TOL,
                );
            }
        }
        let raw = logits.last().unwrap();
        for (id, want) in fixed.iter().zip(floats(&e["last_logits_fixed_ids"])) {
            track(
                &format!("{variant} prompt {p} last logit id {id}"),
                raw[*id as usize] as f64,
                want,
                TOL,
            );
        }
    }
    worst
}

/// The 10-token greedy continuation of the check's prompt, with full re-forwards and with the
/// KV cache fed one token at a time; both must give PyTorch's ids and step log-probs.
fn check_greedy(lm: &Lm, check: &Value) {
    let prompt = ids(&check["prompt_ids"]);
    let want_ids = ids(&check["no_cache_ids"]);
    let want_lp = floats(&check["no_cache_step_logprobs"]);
    assert_eq!(want_ids, ids(&check["kv_cache_ids"]));

    let mut seq = prompt.clone();
    let mut got = Vec::new();
    for (step, want) in want_lp.iter().enumerate() {
        let lp = log_softmax(lm.logits(&seq, None).last().unwrap());
        let tok = argmax(&lp);
        assert_close(&format!("no-cache greedy step {step}"), lp[tok], *want, TOL);
        got.push(tok as u32);
        seq.push(tok as u32);
    }
    assert_eq!(got, want_ids, "greedy continuation without cache");

    let mut cache = lm.model.new_cache();
    let mut row = lm.logits(&prompt, Some(&mut cache)).pop().unwrap();
    let mut got = Vec::new();
    for (step, want) in want_lp.iter().enumerate() {
        let lp = log_softmax(&row);
        let tok = argmax(&lp);
        assert_close(&format!("kv-cache greedy step {step}"), lp[tok], *want, TOL);
        got.push(tok as u32);
        row = lm.logits(&[tok as u32], Some(&mut cache)).pop().unwrap();
    }
    assert_eq!(got, want_ids, "greedy continuation with the KV cache");
    assert_eq!(cache.len(), prompt.len() + want_ids.len());
}

#[test]
fn tiny_llama_matches_pytorch() {
    let device = device();
    let (model, config) = load_llama_dir(&parity_dir().join("tiny-llama"), &device).unwrap();
    assert!(config.tie_word_embeddings && model.lm_head.is_none());
    assert_eq!((config.rope_theta, config.head_dim()), (10_000.0, 4));
    let reference = reference("expected.json");
    let lm = Lm {
        model: model.into(),
        device,
    };
    let worst = check_variant(&lm, &reference, "tiny-llama");
    eprintln!("tiny-llama: max |log-prob error| {worst:.2e}");
    check_greedy(&lm, &reference["checks"]["tiny-llama_greedy10_prompt0"]);
}

#[test]
fn tiny_gpt2_matches_pytorch() {
    let device = device();
    let (model, config) = load_gpt2_dir(&parity_dir().join("tiny-gpt2"), &device).unwrap();
    assert_eq!((config.inner_dim(), config.n_positions), (64, 128));
    let reference = reference("expected.json");
    let lm = Lm {
        model: model.into(),
        device,
    };
    let worst = check_variant(&lm, &reference, "tiny-gpt2");
    eprintln!("tiny-gpt2: max |log-prob error| {worst:.2e}");
    check_greedy(&lm, &reference["checks"]["tiny-gpt2_greedy10_prompt0"]);
}

#[test]
fn tiny_gptj_matches_pytorch() {
    let device = device();
    let (model, config) = load_gptj_dir(&parity_dir().join("tiny-gptj"), &device).unwrap();
    assert_eq!((config.rotary_dim(), config.head_dim()), (4, 8));
    let reference = reference("expected-gptj.json");
    let lm = Lm {
        model: model.into(),
        device,
    };
    let worst = check_variant(&lm, &reference, "tiny-gptj");
    eprintln!("tiny-gptj: max |log-prob error| {worst:.2e}");
    check_greedy(&lm, &reference["checks"]["tiny-gptj_greedy10_prompt0"]);
}

#[test]
fn load_dir_detects_each_architecture() {
    let device = device();
    // The three models share SmolLM2's tokenizer; only `tiny-llama/` carries a copy, so there
    // `load_dir` also checks it against the embedding.
    let tokenizer = gfnlm_models::hf::tokenizer_vocab_size(&tokenizer_json());
    assert_eq!(tokenizer.unwrap(), 49152);
    assert!(parity_dir().join("tiny-llama/tokenizer.json").is_file());
    for (name, arch) in [
        ("tiny-llama", Architecture::Llama),
        ("tiny-gpt2", Architecture::Gpt2),
        ("tiny-gptj", Architecture::GptJ),
    ] {
        let dir = parity_dir().join(name);
        let (model, config) = load_dir(&dir, &device).unwrap();
        assert_eq!(model.architecture(), arch, "{name}");
        assert_eq!(config.architecture(), arch, "{name}");
        assert_eq!(
            (model.vocab_size(), model.num_layers()),
            (49152, 2),
            "{name}"
        );
        // `CausalLm::load` dispatches a directory to the HF loader.
        let (again, _) = CausalLm::load(&dir, &device).unwrap();
        assert_eq!(again.architecture(), arch);
    }
}

#[test]
fn generate_scores_every_architecture_like_pytorch() {
    // `score_continuations` runs the prompt once, shares its KV cache and right-pads the
    // continuations: the scores must still be PyTorch's per-token log-probs.
    let device = device();
    for (name, file) in [
        ("tiny-llama", "expected.json"),
        ("tiny-gpt2", "expected.json"),
        ("tiny-gptj", "expected-gptj.json"),
    ] {
        let (model, _) = load_dir(&parity_dir().join(name), &device).unwrap();
        let reference = reference(file);
        let prompts = reference["prompts"].as_array().unwrap();
        let entries = reference["variants"][name].as_array().unwrap();
        let split = 2;
        let conts: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| ids(&p["token_ids"])[split..].to_vec())
            .collect();
        // All three prompts share no prefix, so score each against its own first tokens.
        for (p, (prompt, e)) in prompts.iter().zip(entries).enumerate() {
            let toks = ids(&prompt["token_ids"]);
            let got = gfnlm_models::generate::score_continuations(
                &model,
                &toks[..split],
                std::slice::from_ref(&conts[p]),
                &device,
            );
            let want = &floats(&e["per_token_logprobs"])[split - 1..];
            assert_eq!(got[0].len(), want.len());
            for (i, (g, w)) in got[0].iter().zip(want).enumerate() {
                assert_close(
                    &format!("{name} prompt {p} scored token {i}"),
                    *g as f64,
                    *w,
                    TOL,
                );
            }
        }
    }
}
