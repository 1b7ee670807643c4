//! The decoding baselines of `gfnlm_models::search` against Hugging Face `generate`
//! (transformers 4.55, `tests/fixtures/decoding-expected.json`, made by
//! `scripts/make-decoding-fixtures.py`) on the tiny fixtures, and their own invariants: greedy
//! is the argmax at every step, nucleus interpolates between greedy and ancestral sampling,
//! disallowed tokens never appear and `min_len` holds.

use burn::tensor::Device;
use gfnlm_models::decode::Constraint;
use gfnlm_models::generate::score;
use gfnlm_models::hf::load_dir;
use gfnlm_models::search::{
    DecodeMethod, beam_search, decode, diverse_beam_search, greedy, nucleus,
};
use gfnlm_models::{CausalLm, LanguageModel};
use gfnlm_test_support::parity_dir;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

fn device() -> Device {
    let spec = std::env::var("GFNLM_TEST_DEVICE").unwrap_or_else(|_| "flex".into());
    gfnlm_models::parse_device(&spec).unwrap()
}

fn model(name: &str, device: &Device) -> CausalLm {
    load_dir(&parity_dir().join(name), device).unwrap().0
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn expected() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/decoding-expected.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

const PROMPT: [u32; 5] = [504, 3575, 282, 4649, 314];

#[test]
fn greedy_beam_and_diverse_beam_match_hugging_face() {
    let device = device();
    let exp = expected();
    let max_new = exp["meta"]["max_new_tokens"].as_u64().unwrap() as usize;
    let mut checked = 0;
    let mut worst_score = 0.0f64;
    for (name, m) in exp["models"].as_object().unwrap() {
        let lm = model(name, &device);
        for case in m["cases"].as_array().unwrap() {
            let prompt = ids(&case["prompt"]);
            let eos = case["eos"].as_u64().unwrap() as u32;
            let kw = &case["kwargs"];
            let get = |k: &str| kw.get(k).and_then(Value::as_u64).map(|x| x as usize);
            let constraint = Constraint {
                min_len: get("min_new_tokens").unwrap_or(0),
                ..Constraint::unconstrained(eos, max_new)
            };
            let want: Vec<Vec<u32>> = case["sequences"]
                .as_array()
                .unwrap()
                .iter()
                .map(ids)
                .collect();
            let what = format!(
                "{name} prompt {} eos {eos} {}",
                case["prompt_index"], case["case"]
            );
            let beams = get("num_beams").unwrap_or(1);
            let n = get("num_return_sequences").unwrap_or(1);
            let hyps = match get("num_beam_groups") {
                _ if beams == 1 => {
                    assert_eq!(
                        vec![greedy(&lm, &prompt, &constraint, &device)],
                        want,
                        "{what}"
                    );
                    checked += 1;
                    continue;
                }
                Some(groups) => {
                    let penalty = kw["diversity_penalty"].as_f64().unwrap();
                    diverse_beam_search(
                        &lm,
                        &prompt,
                        n,
                        beams,
                        groups,
                        penalty,
                        &constraint,
                        &device,
                    )
                }
                None => beam_search(&lm, &prompt, n, beams, &constraint, &device),
            };
            let got: Vec<Vec<u32>> = hyps.iter().map(|h| h.tokens.clone()).collect();
            assert_eq!(got, want, "{what}: sequences");
            for (h, s) in hyps.iter().zip(case["scores"].as_array().unwrap()) {
                let d = (h.score - s.as_f64().unwrap()).abs();
                worst_score = worst_score.max(d);
                assert!(d < 1e-4, "{what}: score {} vs HF {s}", h.score);
            }
            checked += 1;
        }
    }
    eprintln!("{checked} cases match HF; largest sequence-score difference {worst_score:.2e}");
    assert!(checked >= 60, "only {checked} cases");
}

#[test]
fn decode_dispatches_and_greedy_repeats() {
    let device = device();
    let lm = model("tiny-llama", &device);
    let c = Constraint::unconstrained(41889, 10);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let g = decode(
        &lm,
        &PROMPT,
        3,
        &DecodeMethod::Greedy,
        &c,
        &mut rng,
        &device,
    );
    assert_eq!(g.len(), 3);
    assert!(g.iter().all(|s| *s == g[0]));
    let dynamic: &dyn LanguageModel = &lm;
    let b = decode(
        dynamic,
        &PROMPT,
        4,
        &DecodeMethod::Beam { beams: 8 },
        &c,
        &mut rng,
        &device,
    );
    let hyps = beam_search(&lm, &PROMPT, 4, 8, &c, &device);
    assert_eq!(b, hyps.into_iter().map(|h| h.tokens).collect::<Vec<_>>());
}

/// Greedy's every token is the teacher-forced argmax after the tokens before it.
#[test]
fn greedy_is_the_argmax_at_every_step() {
    let device = device();
    for name in ["tiny-llama", "tiny-gpt2"] {
        let lm = model(name, &device);
        let c = Constraint::unconstrained(u32::MAX, 12);
        let g = greedy(&lm, &PROMPT, &c, &device);
        assert_eq!(g.len(), 12, "no ⊤: runs to max_len");
        let s = score(&lm, &PROMPT, &g, 2, &device);
        for (i, &t) in g.iter().enumerate() {
            let top = &s.top_next[i];
            assert_eq!(top[0].0, t, "{name} step {i}");
            assert!(top[0].1 > top[1].1, "{name} step {i}: a tie");
        }
    }
}

#[test]
fn nucleus_goes_from_greedy_to_ancestral() {
    let device = device();
    let lm = model("tiny-llama", &device);
    let c = Constraint::unconstrained(41889, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let g = greedy(&lm, &PROMPT, &c, &device);
    for s in nucleus(&lm, &PROMPT, 4, 1e-9, &c, &mut rng, &device) {
        assert_eq!(s, g, "top_p → 0 keeps the argmax only");
    }

    // top_p = 1: the first token's frequencies follow the (constrained) softmax, as ancestral
    // sampling's do. Four allowed tokens with clearly different probabilities.
    let first = score(&lm, &PROMPT, &[], 49152, &device).top_next.remove(0);
    let pick = [first[0].0, first[50].0, first[2000].0, first[40000].0];
    let lp: Vec<f64> = pick
        .iter()
        .map(|t| first.iter().find(|x| x.0 == *t).unwrap().1 as f64)
        .collect();
    let z: f64 = lp.iter().map(|x| x.exp()).sum();
    let probs: Vec<f64> = lp.iter().map(|x| x.exp() / z).collect();
    let c1 = Constraint {
        termination: u32::MAX,
        allowed: Some(pick.to_vec()),
        vocab_alpha: -99.0,
        min_len: 0,
        max_len: 1,
    };
    let n = 4000;
    for method in [
        DecodeMethod::Nucleus { top_p: 1.0 },
        DecodeMethod::Ancestral,
    ] {
        let draws = decode(&lm, &PROMPT, n, &method, &c1, &mut rng, &device);
        let mut counts = [0usize; 4];
        for d in &draws {
            assert_eq!(d.len(), 1);
            counts[pick.iter().position(|&t| t == d[0]).expect("allowed")] += 1;
        }
        let chi2: f64 = counts
            .iter()
            .zip(&probs)
            .map(|(&o, &p)| {
                let e = p * n as f64;
                (o as f64 - e).powi(2) / e
            })
            .sum();
        // χ²(3) at p = 0.999 is 16.27.
        assert!(
            chi2 < 16.27,
            "{method:?}: counts {counts:?} vs probs {probs:?}: χ² = {chi2:.2}"
        );
    }
    // A smaller top_p drops the least likely of the four.
    let c2 = Constraint { ..c1.clone() };
    let mass_top3: f64 = probs[..3].iter().sum();
    let draws = nucleus(&lm, &PROMPT, 500, mass_top3 - 1e-3, &c2, &mut rng, &device);
    assert!(draws.iter().all(|d| d[0] != pick[3]));
}

/// Every method keeps to the allowed tokens and emits ⊤ only after `min_len` actions.
#[test]
fn constraints_hold_for_every_method() {
    let device = device();
    let lm = model("tiny-gpt2", &device);
    let term = 24947; // the tiny model's favourite token
    let allowed: Vec<u32> = vec![term, 35137, 41852, 14331, 10251, 2419, 3953, 40558, 40795];
    let c = Constraint {
        termination: term,
        allowed: Some(allowed.clone()),
        vocab_alpha: -99.0,
        min_len: 3,
        max_len: 6,
    };
    let methods = [
        DecodeMethod::Greedy,
        DecodeMethod::Beam { beams: 8 },
        DecodeMethod::DiverseBeam {
            beams: 8,
            groups: 4,
            penalty: 1.0,
        },
        DecodeMethod::Nucleus { top_p: 0.9 },
        DecodeMethod::Ancestral,
        DecodeMethod::Tempered { temperature: 2.0 },
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for m in &methods {
        let n = if m.is_deterministic() { 4 } else { 64 };
        let out = decode(&lm, &PROMPT, n, m, &c, &mut rng, &device);
        assert_eq!(out.len(), n, "{m:?}");
        for s in &out {
            assert!(
                (c.min_len..=c.max_len).contains(&s.len()),
                "{m:?}: length {} ({s:?})",
                s.len()
            );
            assert!(
                s.iter().all(|t| allowed.contains(t) && *t != term),
                "{m:?}: {s:?}"
            );
        }
    }
    // Without min_len, ⊤ does end some samples early: the check above is not vacuous.
    let free = Constraint {
        min_len: 0,
        ..c.clone()
    };
    let out = decode(
        &lm,
        &PROMPT,
        64,
        &DecodeMethod::Ancestral,
        &free,
        &mut rng,
        &device,
    );
    assert!(out.iter().any(|s| s.len() < c.min_len));
}
