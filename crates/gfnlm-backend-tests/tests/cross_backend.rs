//! The same numbers on every backend: each objective's value and gradients, and one LoRA
//! training step (policy terms → modified SubTB → backward → AdamW) on the tiny Llama fixture
//! with its PEFT adapter. Every backend is checked against f64 references / finite differences,
//! and every backend after the first against the first (flex) within 1e-4.
//!
//! Backends: everything compiled in (`--features wgpu,tch`), or `GFNLM_TEST_DEVICES`.

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use gfnlm_backend_tests::{backends_under_test, close};
use gfnlm_lora::load_peft;
use gfnlm_models::LlamaForCausalLm;
use gfnlm_models::generate::{position_logprobs, tokens_tensor};
use gfnlm_objectives::reference::HostBatch;
use gfnlm_objectives::{TrajectoryBatch, modified_db, modified_subtb, trajectory_balance, vargrad};
use gfnlm_tasks::Constraint;
use gfnlm_test_support::parity_dir;
use gfnlm_train::{Trajectory, policy_terms};

const TOL: f64 = 1e-4;

fn scalar(t: Tensor<1>) -> f64 {
    t.try_into_vec_as::<f64>().expect("host copy")[0]
}

fn to_host(t: Tensor<2>) -> Vec<f64> {
    t.try_into_vec_as::<f64>().expect("host copy")
}

// ------------------------------------------------------------------------- objectives

/// B = 5, T = 5; lengths cover full, partial, empty.
fn host_batch() -> HostBatch {
    let t = 5;
    let lengths = vec![5, 2, 0, 3, 5];
    let val = |b: usize, k: usize, s: f64| ((b * 7 + k * 3) as f64 * 0.37 + s).sin() * 3.0 - 1.0;
    let rows = |cols: usize, s: f64| -> Vec<Vec<f64>> {
        (0..lengths.len())
            .map(|b| (0..cols).map(|k| val(b, k, s)).collect())
            .collect()
    };
    HostBatch {
        t,
        pf: rows(t, 0.1),
        pterm: rows(t + 1, 1.3),
        r: rows(t + 1, 2.9),
        lengths,
    }
}

#[derive(Debug, Clone, Copy)]
enum Objective {
    SubTb(f64),
    Db,
    Tb,
    VarGrad,
}

const LOG_Z: f64 = 0.7;

impl Objective {
    fn reference(self, h: &HostBatch) -> f64 {
        match self {
            Objective::SubTb(l) => h.subtb(l),
            Objective::Db => h.db(),
            Objective::Tb => h.tb(&[LOG_Z]),
            Objective::VarGrad => h.vargrad(),
        }
    }

    fn loss(self, batch: &TrajectoryBatch, log_z: Tensor<1>) -> Tensor<1> {
        match self {
            Objective::SubTb(l) => modified_subtb(batch, l),
            Objective::Db => modified_db(batch),
            Objective::Tb => trajectory_balance(batch, log_z),
            Objective::VarGrad => vargrad(batch),
        }
        .expect("valid batch")
    }
}

/// Value and gradients (w.r.t. log_pf, log_pterm, log_r, log Z) on one device.
struct Evaluated {
    value: f64,
    grads: [Vec<f64>; 3],
    grad_log_z: Option<f64>,
}

fn evaluate(obj: Objective, h: &HostBatch, device: &Device) -> Evaluated {
    let ad = device.clone().autodiff();
    // Entries past each trajectory's end hold NaN: no backend may let them leak.
    let (pf, pterm, r) = h.tensors(&ad, f32::NAN);
    let (pf, pterm, r) = (pf.require_grad(), pterm.require_grad(), r.require_grad());
    let log_z =
        Tensor::<1>::from_data(TensorData::new(vec![LOG_Z as f32], [1]), &ad).require_grad();
    let batch = TrajectoryBatch::new(pf.clone(), pterm.clone(), r.clone(), h.lengths.clone())
        .expect("valid batch");
    let loss = obj.loss(&batch, log_z.clone());
    let value = scalar(loss.clone());
    let g = loss.backward();
    let grad = |x: &Tensor<2>| to_host(x.grad(&g).expect("input has a gradient"));
    Evaluated {
        value,
        grads: [grad(&pf), grad(&pterm), grad(&r)],
        grad_log_z: log_z.grad(&g).map(scalar),
    }
}

