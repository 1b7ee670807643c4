//! The arithmetic task on SmolLM2's real tokenizer and the paper's data (vocabulary, calculator
//! tool, data mix, few-shot prompt), and on the tiny Llama fixture (the reward against a hand
//! computation, the evaluation end to end).

use burn::tensor::{Device, Int, Tensor, TensorData};
use gfnlm_models::CausalLm;
use gfnlm_models::hf::load_llama_dir;
use gfnlm_tasks::arithmetic::{ArithmeticSettings, ArithmeticTask, RATIONALE_CHARS};
use gfnlm_tasks::{EvalContext, Split, Task, Trajectory};
use gfnlm_tokenizer::Tokenizer;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(gfnlm_test_support::tokenizer_json()).unwrap()
}

fn task(settings: ArithmeticSettings) -> ArithmeticTask {
    ArithmeticTask::new(&tokenizer(), &gfnlm_test_support::datasets_dir(), settings).unwrap()
}

#[test]
fn vocabulary_data_mix_and_few_shot_prompt_follow_the_reference() {
    let tok = tokenizer();
    let t = task(ArithmeticSettings::default());
    // Allowed: tokens made of digits, + - = , . and spaces, plus EOS.
    let id = |s: &str| tok.token_to_id(s).unwrap_or_else(|| panic!("no token {s}"));
    let allowed = |s: &str| t.allowed.binary_search(&id(s)).is_ok();
    for s in ["0", "7", "Ġ=", "=", "Ġ+", "Ġ-", ",", "."] {
        assert!(allowed(s), "{s} should be allowed");
    }
    for s in ["The", "Ġanswer", "Ġis", "Ċ", "Ġ*", "("] {
        assert!(!allowed(s), "{s} should not be allowed");
    }
    assert!(
        t.allowed.binary_search(&t.eos).is_ok(),
        "⊤ = EOS is allowed"
    );
    for &a in &t.allowed {
        if a != t.eos {
            let text = tok.decode(&[a]).unwrap();
            assert!(
                text.chars().all(|c| RATIONALE_CHARS.contains(c)),
                "{text:?}"
            );
        }
    }
    // 10 labelled queries (weight 1, with rationales) and the 1,000 homework queries (0.2).
    let train = t.examples(Split::Train);
    assert_eq!(train.len(), 1010);
    assert!(
        train[..10]
            .iter()
            .all(|e| e.weight == 1.0 && e.demonstration.is_some())
    );
    assert!(
        train[10..]
            .iter()
            .all(|e| e.weight == 0.2 && e.demonstration.is_none())
    );
    assert_eq!(t.examples(Split::Test).len(), 100);
    let first = &train[0];
    assert_eq!(
        tok.decode(&first.prompt).unwrap(),
        "Question: 6 - 0 - 4 - 8 = ? Answer:"
    );
    assert_eq!(
        tok.decode(first.target.as_ref().unwrap()).unwrap(),
        ". The answer is -6."
    );
    assert_eq!(
        tok.decode(first.demonstration.as_ref().unwrap()).unwrap(),
        " 6 - 0 =, 6 - 4 =, 2 - 8 ="
    );
    assert_eq!(t.answer(first), Some(-6));
    // The reward's few-shot prompt: the first 3 worked examples, full rationales, one per line.
    let p = tok.decode(&t.few_shot).unwrap();
    assert!(
        p.starts_with("Question: 6 - 0 - 4 - 8 = ? Answer: 6 - 0 = 6, 6 - 4 = 2, 2 - 8 = -6. The answer is -6.\nQuestion: 9 + 4 - 8 = ? Answer: 9 + 4 = 13, 13 - 8 = 5. The answer is 5.\n"),
        "{p}"
    );
    assert_eq!(p.lines().count(), 3);
}

#[test]
fn the_calculator_answers_after_equals_and_stays_silent_otherwise() {
    let tok = tokenizer();
    let t = task(ArithmeticSettings::default());
    let tool = t.tool().expect("the tool is on by default");
    let enc = |s: &str| tok.encode(s, false).unwrap();
    let call = |s: &str| tok.decode(&tool.call(&enc(s))).unwrap();
    assert_eq!(call(" 6 - 0 ="), " 6");
    assert_eq!(call(" 6 - 0 = 6, 6 - 4 ="), " 2");
    assert_eq!(call(" 6 - 0 = 6, 2 - 8 ="), " -6");
    // limit_capability = 2: only the last two operands are combined.
    assert_eq!(call(" 1 + 2 + 3 ="), " 5");
    // No "=" last, or nothing it may evaluate: nothing inserted.
    assert_eq!(call(" 6 - 0"), "");
    assert_eq!(call(" 3 * 4 ="), "");
    assert_eq!(call(" ="), "");
    assert!(tool.call(&[]).is_empty());
    let off = task(ArithmeticSettings {
        use_tool: false,
        ..Default::default()
    });
    assert!(off.tool().is_none());
}

