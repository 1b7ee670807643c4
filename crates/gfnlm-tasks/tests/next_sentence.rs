//! next-sentence on SmolLM2's real tokenizer (the illegal-token rule) and on the tiny Llama
//! fixture (the reward against a hand computation, the evaluation end to end).

use burn::tensor::{Device, Int, Tensor, TensorData};
use gfnlm_models::CausalLm;
use gfnlm_models::hf::load_llama_dir;
use gfnlm_tasks::next_sentence::{NextSentenceSettings, NextSentenceTask, illegal_reason};
use gfnlm_tasks::{EvalContext, Example, RewardContext, Split, Task, TaskSection, Trajectory};
use gfnlm_tokenizer::Tokenizer;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(gfnlm_test_support::tokenizer_json()).unwrap()
}

fn prompt_file(lines: &[&str]) -> tempfile_path::TempFile {
    tempfile_path::TempFile::with(&(lines.join("\n") + "\n"))
}

/// A file under the system temp folder, removed on drop.
mod tempfile_path {
    pub struct TempFile(pub std::path::PathBuf);
    impl TempFile {
        pub fn with(text: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "gfnlm-ns-{}-{}.txt",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&p, text).unwrap();
            Self(p)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn task(tok: &Tokenizer, file: &std::path::Path, max_len: usize) -> NextSentenceTask {
    let settings = NextSentenceSettings {
        prompts: file.to_string_lossy().into(),
        max_len,
        ..Default::default()
    };
    NextSentenceTask::new(tok, std::path::Path::new("/"), settings).unwrap()
}

#[test]
fn smollm2_illegal_tokens_follow_the_documented_rule() {
    let tok = tokenizer();
    let f = prompt_file(&["One prompt. ", "Another prompt. "]);
    let t = task(&tok, &f.0, 30);
    assert_eq!(t.termination, 30, "\".\" ends \"A sentence.\" in SmolLM2");
    let id = |s: &str| tok.token_to_id(s).unwrap_or_else(|| panic!("no token {s}"));
    let banned = |s: &str| t.illegal.binary_search(&id(s)).is_ok();
    // Byte-level forms: Ġ = leading space, Ċ = newline.
    for s in [
        "Ċ",
        "ĊĊ",
        "ĉ",
        "\"",
        "Ġ\"",
        "..",
        "...",
        "Ġ.",
        "!",
        "?",
        "Ġhttp",
        "://",
        "Mr",
        "ĠMr",
        "ĠDr",
        "--",
        "==",
        "A",
        "<|im_end|>",
        "<|endoftext|>",
    ] {
        assert!(banned(s), "{s} should be illegal");
    }
    for s in [
        "Ġthe", "The", "ĠA", "ĠI", ",", "Ġ-", "'s", "2", ":", "Ġ(", ")",
    ] {
        assert!(!banned(s), "{s} should be legal");
    }
    assert!(!banned("."), "\".\" is ⊤, never illegal");
    // The list is exactly the rule (plus added tokens), and small next to the vocabulary.
    let added = tok.inner().get_added_tokens_decoder();
    for &i in &t.illegal {
        let text = tok.decode(&[i]).unwrap();
        assert!(
            added.contains_key(&i) || illegal_reason(&text).is_some(),
            "{i} {text:?}"
        );
    }
    let n = t.illegal.len();
    eprintln!("{n} illegal tokens of {}", tok.vocab_size());
    assert!((500..8000).contains(&n), "{n} illegal tokens");
    // Every legal token passes the rule.
    for i in (0..tok.vocab_size() as u32).step_by(7) {
        if t.illegal.binary_search(&i).is_err() && i != t.termination {
            assert_eq!(illegal_reason(&tok.decode(&[i]).unwrap()), None, "{i}");
        }
    }
    // The policy's constraint bans them with −99 and keeps ".".
    let c = t.constraint(&t.examples(Split::Train)[0]);
    let offsets = c.logit_offsets(tok.vocab_size());
    assert_eq!(offsets[30], 0.0);
    assert_eq!(offsets[id("Ċ") as usize], -99.0);
    assert_eq!((c.min_len, c.max_len), (1, 30));
}

#[test]
fn prompts_split_like_the_reference_and_errors_name_the_file() {
    let tok = tokenizer();
    let lines: Vec<String> = (0..40).map(|i| format!("Prompt number {i}. ")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let f = prompt_file(&refs);
    let t = task(&tok, &f.0, 30);
    assert_eq!(t.examples(Split::Train).len(), 38);
    assert_eq!(t.examples(Split::Validation).len(), 2);
    let v = &t.examples(Split::Validation)[0];
    assert_eq!(v.id, "line-39");
    // Trailing space kept, no BOS.
    assert_eq!(v.prompt, tok.encode("Prompt number 38. ", false).unwrap());
    // A missing file names the path and the fix.
    let s = NextSentenceSettings {
        prompts: "/nonexistent/prompts.txt".into(),
        ..Default::default()
    };
    let e = NextSentenceTask::new(&tok, std::path::Path::new("/"), s)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/prompts.txt") && e.contains("datasets/openwebtext"),
        "{e}"
    );
    // Unknown keys are refused through the registry.
    let mut section = TaskSection::named("next-sentence");
    section
        .settings
        .insert("max_lenn".into(), serde_json::json!(3));
    let e = gfnlm_tasks::check_config(&section).unwrap_err().to_string();
    assert!(e.contains("max_lenn"), "{e}");
}

/// log p(next = every token | tokens) in f64, after `offsets`, from ONE plain forward pass (no
/// cache, no shared prefix): the definition the reward must equal.
fn next_token_log_probs(
    model: &CausalLm,
    tokens: &[u32],
    offsets: &[f32],
    device: &Device,
) -> Vec<Vec<f64>> {
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(
            tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(),
            [1, tokens.len()],
        ),
        device,
    );
    let logits = model.forward(ids, None);
    let v = logits.dims()[2];
    let host: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    host.chunks(v)
        .map(|row| {
            let l: Vec<f64> = row
                .iter()
                .zip(offsets)
                .map(|(&x, &o)| x as f64 + o as f64)
                .collect();
            let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z = m + l.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            l.iter().map(|x| x - z).collect()
        })
        .collect()
}

#[test]
fn reward_equals_the_hand_computed_likelihood_of_every_prefix_with_penalties() {
    let device = Device::default();
    let tok = tokenizer();
    let (model, _) = load_llama_dir(
        &gfnlm_test_support::parity_dir().join("tiny-llama"),
        &device,
    )
    .unwrap();
    let model = CausalLm::Llama(model);
    let f = prompt_file(&["The cat sat on the mat. ", "It rained. "]);
    let t = task(&tok, &f.0, 8);
    let ex: Example = t.examples(Split::Train)[0].clone();
    let newline = tok.token_to_id("Ċ").unwrap();
    let words = tok.encode("It was happy", false).unwrap();
    let mut with_illegal = words.clone();
    with_illegal.insert(1, newline);
    let trajs = vec![
        Trajectory::new(words.clone(), false),
        Trajectory::new(with_illegal.clone(), false),
        Trajectory::new(vec![], false),
    ];
    let ctx = RewardContext {
        base: &model,
        device: &device,
    };
    let got = t.log_rewards(&ex, &trajs, &ctx);
    let vocab = model.vocab_size();
    let mut offsets = vec![0.0f32; vocab];
    for &i in &t.illegal {
        offsets[i as usize] = -50.0;
    }
    for (traj, r) in trajs.iter().zip(&got) {
        assert_eq!(r.len(), traj.tokens.len() + 1);
        assert_eq!(
            r[0], -99.0,
            "the empty sentence gets the min-length penalty"
        );
        let mut full = ex.prompt.clone();
        full.extend(&traj.tokens);
        let lp = next_token_log_probs(&model, &full, &offsets, &device);
        let p = ex.prompt.len();
        let mut prefix = 0.0;
        for k in 1..=traj.tokens.len() {
            prefix += lp[p + k - 2][traj.tokens[k - 1] as usize];
            let want = prefix + lp[p + k - 1][t.termination as usize];
            assert!((r[k] - want).abs() < 1e-3, "prefix {k}: {} vs {want}", r[k]);
        }
    }
    // The newline costs about 50 nats more in the penalised reward than its plain likelihood.
    let plain = t.score_sentences(&model, &ex.prompt, &[with_illegal], &device);
    let gap = plain.log_p[0] - plain.log_p_penalised[0];
    assert!((45.0..55.0).contains(&gap), "penalty gap {gap}");
}

#[test]
fn evaluation_samples_legal_sentences_and_reports_every_metric() {
    let device = Device::default();
    let tok = tokenizer();
    let (model, _) = load_llama_dir(
        &gfnlm_test_support::parity_dir().join("tiny-llama"),
        &device,
    )
    .unwrap();
    let model = CausalLm::Llama(model);
    let f = prompt_file(&[
        "The cat sat on the mat. ",
        "It rained all day. ",
        "Stocks fell. ",
    ]);
    let t = task(&tok, &f.0, 6);
    let other = prompt_file(&["A prompt nobody has seen. "]);
    let ctx = EvalContext {
        model: &model,
        base: &model,
        device: &device,
        samples: Some(4),
        data: Some(&other.0),
        method: None,
        seed: 1,
        split: Split::Validation,
    };
    let e = t.evaluate(&ctx).unwrap();
    let m = &e.metrics;
    assert_eq!(m["prompts"], 1, "--data replaces the split");
    assert_eq!(m["samples_per_prompt"], 4);
    let sentences = m["sentences"][0].as_array().unwrap();
    assert_eq!(sentences.len(), 4);
    for key in ["mean_log_p", "max_log_p", "mean_len", "log_ratio_var"] {
        assert!(m[key].as_f64().unwrap().is_finite(), "{key}: {m}");
    }
    assert!(m["max_log_p"].as_f64().unwrap() >= m["mean_log_p"].as_f64().unwrap());
    assert!(m["mean_len"].as_f64().unwrap() <= 6.0);
    // No sampled sentence contains what illegal tokens spell (the policy's −99 offset).
    for s in sentences {
        let s = s.as_str().unwrap();
        assert!(!s.contains(['\n', '.', '!', '?', '"']), "{s:?}");
    }
    assert!(e.markdown.contains("| method |"));
}