/// Central differences of the f64 reference (the losses are quadratic: exact up to rounding).
fn reference_gradients(obj: Objective, h: &HostBatch) -> [Vec<f64>; 3] {
    let step = 0.25;
    let mut out: [Vec<f64>; 3] = Default::default();
    for (which, grad) in out.iter_mut().enumerate() {
        let cols = if which == 0 { h.t } else { h.t + 1 };
        for b in 0..h.lengths.len() {
            for k in 0..cols {
                let at = |d: f64| {
                    let mut hp = h.clone();
                    match which {
                        0 => hp.pf[b][k] += d,
                        1 => hp.pterm[b][k] += d,
                        _ => hp.r[b][k] += d,
                    }
                    obj.reference(&hp)
                };
                let used = if which == 0 {
                    k < h.lengths[b]
                } else {
                    k <= h.lengths[b]
                };
                grad.push(if used {
                    (at(step) - at(-step)) / (2.0 * step)
                } else {
                    0.0
                });
            }
        }
    }
    out
}

fn assert_all_close(what: &str, got: &[f64], want: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.is_finite() && close(g, w, tol),
            "{what}[{i}]: got {g}, want {w} (tolerance {tol})"
        );
        worst = worst.max((g - w).abs());
    }
    worst
}

#[test]
fn objectives_values_and_gradients_agree_across_backends() {
    let h = host_batch();
    let backends = backends_under_test();
    for obj in [
        Objective::SubTb(1.0),
        Objective::SubTb(0.9),
        Objective::Db,
        Objective::Tb,
        Objective::VarGrad,
    ] {
        let want_value = obj.reference(&h);
        let want_grads = reference_gradients(obj, &h);
        let mut first: Option<(String, Evaluated)> = None;
        for (name, device) in &backends {
            let got = evaluate(obj, &h, device);
            assert!(
                close(got.value, want_value, TOL),
                "{obj:?} on {name}: {} vs f64 reference {want_value}",
                got.value
            );
            let mut worst = 0f64;
            for (i, (g, w)) in got.grads.iter().zip(&want_grads).enumerate() {
                let what =
                    format!("{obj:?} on {name}: gradient of input {i} vs finite differences");
                worst = worst.max(assert_all_close(&what, g, w, TOL));
            }
            if let Some(gz) = got.grad_log_z {
                let fd = (h.tb(&[LOG_Z + 0.25]) - h.tb(&[LOG_Z - 0.25])) / 0.5;
                assert!(
                    close(gz, fd, TOL),
                    "{obj:?} on {name}: d/dlogZ {gz} vs {fd}"
                );
            }
            if let Some((ref_name, reference)) = &first {
                assert!(
                    close(got.value, reference.value, TOL),
                    "{obj:?}: {name} {} vs {ref_name} {}",
                    got.value,
                    reference.value
                );
                for (i, (g, w)) in got.grads.iter().zip(&reference.grads).enumerate() {
                    let what = format!("{obj:?}: gradient of input {i}, {name} vs {ref_name}");
                    assert_all_close(&what, g, w, TOL);
                }
            }
            println!(
                "{obj:?} on {name}: value {:.6} (f64 {want_value:.6}), max |grad − fd| {worst:.2e}",
                got.value
            );
            if first.is_none() {
                first = Some((name.clone(), got));
            }
        }
    }
}

// ------------------------------------------------------------------------- LoRA step

const MAX_LEN: usize = 4;
const LR: f64 = 1e-2;

struct Fixture {
    prompt: Vec<u32>,
    trajectories: Vec<Trajectory>,
    constraint: Constraint,
    log_r: Vec<f32>,
}

fn fixture() -> Fixture {
    let dir = parity_dir();
    let path = dir.join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; point GFNLM_PARITY_DIR at the parity fixtures",
            path.display()
        )
    });
    let v: serde_json::Value = serde_json::from_str(&text).expect("expected.json parses");
    let ids = |i: usize| -> Vec<u32> {
        serde_json::from_value(v["prompts"][i]["token_ids"].clone()).expect("token ids")
    };
    let (p0, p1, p2) = (ids(0), ids(1), ids(2));
    let trajectories = vec![
        Trajectory::new(p1[..4].to_vec(), true),
        Trajectory::new(p2[3..5].to_vec(), false),
        Trajectory::new(p1[5..6].to_vec(), false),
        Trajectory::new(p2[8..11].to_vec(), false),
    ];
    // log R falls by ≈ ln(vocab) per token, like the random tiny model's log-probs, so the
    // residuals, the loss and the gradients are O(1) and f32 round-off stays far below 1e-4.
    let t = MAX_LEN;
    let log_r = (0..trajectories.len())
        .flat_map(|b| (0..=t).map(move |k| -10.6 * k as f32 - 0.3 * b as f32 - 1.0))
        .collect();
    Fixture {
        prompt: p0,
        trajectories,
        constraint: Constraint {
            termination: 2,
            allowed: None,
            vocab_alpha: 0.0,
            min_len: 0,
            max_len: MAX_LEN,
        },
        log_r,
    }
}