/// log p(next token | tokens) for every position, with `offsets` added at positions in
/// `penalised`, in f64 from ONE plain forward pass: the definition the reward must equal.
fn log_probs(
    model: &CausalLm,
    tokens: &[u32],
    offsets: &[f32],
    penalised: impl Fn(usize) -> bool,
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
        .enumerate()
        .map(|(pos, row)| {
            let l: Vec<f64> = row
                .iter()
                .zip(offsets)
                .map(|(&x, &o)| x as f64 + if penalised(pos) { o as f64 } else { 0.0 })
                .collect();
            let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z = m + l.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            l.iter().map(|x| x - z).collect()
        })
        .collect()
}

#[test]
fn reward_of_every_state_is_the_hand_computed_likelihood_of_state_and_answer() {
    let device = Device::default();
    let tok = tokenizer();
    let (m, _) = load_llama_dir(
        &gfnlm_test_support::parity_dir().join("tiny-llama"),
        &device,
    )
    .unwrap();
    let model = CausalLm::Llama(m);
    let t = task(ArithmeticSettings {
        num_points: 1,
        min_len: 3,
        ..Default::default()
    });
    let ex = t.examples(Split::Train)[1].clone();
    // " 9 + 4 =" then the tool's " 13", then ", 13 - 8 =".
    let enc = |s: &str| tok.encode(s, false).unwrap();
    let (a, b, c) = (enc(" 9 + 4 ="), enc(" 13"), enc(", 13 - 8 ="));
    let mut traj = Trajectory::new(a.clone(), false);
    traj.tokens.extend(&b);
    traj.tokens.extend(&c);
    traj.tool = [
        vec![false; a.len()],
        vec![true; b.len()],
        vec![false; c.len()],
    ]
    .concat();
    let got = t
        .rewards(&model, &ex, std::slice::from_ref(&traj), &device)
        .remove(0);
    assert_eq!(got.len(), traj.num_actions() + 1);
    let ends = traj.state_ends();
    let y = ex.target.clone().unwrap();
    let context = t.reward_context(&ex);
    let vocab = model.vocab_size();
    let mut offsets = vec![-50.0f32; vocab];
    for &i in &t.allowed {
        offsets[i as usize] = 0.0;
    }
    for (k, &end) in ends.iter().enumerate() {
        if end < 3 {
            assert_eq!(got[k], -99.0, "state {k} is shorter than min_len");
            continue;
        }
        let mut full = context.clone();
        full.extend(&traj.tokens[..end]);
        full.extend(&y);
        let c = context.len();
        // Position p predicts token p + 1; rationale tokens sit at c..c+end.
        let lp = log_probs(
            &model,
            &full,
            &offsets,
            |p| p + 1 >= c && p + 1 < c + end,
            &device,
        );
        let want: f64 = (c..full.len()).map(|i| lp[i - 1][full[i] as usize]).sum();
        assert!(
            (got[k] - want).abs() < 2e-3,
            "state {k} (end {end}): {} vs {want}",
            got[k]
        );
    }
    // A state ending right after the tool's output includes it (the tool output is scored).
    assert!(ends.contains(&(a.len() + b.len())));
}

#[test]
fn evaluation_votes_over_samples_on_any_problem_file() {
    let device = Device::default();
    let (m, _) = load_llama_dir(
        &gfnlm_test_support::parity_dir().join("tiny-llama"),
        &device,
    )
    .unwrap();
    let model = CausalLm::Llama(m);
    let t = task(ArithmeticSettings {
        max_eval_len: 6,
        ..Default::default()
    });
    let file = std::env::temp_dir().join(format!("gfnlm-arith-{}.json", std::process::id()));
    std::fs::write(
        &file,
        r#"[{"str_query": "Question: 1 + 2 - 3 = ? Answer:", "num_sol": 0},
            {"str_query": "Question: 9 - 1 + 1 = ? Answer:", "num_sol": 9}]"#,
    )
    .unwrap();
    let ctx = EvalContext {
        model: &model,
        base: &model,
        device: &device,
        samples: Some(3),
        data: Some(&file),
        method: None,
        seed: 0,
        split: Split::Test,
    };
    let e = t.evaluate(&ctx).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(e.metrics["queries"], 2);
    assert_eq!(e.metrics["samples_per_query"], 3);
    let acc = e.metrics["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert!(e.metrics["mean_actions"].as_f64().unwrap() <= 6.0);
    assert!(e.summary[0].contains("accuracy"));
    // A file that is not the dataset's format names itself.
    let bad = std::env::temp_dir().join(format!("gfnlm-arith-bad-{}.json", std::process::id()));
    std::fs::write(&bad, "{\"not\": \"a list\"}").unwrap();
    let err = t.examples_from_file(&bad).unwrap_err().to_string();
    let _ = std::fs::remove_file(&bad);
    assert!(
        err.contains("gfnlm-arith-bad") && err.contains("JSON array"),
        "{err}"
    );
}
