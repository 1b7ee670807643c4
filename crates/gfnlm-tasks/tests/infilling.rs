//! Story infilling on the repository's stories with SmolLM2's real tokenizer: prompts, targets
//! and demonstrations as the reference builds them; the reward of every state against a hand
//! computation on the tiny Llama fixture; the evaluation end to end on any stories CSV.

use burn::tensor::{Device, Int, Tensor, TensorData};
use gfnlm_models::CausalLm;
use gfnlm_models::hf::load_llama_dir;
use gfnlm_tasks::infilling::{InfillingSettings, InfillingTask, read_stories};
use gfnlm_tasks::{EvalContext, Split, Task, Trajectory};
use gfnlm_tokenizer::Tokenizer;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(gfnlm_test_support::tokenizer_json()).unwrap()
}

fn task(settings: InfillingSettings) -> InfillingTask {
    InfillingTask::new(&tokenizer(), &gfnlm_test_support::datasets_dir(), settings).unwrap()
}

fn tiny() -> CausalLm {
    let (m, _) = load_llama_dir(
        &gfnlm_test_support::parity_dir().join("tiny-llama"),
        &Device::default(),
    )
    .unwrap();
    CausalLm::Llama(m)
}

#[test]
fn examples_follow_the_reference_query_and_split() {
    let tok = tokenizer();
    let t = task(InfillingSettings::default());
    assert_eq!(t.examples(Split::Train).len(), 200);
    assert_eq!(t.examples(Split::Test).len(), 32);
    let stories =
        read_stories(&gfnlm_test_support::datasets_dir().join("stories/stories.csv")).unwrap();
    let ex = &t.examples(Split::Train)[0];
    let [s1, s2, s3, s4, s5] = &stories[0].sentences;
    assert_eq!(
        tok.decode(&ex.prompt).unwrap(),
        format!("Beginning: {s1} {s2} {s3}\nEnding: {s5}\nMiddle:")
    );
    assert_eq!(
        tok.decode(ex.target.as_ref().unwrap()).unwrap(),
        format!(" {s5}")
    );
    assert_eq!(
        tok.decode(ex.demonstration.as_ref().unwrap()).unwrap(),
        format!(" {s4}")
    );
    assert_eq!(t.examples(Split::Test)[0].id, stories[200].id);
    let c = t.constraint(ex);
    assert_eq!((c.min_len, c.max_len), (5, 25));
    assert_eq!(Some(c.termination), tok.eos_id());
    assert!(c.allowed.is_none());
}

/// log p(next token | tokens) at every position from one plain forward pass, in f64.
fn log_probs(model: &CausalLm, tokens: &[u32], device: &Device) -> Vec<Vec<f64>> {
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(
            tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(),
            [1, tokens.len()],
        ),
        device,
    );
    let logits = model.forward(ids, None);
    let v = logits.dims()[2];
    let host: Vec<f32> = logits.into_data().convert::<f32>().try_to_vec().unwrap();
    host.chunks(v)
        .map(|row| {
            let m = row
                .iter()
                .map(|&x| x as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let z = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            row.iter().map(|&x| x as f64 - z).collect()
        })
        .collect()
}

#[test]
fn reward_of_every_state_is_log_p_of_state_and_ending_after_the_beginning() {
    let device = Device::default();
    let tok = tokenizer();
    let model = tiny();
    let t = task(InfillingSettings {
        num_train: 3,
        num_test: 0,
        min_len: 3,
        ..Default::default()
    });
    let ex = t.examples(Split::Train)[2].clone();
    let stories =
        read_stories(&gfnlm_test_support::datasets_dir().join("stories/stories.csv")).unwrap();
    let [s1, s2, s3, _, s5] = &stories[2].sentences;
    let beginning = tok.encode(&format!("{s1} {s2} {s3}"), false).unwrap();
    let y = tok.encode(&format!(" {s5}"), false).unwrap();
    let z = tok.encode(" She called her friend to ask", false).unwrap();
    let short = Trajectory::new(z[..2].to_vec(), false);
    let traj = Trajectory::new(z.clone(), false);
    let got = t.rewards(&model, &ex, &[traj.clone(), short], &device);
    assert_eq!(got[0].len(), z.len() + 1);
    assert_eq!(got[1], vec![-99.0; 3], "every state shorter than min_len");
    // Evaluation scores the last state alone, to the same value.
    let last = t.terminal_rewards(&model, &ex, std::slice::from_ref(&traj), &device);
    assert!((last[0] - got[0][z.len()]).abs() < 1e-4, "{last:?}");
    for (k, &r) in got[0].iter().enumerate() {
        if k < 3 {
            assert_eq!(r, -99.0, "state {k}");
            continue;
        }
        let mut full = beginning.clone();
        full.extend(&z[..k]);
        full.extend(&y);
        let lp = log_probs(&model, &full, &device);
        let want: f64 = (beginning.len()..full.len())
            .map(|i| lp[i - 1][full[i] as usize])
            .sum();
        assert!((r - want).abs() < 2e-3, "state {k}: {r} vs {want}");
    }
}