fn adapted_model(device: &Device) -> LlamaForCausalLm {
    let dir = parity_dir();
    let (mut model, _) =
        gfnlm_models::hf::load_llama_dir(&dir.join("tiny-llama"), device).expect("tiny-llama");
    load_peft(&mut model, &dir.join("tiny-llama-lora"), device).expect("tiny-llama-lora");
    model
}

/// The loss of the fixture's batch under `model` (graph kept when `model` is on autodiff).
fn loss_of(model: &LlamaForCausalLm, fx: &Fixture, device: &Device) -> (Tensor<1>, Vec<f64>) {
    let terms = policy_terms(model, &fx.prompt, &fx.trajectories, &fx.constraint, device);
    assert_eq!(terms.steps, MAX_LEN);
    let b = fx.trajectories.len();
    let log_r = Tensor::<2>::from_data(TensorData::new(fx.log_r.clone(), [b, MAX_LEN + 1]), device);
    let lengths = fx.trajectories.iter().map(|t| t.tokens.len()).collect();
    let pf = to_host(terms.log_pf.clone());
    let batch = TrajectoryBatch::new(terms.log_pf, terms.log_pterm, log_r, lengths)
        .and_then(|b| b.with_forced_stop(MAX_LEN))
        .expect("valid batch");
    let used: Vec<f64> = fx
        .trajectories
        .iter()
        .enumerate()
        .flat_map(|(i, t)| pf[i * MAX_LEN..i * MAX_LEN + t.tokens.len()].to_vec())
        .collect();
    (modified_subtb(&batch, 1.0).expect("loss"), used)
}

fn adapter_values(model: &LlamaForCausalLm) -> Vec<f64> {
    let mut out = Vec::new();
    model.for_each_linear(&mut |_, l| {
        if let Some(a) = &l.lora {
            out.extend(to_host(a.lora_a.val()));
            out.extend(to_host(a.lora_b.val()));
        }
    });
    out
}

fn base_values(model: &LlamaForCausalLm) -> Vec<f64> {
    let mut out = Vec::new();
    model.for_each_linear(&mut |_, l| out.extend(to_host(l.weight.val())));
    out
}

struct Step {
    /// Central difference of the loss along −∇ (should be −|∇|²).
    directional: f64,
    log_pf: Vec<f64>,
    loss: f64,
    grads: Vec<f64>,
    loss_after: f64,
    adapters_after: Vec<f64>,
}

fn training_step(fx: &Fixture, device: &Device) -> Step {
    let ad = device.clone().autodiff();
    let model = adapted_model(&ad);
    let base_before = base_values(&model);
    let (loss, log_pf) = loss_of(&model, fx, &ad);
    let value = scalar(loss.clone());
    let g = loss.backward();
    let mut grads = Vec::new();
    let mut missing = Vec::new();
    model.for_each_linear(&mut |name, l| {
        if let Some(a) = &l.lora {
            for (which, p) in [("A", &a.lora_a), ("B", &a.lora_b)] {
                match p.val().grad(&g) {
                    Some(t) => grads.extend(to_host(t)),
                    None => missing.push(format!("{name}.{which}")),
                }
            }
        }
    });
    assert!(missing.is_empty(), "adapters without gradient: {missing:?}");
    assert!(grads.iter().all(|g| g.is_finite()));

    // Directional derivative along −∇: d/dε loss(θ − ε∇) at 0 = −|∇|².
    let norm2: f64 = grads.iter().map(|g| g * g).sum();
    let eps = 1e-2 / norm2.sqrt();
    let shifted = |s: f64| {
        let mut m = model.valid();
        let mut it = grads.iter();
        m.for_each_linear_mut(&mut |_, l| {
            if let Some(a) = &mut l.lora {
                for p in [&mut a.lora_a, &mut a.lora_b] {
                    let t = p.val();
                    let dims = t.dims();
                    let n = dims[0] * dims[1];
                    let upd: Vec<f32> = to_host(t)
                        .into_iter()
                        .zip(it.by_ref().take(n))
                        .map(|(x, g)| (x - s * eps * g) as f32)
                        .collect();
                    *p = p.clone().map(|_| {
                        Tensor::from_data(TensorData::new(upd.clone(), dims), &device.clone())
                    });
                }
            }
        });
        scalar(loss_of(&m, fx, device).0)
    };
    let directional = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps);

    let params = GradientsParams::from_grads(g, &model);
    let mut optim = AdamWConfig::new().init();
    let model = optim.step(LR, model, params);
    assert_eq!(
        base_values(&model),
        base_before,
        "base weights changed: they must be frozen"
    );
    let loss_after = scalar(loss_of(&model.valid(), fx, device).0);
    Step {
        directional,
        log_pf,
        loss: value,
        grads,
        loss_after,
        adapters_after: adapter_values(&model),
    }
}

