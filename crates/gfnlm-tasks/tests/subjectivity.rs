//! Subjectivity with SmolLM2's real tokenizer and the repository's SUBJ files: prompts and
//! targets as the reference builds them; the E-step reward (with the wrong-label penalty)
//! against a hand computation on the tiny Llama; direct classification against the argmax of
//! hand-computed label likelihoods; the M-step's examples from the E-step's rationales.

use burn::tensor::{Device, Int, Tensor, TensorData};
use gfnlm_models::CausalLm;
use gfnlm_models::hf::load_llama_dir;
use gfnlm_tasks::subjectivity::{SubjectivitySettings, SubjectivityTask, query, read_sentences};
use gfnlm_tasks::{EvalContext, Split, Task, Trajectory};
use gfnlm_tokenizer::Tokenizer;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(gfnlm_test_support::tokenizer_json()).unwrap()
}

fn task(settings: SubjectivitySettings) -> SubjectivityTask {
    SubjectivityTask::new(&tokenizer(), &gfnlm_test_support::datasets_dir(), settings).unwrap()
}

fn tiny() -> CausalLm {
    let (m, _) = load_llama_dir(
        &gfnlm_test_support::parity_dir().join("tiny-llama"),
        &Device::default(),
    )
    .unwrap();
    CausalLm::Llama(m)
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gfnlm-subj-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// log p(continuation | prefix) from one plain forward pass, in f64.
fn log_p(model: &CausalLm, prefix: &[u32], continuation: &[u32], device: &Device) -> f64 {
    let all: Vec<u32> = prefix.iter().chain(continuation).copied().collect();
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(
            all.iter().map(|&t| t as i64).collect::<Vec<_>>(),
            [1, all.len()],
        ),
        device,
    );
    let logits = model.forward(ids, None);
    let v = logits.dims()[2];
    let host: Vec<f32> = logits.into_data().convert::<f32>().try_to_vec().unwrap();
    (prefix.len()..all.len())
        .map(|i| {
            let row = &host[(i - 1) * v..i * v];
            let m = row
                .iter()
                .map(|&x| x as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let z = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            row[all[i] as usize] as f64 - z
        })
        .sum()
}

#[test]
fn examples_follow_the_reference_query() {
    let tok = tokenizer();
    let t = task(SubjectivitySettings::default());
    assert_eq!(t.examples(Split::Train).len(), 10);
    assert_eq!(t.examples(Split::Test).len(), 100);
    let data = gfnlm_test_support::datasets_dir();
    let train = read_sentences(&data.join("subj/train.10.jsonl")).unwrap();
    let ex = &t.examples(Split::Train)[0];
    assert_eq!(
        tok.decode(&ex.prompt).unwrap(),
        format!(
            "Classify this movie review as objective or subjective: \"{}\" This review is",
            train[0].text
        )
    );
    let label = ["objective", "subjective"][train[0].label];
    assert_eq!(
        tok.decode(ex.target.as_ref().unwrap()).unwrap(),
        format!(", so it is {label}.")
    );
    let c = t.constraint(ex);
    assert_eq!((c.min_len, c.max_len), (1, 5));
    assert_eq!(Some(c.termination), tok.eos_id());
    // 20 and 50 examples, and a missing file names itself.
    let t20 = task(SubjectivitySettings {
        train: "subj/train.20.jsonl".into(),
        ..Default::default()
    });
    assert_eq!(t20.examples(Split::Train).len(), 20);
    let e = SubjectivityTask::new(
        &tok,
        &data,
        SubjectivitySettings {
            train: "subj/nope.jsonl".into(),
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("nope.jsonl"), "{e}");
}

#[test]
fn e_step_reward_is_log_p_of_z_and_y_minus_the_penalty_when_the_wrong_label_wins() {
    let device = Device::default();
    let tok = tokenizer();
    let model = tiny();
    // The same sentence under both labels: for every Z exactly one of the two is penalised.
    let dir = scratch("reward");
    let file = dir.join("two.jsonl");
    std::fs::write(
        &file,
        "{\"text\": \"a gripping , funny film\", \"label\": 0}\n{\"text\": \"a gripping , funny film\", \"label\": 1}\n",
    )
    .unwrap();
    let t = task(SubjectivitySettings {
        train: file.display().to_string(),
        min_len: 2,
        ..Default::default()
    });
    let x = tok
        .encode(&query("a gripping , funny film"), false)
        .unwrap();
    let ys = [
        tok.encode(", so it is objective.", false).unwrap(),
        tok.encode(", so it is subjective.", false).unwrap(),
    ];
    let zs: Vec<Vec<u32>> = [
        " it describes",
        " the plot is told",
        " great fun",
        " a fact",
    ]
    .iter()
    .map(|z| tok.encode(z, false).unwrap())
    .collect();
    let trajs: Vec<Trajectory> = zs
        .iter()
        .map(|z| Trajectory::new(z.clone(), false))
        .collect();
    let mut penalised = 0;
    for (label, ex) in t.examples(Split::Train).iter().enumerate() {
        let got = t.rewards(&model, ex, &trajs, &device);
        for (z, r) in zs.iter().zip(&got) {
            assert_eq!(r.len(), z.len() + 1);
            assert_eq!(&r[..2], &[-99.0, -99.0], "states shorter than min_len");
            for k in 2..=z.len() {
                let mut xz = x.clone();
                xz.extend(&z[..k]);
                let right = log_p(&model, &x, &[&z[..k], &ys[label][..]].concat(), &device);
                let wrong = log_p(&model, &xz, &ys[1 - label], &device);
                let right_y = log_p(&model, &xz, &ys[label], &device);
                let want = if wrong > right_y { right - 50.0 } else { right };
                penalised += usize::from(wrong > right_y);
                assert!(
                    (r[k] - want).abs() < 2e-3,
                    "label {label} state {k}: {} vs {want}",
                    r[k]
                );
            }
        }
    }
    // Each state is penalised under exactly one of the two labels.
    let states: usize = zs.iter().map(|z| z.len() - 1).sum();
    assert_eq!(penalised, states);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn direct_classification_is_the_argmax_of_the_label_likelihoods() {
    let device = Device::default();
    let tok = tokenizer();
    let model = tiny();
    for few_shot in [0, 2] {
        let t = task(SubjectivitySettings {
            phase: "direct".into(),
            num_test: 6,
            few_shot,
            ..Default::default()
        });
        let ctx = EvalContext {
            model: &model,
            base: &model,
            device: &device,
            samples: None,
            data: None,
            method: None,
            seed: 0,
            split: Split::Test,
        };
        let m = t.evaluate(&ctx).unwrap().metrics;
        let test =
            read_sentences(&gfnlm_test_support::datasets_dir().join("subj/test.jsonl")).unwrap();
        let ys = [
            tok.encode(" objective.", false).unwrap(),
            tok.encode(" subjective.", false).unwrap(),
        ];
        let mut correct = 0;
        for (ex, s) in t.examples(Split::Test).iter().zip(&test) {
            // The demonstration of SFT on (X, Y) is the label word.
            assert_eq!(ex.demonstration.as_ref(), Some(&ys[s.label]));
            let a = log_p(&model, &ex.prompt, &ys[0], &device);
            let b = log_p(&model, &ex.prompt, &ys[1], &device);
            correct += usize::from(usize::from(b > a) == s.label);
        }
        assert_eq!(
            m["accuracy"].as_f64().unwrap(),
            correct as f64 / 6.0,
            "{few_shot} shots"
        );
        if few_shot > 0 {
            let text = tok.decode(&t.examples(Split::Test)[0].prompt).unwrap();
            assert!(text.starts_with("Classify this movie review"), "{text}");
            assert_eq!(text.matches("This review is").count(), 3, "{text}");
        }
    }
}

#[test]
fn e_step_evaluation_writes_rationales_that_the_m_step_trains_on() {
    let device = Device::default();
    let tok = tokenizer();
    let model = tiny();
    let t = task(SubjectivitySettings {
        eval_samples: 3,
        ..Default::default()
    });
    let ctx = EvalContext {
        model: &model,
        base: &model,
        device: &device,
        samples: None,
        data: None,
        method: None,
        seed: 0,
        split: Split::Train,
    };
    let m = t.evaluate(&ctx).unwrap().metrics;
    for k in ["accuracy_greedy", "accuracy_vote", "sample_accuracy"] {
        let v = m[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    let rationales = m["rationales"].as_array().unwrap();
    assert_eq!(rationales.len(), 10);
    assert_eq!(rationales[0]["tokens"].as_array().unwrap().len(), 3);
    let dir = scratch("mstep");
    let file = dir.join("e-step-train.json");
    std::fs::write(&file, serde_json::to_string(&m).unwrap()).unwrap();
    let mt = task(SubjectivitySettings {
        phase: "m-step".into(),
        rationales: Some(file.display().to_string()),
        ..Default::default()
    });
    let train = mt.examples(Split::Train);
    assert_eq!(train.len(), 30);
    let first: Vec<u32> = serde_json::from_value(rationales[0]["tokens"][0].clone()).unwrap();
    let mut want = first.clone();
    want.extend(train[0].target.clone().unwrap());
    assert_eq!(train[0].demonstration.as_ref(), Some(&want));
    assert!(mt.constraint(&train[0]).max_len >= want.len());
    // The M-step needs its file, and refuses one written for other sentences.
    let e = SubjectivityTask::new(
        &tok,
        &gfnlm_test_support::datasets_dir(),
        SubjectivitySettings {
            phase: "m-step".into(),
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("rationales"), "{e}");
    // The 20-example file starts with the same ten sentences, so their rationales fit it; a
    // file of other sentences does not.
    let with = |train: &str| {
        SubjectivityTask::new(
            &tok,
            &gfnlm_test_support::datasets_dir(),
            SubjectivitySettings {
                phase: "m-step".into(),
                train: train.into(),
                rationales: Some(file.display().to_string()),
                ..Default::default()
            },
        )
    };
    assert!(with("subj/train.20.jsonl").is_ok());
    let other = dir.join("other.jsonl");
    let test = std::fs::read_to_string(gfnlm_test_support::datasets_dir().join("subj/test.jsonl"))
        .unwrap();
    std::fs::write(&other, test.lines().take(10).collect::<Vec<_>>().join("\n")).unwrap();
    let e = with(&other.display().to_string())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("another sentence"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