#[test]
fn evaluation_scores_samples_against_the_gold_middle_on_any_csv() {
    let device = Device::default();
    let model = tiny();
    let t = task(InfillingSettings {
        num_train: 2,
        num_test: 2,
        max_len: 6,
        eval_samples: 3,
        ..Default::default()
    });
    let dir = std::env::temp_dir().join(format!("gfnlm-infill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("mine.csv");
    std::fs::write(
        &csv,
        "storyid,storytitle,sentence1,sentence2,sentence3,sentence4,sentence5\n\
         a,T,Ann woke up.,She was late.,\"She ran, fast.\",She caught the bus.,She made it.\n",
    )
    .unwrap();
    let ctx = EvalContext {
        model: &model,
        base: &model,
        device: &device,
        samples: None,
        data: Some(&csv),
        method: None,
        seed: 1,
        split: Split::Test,
    };
    let e = t.evaluate(&ctx).unwrap();
    let m = &e.metrics;
    assert_eq!(m["stories"], 1);
    assert_eq!(m["samples_per_story"], 3);
    assert_eq!(m["examples"][0]["gold"], "She caught the bus.");
    for k in ["bleu4", "gleu", "bertscore_f1", "diversity"] {
        let v = m[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    assert_eq!(m["encoder"], "all-MiniLM-L6-v2");
    assert!(m["mean_log_r"].as_f64().unwrap() < 0.0);
    let tokens = m["mean_tokens"].as_f64().unwrap();
    assert!((5.0..=6.0).contains(&tokens), "{tokens}");
    // The shipped split evaluates too (no --data).
    let ctx = EvalContext { data: None, ..ctx };
    assert_eq!(t.evaluate(&ctx).unwrap().metrics["stories"], 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn story_mode_is_the_story_language_model_of_the_reward() {
    let device = Device::default();
    let tok = tokenizer();
    let model = tiny();
    let t = task(InfillingSettings {
        num_train: 2,
        num_test: 2,
        max_len: 80,
        mode: "story".into(),
        ..Default::default()
    });
    let stories =
        read_stories(&gfnlm_test_support::datasets_dir().join("stories/stories.csv")).unwrap();
    let [s1, s2, s3, s4, s5] = &stories[0].sentences;
    let ex = t.examples(Split::Train)[0].clone();
    assert_eq!(tok.decode(&ex.prompt).unwrap(), format!("{s1} {s2} {s3}"));
    assert_eq!(
        tok.decode(ex.demonstration.as_ref().unwrap()).unwrap(),
        format!(" {s4} {s5}")
    );
    assert!(ex.target.is_none());
    // log R(s) = log p(s ⊤ | beginning).
    let eos = tok.eos_id().unwrap();
    let z = tok
        .encode(" He smiled at the old man and left", false)
        .unwrap();
    let got = t.rewards(&model, &ex, &[Trajectory::new(z.clone(), false)], &device);
    let mut full = ex.prompt.clone();
    full.extend(&z);
    full.push(eos);
    let lp = log_probs(&model, &full, &device);
    let want: f64 = (ex.prompt.len()..full.len())
        .map(|i| lp[i - 1][full[i] as usize])
        .sum();
    let last = *got[0].last().unwrap();
    assert!((last - want).abs() < 2e-3, "{last} vs {want}");
    // Evaluation: held-out log p(" s4 s5" | "s1 s2 s3"), the same with and without adapter here.
    let ctx = EvalContext {
        model: &model,
        base: &model,
        device: &device,
        samples: None,
        data: None,
        method: None,
        seed: 1,
        split: Split::Test,
    };
    let m = t.evaluate(&ctx).unwrap().metrics;
    assert_eq!(m["stories"], 2);
    let want: f64 = t
        .examples(Split::Test)
        .iter()
        .map(|test| {
            let mut full = test.prompt.clone();
            full.extend(test.demonstration.as_ref().unwrap());
            let lp = log_probs(&model, &full, &device);
            (test.prompt.len()..full.len())
                .map(|i| lp[i - 1][full[i] as usize])
                .sum::<f64>()
        })
        .sum::<f64>()
        / 2.0;
    let mean = m["log_p_model"].as_f64().unwrap();
    assert_eq!(mean, m["log_p_base"].as_f64().unwrap());
    assert!((mean - want).abs() < 5e-3, "{mean} vs {want}");
    let bad = InfillingTask::new(
        &tok,
        &gfnlm_test_support::datasets_dir(),
        InfillingSettings {
            mode: "poem".into(),
            ..Default::default()
        },
    );
    assert!(bad.is_err());
}