#[test]
fn lora_training_step_agrees_across_backends() {
    let fx = fixture();
    let mut first: Option<(String, Step)> = None;
    for (name, device) in backends_under_test() {
        let step = training_step(&fx, &device);
        assert!(
            step.loss_after < step.loss,
            "{name}: one AdamW step did not lower the loss ({} → {})",
            step.loss,
            step.loss_after
        );
        println!(
            "{name}: loss {:.6} → {:.6} after one step; |∇| = {:.4e}",
            step.loss,
            step.loss_after,
            step.grads.iter().map(|g| g * g).sum::<f64>().sqrt()
        );
        let norm2: f64 = step.grads.iter().map(|g| g * g).sum();
        let fd = (step.directional, close(step.directional, -norm2, 1e-2));
        if let Some((ref_name, r)) = &first {
            let vs = format!("{name} vs {ref_name}");
            assert_all_close(&format!("log q(token), {vs}"), &step.log_pf, &r.log_pf, TOL);
            assert!(
                close(step.loss, r.loss, TOL),
                "loss, {vs}: {} vs {}",
                step.loss,
                r.loss
            );
            let worst =
                assert_all_close(&format!("LoRA gradients, {vs}"), &step.grads, &r.grads, TOL);
            assert!(
                close(step.loss_after, r.loss_after, TOL),
                "loss after the step, {vs}: {} vs {}",
                step.loss_after,
                r.loss_after
            );
            let worst_w = assert_all_close(
                &format!("adapters after the step, {vs}"),
                &step.adapters_after,
                &r.adapters_after,
                TOL,
            );
            println!("{vs}: max |Δ grad| {worst:.2e}, max |Δ adapter| {worst_w:.2e}");
        }
        // After the cross-backend comparison, which says more when both fail.
        assert!(
            fd.1,
            "{name}: directional derivative {} vs −|∇|² {}",
            fd.0, -norm2
        );
        if first.is_none() {
            first = Some((name, step));
        }
    }
}

/// Decoding with the KV cache (one token at a time, and a block after a cached prefix) gives
/// the log-probs of one full forward pass, on every backend. (burn-tch once read `is_causal`
/// top-left aligned, which broke exactly these two paths; see `gfnlm_models::attention`.)
#[test]
fn cached_decoding_equals_a_full_forward_on_every_backend() {
    let fx = fixture();
    let seq: Vec<u32> = fx.trajectories[0].tokens.clone();
    let full: Vec<u32> = fx.prompt.iter().chain(&seq).copied().collect();
    let p = fx.prompt.len();
    for (name, device) in backends_under_test() {
        let model = adapted_model(&device);
        let reference = to_host(position_logprobs(&model, &full, &device));
        let vocab = reference.len() / full.len();
        let row = |i: usize| &reference[i * vocab..(i + 1) * vocab];

        // One token at a time after the prompt.
        let mut cache = model.new_cache();
        let mut logits = model.forward_last(
            tokens_tensor(std::slice::from_ref(&fx.prompt), &device),
            Some(&mut cache),
        );
        for (k, &tok) in seq.iter().enumerate() {
            let got = to_host(log_softmax(logits, 1));
            assert_all_close(
                &format!("{name}: cached decode step {k}"),
                &got,
                row(p - 1 + k),
                TOL,
            );
            logits = model.forward_last(tokens_tensor(&[vec![tok]], &device), Some(&mut cache));
        }

        // A block after the cached prompt, for several rows (teacher forcing), with and
        // without autodiff.
        let tf = |m: &LlamaForCausalLm, d: &Device| {
            let t = policy_terms(m, &fx.prompt, &fx.trajectories, &fx.constraint, d);
            (to_host(t.log_pf), to_host(t.log_pterm))
        };
        let (pf, pterm) = tf(&model, &device);
        let ad = device.clone().autodiff();
        let (pf_ad, pterm_ad) = tf(&adapted_model(&ad), &ad);
        assert_all_close(
            &format!("{name}: log q(token), plain vs autodiff"),
            &pf,
            &pf_ad,
            TOL,
        );
        assert_all_close(
            &format!("{name}: log q(⊤), plain vs autodiff"),
            &pterm,
            &pterm_ad,
            TOL,
        );
        for k in 0..seq.len() {
            let want = row(p - 1 + k)[seq[k] as usize];
            assert!(
                close(pf[k], want, TOL),
                "{name}: teacher-forced step {k}: {} vs {want}",
                pf[k]
            );
        }
    }
}

/// Loss, log q(token) and LoRA gradients of the fixture's batch under `model` (autodiff).
fn loss_and_gradients(
    model: &LlamaForCausalLm,
    fx: &Fixture,
    ad: &Device,
) -> (f64, Vec<f64>, Vec<f64>) {
    let (loss, log_pf) = loss_of(model, fx, ad);
    let value = scalar(loss.clone());
    let g = loss.backward();
    let mut grads = Vec::new();
    model.for_each_linear(&mut |name, l| {
        if let Some(a) = &l.lora {
            for p in [&a.lora_a, &a.lora_b] {
                let t = p
                    .val()
                    .grad(&g)
                    .unwrap_or_else(|| panic!("{name}: no gradient"));
                grads.extend(to_host(t));
            }
        }
    });
    (value, log_pf, grads)
}

/// Mixed precision (`gfnlm_models::precision`): with the frozen weights stored in bf16 or f16
/// the products run in that dtype, yet log-probs, loss and LoRA gradients stay within the
/// narrow dtype's rounding of the f32 values, on every backend.
#[test]
fn narrow_frozen_weights_track_f32_on_every_backend() {
    use burn::tensor::DType;
    use gfnlm_models::WeightPrecision;
    let fx = fixture();
    for (name, device) in backends_under_test() {
        let ad = device.clone().autodiff();
        let (loss, log_pf, grads) = loss_and_gradients(&adapted_model(&ad), &fx, &ad);
        let norm = grads.iter().map(|g| g * g).sum::<f64>().sqrt();
        for (precision, dtype) in [
            (WeightPrecision::Bf16, DType::BF16),
            (WeightPrecision::F16, DType::F16),
        ] {
            let mut model = adapted_model(&ad);
            if !device.supports_dtype(precision.float_dtype()) {
                let err = model
                    .set_weight_precision(precision)
                    .expect_err("an unsupported dtype must be refused");
                println!("{name}: {precision} refused: {err}");
                assert_eq!(base_values(&model), base_values(&adapted_model(&ad)));
                continue;
            }
            model
                .set_weight_precision(precision)
                .expect("supported precision");
            model.for_each_linear(&mut |n, l| {
                assert_eq!(l.weight.val().dtype(), dtype, "{name}: {n} not cast");
                let a = l.lora.as_ref().expect("adapter");
                assert_eq!(
                    a.lora_a.val().dtype(),
                    DType::F32,
                    "{name}: {n} adapter cast"
                );
            });
            let (loss_n, log_pf_n, grads_n) = loss_and_gradients(&model, &fx, &ad);
            let what = format!("{name}, {precision} vs f32");
            // bf16 keeps 8 mantissa bits (relative rounding 2⁻⁹ ≈ 0.002) on weights and inputs.
            let worst = log_pf
                .iter()
                .zip(&log_pf_n)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < 0.05, "{what}: max |Δ log q| {worst}");
            assert!(
                worst > 0.0,
                "{what}: identical log-probs: the narrow path did not run"
            );
            assert!(
                (loss - loss_n).abs() < 0.02 * loss.abs().max(1.0),
                "{what}: loss {loss_n} vs {loss}"
            );
            let diff = grads
                .iter()
                .zip(&grads_n)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt();
            assert!(
                diff < 0.03 * norm,
                "{what}: |Δ∇| {diff:.3e} vs |∇| {norm:.3e}"
            );
            println!(
                "{what}: max |Δ log q| {worst:.2e}, loss {loss_n:.5} vs {loss:.5}, |Δ∇|/|∇| {:.2e}",
                diff / norm
            );
        }
    }
}
