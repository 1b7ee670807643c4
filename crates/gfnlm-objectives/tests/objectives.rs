//! Behaviour tests: every vectorised objective against a plain f64 double loop written from the
//! definition, finite-difference gradients, the paper's known-answer vector, degenerate input.

use burn::tensor::{Device, Tensor, TensorData};
use gfnlm_objectives::{
    ObjectiveError, TrajectoryBatch, diagnostics, modified_db, modified_subtb,
    modified_subtb_normaliser, trajectory_balance, vargrad,
};
use proptest::prelude::*;

// ---------------------------------------------------------------- plain f64 reference

use gfnlm_objectives::reference::HostBatch as Host;

fn scalar(t: Tensor<1>) -> f64 {
    assert_eq!(t.dims(), [1]);
    t.try_into_vec_as::<f64>().unwrap()[0]
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1.0)
}

/// Random batches: B in 1..=6, T in 1..=9, lengths in 0..=T, values in [-8, 8].
fn host_strategy() -> impl Strategy<Value = Host> {
    (1usize..=6, 1usize..=9).prop_flat_map(|(bsz, t)| {
        (
            prop::collection::vec(0..=t, bsz),
            prop::collection::vec(prop::collection::vec(-8.0f64..8.0, t), bsz),
            prop::collection::vec(prop::collection::vec(-8.0f64..8.0, t + 1), bsz),
            prop::collection::vec(prop::collection::vec(-8.0f64..8.0, t + 1), bsz),
        )
            .prop_map(move |(lengths, pf, pterm, r)| Host {
                t,
                pf,
                pterm,
                r,
                lengths,
            })
    })
}

fn garbage_strategy() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(1e30f32),
        -5.0f32..5.0
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn subtb_matches_double_loop(h in host_strategy(), lambda in 0.0f64..1.5, garbage in garbage_strategy()) {
        let device = Device::flex();
        let got = modified_subtb(&h.batch(&device, garbage), lambda);
        if h.lengths.iter().all(|&n| n == 0) {
            prop_assert_eq!(got.unwrap_err(), ObjectiveError::NoTransitions);
        } else {
            let (got, want) = (scalar(got.unwrap()), h.subtb(lambda));
            prop_assert!(close(got, want, 1e-4), "got {got}, want {want}");
        }
    }

    /// What data-parallel ranks rely on: a batch split in two parts P, Q gives
    /// loss(P ∪ Q)·N(P ∪ Q) = loss(P)·N(P) + loss(Q)·N(Q) with N = modified_subtb_normaliser.
    #[test]
    fn subtb_normaliser_decomposes_a_split_batch(
        h in host_strategy(),
        lambda in 0.0f64..1.5,
        cut in 0usize..6,
    ) {
        prop_assume!(h.lengths.iter().any(|&n| n > 0));
        let device = Device::flex();
        let cut = cut.min(h.lengths.len());
        let part = |rows: std::ops::Range<usize>| Host {
            t: h.t,
            pf: h.pf[rows.clone()].to_vec(),
            pterm: h.pterm[rows.clone()].to_vec(),
            r: h.r[rows.clone()].to_vec(),
            lengths: h.lengths[rows].to_vec(),
        };
        let weighted = |p: &Host| {
            let n = modified_subtb_normaliser(&p.lengths, lambda);
            if p.lengths.iter().all(|&l| l == 0) {
                prop_assert_eq!(n, 0.0);
                return Ok(0.0);
            }
            Ok(scalar(modified_subtb(&p.batch(&device, 0.0), lambda).unwrap()) * n)
        };
        let whole = weighted(&h)?;
        let split = weighted(&part(0..cut))? + weighted(&part(cut..h.lengths.len()))?;
        prop_assert!(close(split, whole, 1e-4), "split {split}, whole {whole}");
    }

    #[test]
    fn db_matches_double_loop(h in host_strategy(), garbage in garbage_strategy()) {
        let device = Device::flex();
        let got = modified_db(&h.batch(&device, garbage));
        if h.lengths.iter().all(|&n| n == 0) {
            prop_assert_eq!(got.unwrap_err(), ObjectiveError::NoTransitions);
        } else {
            let (got, want) = (scalar(got.unwrap()), h.db());
            prop_assert!(close(got, want, 1e-4), "got {got}, want {want}");
        }
    }

    #[test]
    fn tb_and_vargrad_match_loops(
        h in host_strategy(),
        z in prop::collection::vec(-20.0f64..20.0, 6),
        garbage in garbage_strategy(),
    ) {
        let device = Device::flex();
        let batch = h.batch(&device, garbage);
        let bsz = h.lengths.len();
        let scalar_z = Tensor::<1>::from_data(TensorData::new(vec![z[0] as f32], [1]), &device);
        let got = scalar(trajectory_balance(&batch, scalar_z).unwrap());
        prop_assert!(close(got, h.tb(&z[..1]), 1e-4), "scalar log Z: got {got}");
        let per_prompt: Vec<f32> = z[..bsz].iter().map(|&v| v as f32).collect();
        let per_prompt = Tensor::<1>::from_data(TensorData::new(per_prompt, [bsz]), &device);
        let got = scalar(trajectory_balance(&batch, per_prompt).unwrap());
        prop_assert!(close(got, h.tb(&z[..bsz]), 1e-4), "per-prompt log Z: got {got}");
        if bsz >= 2 {
            let got = scalar(vargrad(&batch).unwrap());
            let want = h.vargrad();
            prop_assert!((got - want).abs() <= 1e-4 * want.max(1.0) + 1e-3, "vargrad: got {got}, want {want}");
            let diag = diagnostics(&batch).unwrap();
            prop_assert!((diag.log_ratio_var - want).abs() <= 1e-4 * want.max(1.0) + 1e-3);
            for b in 0..bsz {
                prop_assert!(close(diag.log_q[b], h.log_q(b), 1e-5));
                prop_assert!(close(diag.log_r[b], h.log_r_term(b), 1e-6));
            }
        } else {
            let is_too_few = matches!(vargrad(&batch), Err(ObjectiveError::TooFewTrajectories { .. }));
            prop_assert!(is_too_few);
        }
    }
}

// ---------------------------------------------------------------- known answer

#[test]
fn reference_test_vector_gives_3359_528() {
    let text = include_str!("subtb_test_vector.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let device = Device::flex();
    let rows = |key: &str| -> Tensor<2> {
        let rows: Vec<Vec<f32>> = serde_json::from_value(v[key].clone()).unwrap();
        let (b, t) = (rows.len(), rows[0].len());
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        Tensor::from_data(TensorData::new(flat, [b, t]), &device)
    };
    let generated: Vec<Vec<u32>> = serde_json::from_value(v["generated_text"].clone()).unwrap();
    let batch = TrajectoryBatch::from_reference(
        &generated,
        v["prompt_len"].as_u64().unwrap() as usize,
        v["termination_token_id"].as_u64().unwrap() as u32,
        rows("log_pf"),
        rows("log_pterm"),
        rows("log_r"),
    )
    .unwrap();
    assert_eq!(batch.lengths(), &[5, 2, 1]);
    assert_eq!(batch.steps(), 5);
    let loss = scalar(modified_subtb(&batch, 1.0).unwrap());
    assert!((loss - 3359.5281).abs() < 5e-3, "loss {loss}");
}

// ---------------------------------------------------------------- gradients

/// A fixed small batch with lengths covering 0, partial and full.
fn small_host() -> Host {
    let t = 4;
    let lengths = vec![4, 2, 0, 3];
    let val = |b: usize, k: usize, s: f64| ((b * 7 + k * 3) as f64 * 0.37 + s).sin() * 2.0;
    Host {
        t,
        pf: (0..4)
            .map(|b| (0..t).map(|k| val(b, k, 0.1)).collect())
            .collect(),
        pterm: (0..4)
            .map(|b| (0..=t).map(|k| val(b, k, 1.3)).collect())
            .collect(),
        r: (0..4)
            .map(|b| (0..=t).map(|k| val(b, k, 2.9)).collect())
            .collect(),
        lengths,
    }
}

type Loss = dyn Fn(&TrajectoryBatch, Tensor<1>) -> Tensor<1>;

/// Autodiff gradients against central differences (the losses are quadratic, so central
/// differences are exact up to f32 rounding). Entries outside the trajectories hold NaN: their
/// gradient must be exactly 0 and nothing may turn NaN.
fn check_gradients(loss: &Loss) {
    let h = small_host();
    let step = 0.05f64;
    let ad = Device::flex().autodiff();
    let (pf, pterm, r) = h.tensors(&ad, f32::NAN);
    let (pf, pterm, r) = (pf.require_grad(), pterm.require_grad(), r.require_grad());
    let log_z = Tensor::<1>::from_data(TensorData::new(vec![0.7f32], [1]), &ad).require_grad();
    let batch =
        TrajectoryBatch::new(pf.clone(), pterm.clone(), r.clone(), h.lengths.clone()).unwrap();
    let grads = loss(&batch, log_z.clone()).backward();
    let grad_of = |x: &Tensor<2>| -> Vec<f64> {
        x.grad(&grads)
            .expect("input has a gradient")
            .try_into_vec_as::<f64>()
            .unwrap()
    };
    let analytic = [grad_of(&pf), grad_of(&pterm), grad_of(&r)];

    let plain = Device::flex();
    let eval = |h: &Host, z: f64| -> f64 {
        let z = Tensor::<1>::from_data(TensorData::new(vec![z as f32], [1]), &plain);
        scalar(loss(&h.batch(&plain, f32::NAN), z))
    };
    let mut checked = 0;
    for (which, grad) in analytic.iter().enumerate() {
        let cols = if which == 0 { h.t } else { h.t + 1 };
        for b in 0..h.lengths.len() {
            for k in 0..cols {
                let g = grad[b * cols + k];
                assert!(g.is_finite(), "input {which} [{b},{k}] gradient {g}");
                let used = if which == 0 {
                    k < h.lengths[b]
                } else {
                    k <= h.lengths[b]
                };
                if !used {
                    assert_eq!(g, 0.0, "input {which} [{b},{k}] outside the trajectory");
                    continue;
                }
                let perturbed = |d: f64| {
                    let mut hp = h.clone();
                    let rows = match which {
                        0 => &mut hp.pf,
                        1 => &mut hp.pterm,
                        _ => &mut hp.r,
                    };
                    rows[b][k] += d;
                    eval(&hp, 0.7)
                };
                let fd = (perturbed(step) - perturbed(-step)) / (2.0 * step);
                assert!(
                    (fd - g).abs() <= 2e-3 * g.abs().max(1.0),
                    "input {which} [{b},{k}]: autodiff {g}, finite difference {fd}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 20);
    if let Some(gz) = log_z.grad(&grads) {
        let gz = scalar(gz);
        let fd = (eval(&h, 0.7 + step) - eval(&h, 0.7 - step)) / (2.0 * step);
        assert!(
            (fd - gz).abs() <= 2e-3 * gz.abs().max(1.0),
            "log Z: {gz} vs {fd}"
        );
    }
}

#[test]
fn subtb_gradients_match_finite_differences() {
    check_gradients(&|b, _| modified_subtb(b, 1.0).unwrap());
    check_gradients(&|b, _| modified_subtb(b, 0.6).unwrap());
}

#[test]
fn db_gradients_match_finite_differences() {
    check_gradients(&|b, _| modified_db(b).unwrap());
}

#[test]
fn tb_gradients_match_finite_differences() {
    check_gradients(&|b, z| trajectory_balance(b, z).unwrap());
}

#[test]
fn vargrad_gradients_match_finite_differences() {
    check_gradients(&|b, _| vargrad(b).unwrap());
}

// ---------------------------------------------------------------- convergence diagnostic

/// A policy that is exactly proportional to the reward: pick a flow log F_0 shared by the batch,
/// log F_{k+1} = log F_k + log q(z_{k+1}|s_k) − ... chosen so that every δ_k = 0.
fn balanced_host(noise: f64) -> Host {
    let mut h = small_host();
    for b in 0..h.lengths.len() {
        let mut log_f = -3.0; // log Z, the same for every trajectory
        for k in 0..=h.t {
            h.r[b][k] = log_f + h.pterm[b][k] + noise * ((b * 5 + k) as f64).cos();
            if k < h.t {
                log_f += h.pf[b][k];
            }
        }
    }
    h
}

#[test]
fn balanced_policy_has_zero_loss_and_variance_and_noise_scales_quadratically() {
    let device = Device::flex();
    let exact = balanced_host(0.0).batch(&device, f32::NAN);
    assert!(scalar(modified_subtb(&exact, 1.0).unwrap()) < 1e-8);
    assert!(scalar(modified_db(&exact).unwrap()) < 1e-8);
    assert!(scalar(vargrad(&exact).unwrap()) < 1e-8);
    let d = diagnostics(&exact).unwrap();
    assert!(d.log_ratio_var < 1e-8, "{d:?}");
    assert!((d.log_z_estimate + 3.0).abs() < 1e-4, "{d:?}");
    assert!((d.mean_length - 9.0 / 4.0).abs() < 1e-12);

    // Moving toward the balanced policy shrinks the variance as (noise)².
    let base = diagnostics(&balanced_host(1.0).batch(&device, 0.0))
        .unwrap()
        .log_ratio_var;
    assert!(base > 0.1);
    for noise in [0.5, 0.25, 0.1] {
        let v = diagnostics(&balanced_host(noise).batch(&device, 0.0))
            .unwrap()
            .log_ratio_var;
        assert!(close(v, base * noise * noise, 1e-3), "noise {noise}: {v}");
    }
}

// ---------------------------------------------------------------- conventions

#[test]
fn forced_stop_zeroes_log_pterm_at_max_len_only() {
    let device = Device::flex();
    let h = small_host(); // lengths 4 (= T, forced), 2, 0, 3
    let forced = h.batch(&device, 0.0).with_forced_stop(4).unwrap();
    let mut want = h.clone();
    want.pterm[0][4] = 0.0;
    let got = scalar(modified_subtb(&forced, 1.0).unwrap());
    assert!(close(got, want.subtb(1.0), 1e-5));
    assert!(
        !close(got, h.subtb(1.0), 1e-3),
        "forced stop changed nothing"
    );
    assert!(matches!(
        h.batch(&device, 0.0).with_forced_stop(5),
        Err(ObjectiveError::MaxLenOutOfRange { .. })
    ));
}

#[test]
fn forced_ends_zero_log_pterm_at_each_flagged_trajectorys_own_length() {
    let device = Device::flex();
    let h = small_host(); // lengths 4, 2, 0, 3
    // Flagging the max_len row alone is with_forced_stop.
    let one = h
        .batch(&device, 0.0)
        .with_forced_ends(&[true, false, false, false])
        .unwrap();
    let stop = h.batch(&device, 0.0).with_forced_stop(4).unwrap();
    assert!(close(
        scalar(modified_subtb(&one, 1.0).unwrap()),
        scalar(modified_subtb(&stop, 1.0).unwrap()),
        1e-6
    ));
    // A shorter row stopped by a full context: its own end, nothing else.
    let got = h
        .batch(&device, 0.0)
        .with_forced_ends(&[true, false, false, true])
        .unwrap();
    let mut want = h.clone();
    want.pterm[0][4] = 0.0;
    want.pterm[3][3] = 0.0;
    assert!(close(
        scalar(modified_subtb(&got, 1.0).unwrap()),
        want.subtb(1.0),
        1e-5
    ));
    let none = h.batch(&device, 0.0).with_forced_ends(&[false; 4]).unwrap();
    assert!(close(
        scalar(modified_subtb(&none, 1.0).unwrap()),
        h.subtb(1.0),
        1e-5
    ));
    assert!(matches!(
        h.batch(&device, 0.0).with_forced_ends(&[true]),
        Err(ObjectiveError::Shape { .. })
    ));
}

#[test]
fn lambda_weights_long_pairs() {
    // With λ = 0 only adjacent pairs count: a pooled mean of δ².
    let h = small_host();
    let device = Device::flex();
    let got = scalar(modified_subtb(&h.batch(&device, 0.0), 0.0).unwrap());
    let (mut num, mut den) = (0.0, 0.0);
    for b in 0..4 {
        for k in 0..h.lengths[b] {
            num += h.delta(b, k).powi(2);
            den += 1.0;
        }
    }
    assert!(close(got, num / den, 1e-5));
}

#[test]
fn large_lambda_and_long_trajectories_stay_finite() {
    // λ^63 = 1e252 overflows f32 (and 1e6^63 overflows f64): weights must be scaled, not raw.
    let t = 64;
    let lengths = vec![64, 17, 40];
    let val = |b: usize, k: usize, s: f64| ((b * 11 + k * 5) as f64 * 0.21 + s).sin() * 0.5;
    let h = Host {
        t,
        pf: (0..3)
            .map(|b| (0..t).map(|k| val(b, k, 0.4)).collect())
            .collect(),
        pterm: (0..3)
            .map(|b| (0..=t).map(|k| val(b, k, 1.1)).collect())
            .collect(),
        r: (0..3)
            .map(|b| (0..=t).map(|k| val(b, k, 2.3)).collect())
            .collect(),
        lengths,
    };
    let device = Device::flex();
    let batch = h.batch(&device, f32::NAN);
    for lambda in [0.3, 1.0, 1.7, 1e4] {
        let got = scalar(modified_subtb(&batch, lambda).unwrap());
        let want = h.subtb(lambda);
        assert!(close(got, want, 1e-3), "λ={lambda}: got {got}, want {want}");
    }
    // Beyond f64's range the loss tends to the mean over the longest pairs only (j − i = 64).
    let got = scalar(modified_subtb(&batch, 1e6).unwrap());
    let longest: f64 = (0..64).map(|k| h.delta(0, k)).sum();
    assert!(
        close(got, longest * longest, 1e-3),
        "got {got}, want {}",
        longest * longest
    );
}

// ---------------------------------------------------------------- degenerate input

fn t2(rows: usize, cols: usize, fill: f32) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(vec![fill; rows * cols], [rows, cols]),
        &Device::flex(),
    )
}

#[test]
fn degenerate_inputs_are_clear_errors() {
    assert_eq!(
        TrajectoryBatch::new(t2(0, 3, 0.0), t2(0, 4, 0.0), t2(0, 4, 0.0), vec![]).unwrap_err(),
        ObjectiveError::EmptyBatch
    );
    assert_eq!(
        TrajectoryBatch::new(t2(2, 0, 0.0), t2(2, 1, 0.0), t2(2, 1, 0.0), vec![0, 0]).unwrap_err(),
        ObjectiveError::NoSteps
    );
    assert!(matches!(
        TrajectoryBatch::new(t2(2, 3, 0.0), t2(2, 3, 0.0), t2(2, 4, 0.0), vec![1, 1]),
        Err(ObjectiveError::Shape {
            input: "log_pterm",
            ..
        })
    ));
    assert!(matches!(
        TrajectoryBatch::new(t2(2, 3, 0.0), t2(2, 4, 0.0), t2(2, 4, 0.0), vec![1]),
        Err(ObjectiveError::Shape {
            input: "lengths",
            ..
        })
    ));
    assert_eq!(
        TrajectoryBatch::new(t2(2, 3, 0.0), t2(2, 4, 0.0), t2(2, 4, 0.0), vec![1, 4]).unwrap_err(),
        ObjectiveError::LengthOutOfRange {
            trajectory: 1,
            length: 4,
            max: 3
        }
    );
    // All terminated at step 0.
    let zero =
        TrajectoryBatch::new(t2(2, 3, -1.0), t2(2, 4, -1.0), t2(2, 4, -1.0), vec![0, 0]).unwrap();
    assert_eq!(
        modified_subtb(&zero, 1.0).unwrap_err(),
        ObjectiveError::NoTransitions
    );
    assert_eq!(
        modified_db(&zero).unwrap_err(),
        ObjectiveError::NoTransitions
    );
    // ... which trajectory balance still handles: (log Z + log q(⊤|s_0) − log R_0)² = 0.25.
    let z = Tensor::<1>::from_data(TensorData::new(vec![0.5f32], [1]), &Device::flex());
    assert_eq!(scalar(trajectory_balance(&zero, z).unwrap()), 0.25);
    // Bad λ, too small a batch for VarGrad, bad log Z shape.
    let one =
        TrajectoryBatch::new(t2(1, 3, -1.0), t2(1, 4, -1.0), t2(1, 4, -1.0), vec![2]).unwrap();
    for lambda in [-0.5, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            modified_subtb(&one, lambda),
            Err(ObjectiveError::InvalidLambda(_))
        ));
    }
    assert!(matches!(
        vargrad(&one),
        Err(ObjectiveError::TooFewTrajectories {
            needed: 2,
            got: 1,
            ..
        })
    ));
    let z3 = Tensor::<1>::from_data(TensorData::new(vec![0.0f32; 3], [3]), &Device::flex());
    assert!(matches!(
        trajectory_balance(&one, z3),
        Err(ObjectiveError::Shape { input: "log_z", .. })
    ));
    let znan = Tensor::<1>::from_data(TensorData::new(vec![f32::NAN], [1]), &Device::flex());
    assert!(matches!(
        trajectory_balance(&one, znan),
        Err(ObjectiveError::NonFinite { input: "log_z", .. })
    ));
    // Reference layout with fewer than 2 columns, or short token rows.
    let gen_rows = vec![vec![1u32, 2, 3]];
    assert_eq!(
        TrajectoryBatch::from_reference(
            &gen_rows,
            1,
            9,
            t2(1, 1, 0.0),
            t2(1, 1, 0.0),
            t2(1, 1, 0.0)
        )
        .unwrap_err(),
        ObjectiveError::NoSteps
    );
    assert!(matches!(
        TrajectoryBatch::from_reference(
            &gen_rows,
            1,
            9,
            t2(1, 4, 0.0),
            t2(1, 4, 0.0),
            t2(1, 4, 0.0)
        ),
        Err(ObjectiveError::TokensTooShort {
            expected: 4,
            got: 3,
            ..
        })
    ));
}

#[test]
fn non_finite_inside_a_trajectory_is_located() {
    let device = Device::flex();
    for (which, name) in [(0, "log_pf"), (1, "log_pterm"), (2, "log_r")] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut h = small_host();
            let rows = match which {
                0 => &mut h.pf,
                1 => &mut h.pterm,
                _ => &mut h.r,
            };
            rows[3][1] = bad as f64;
            let batch = h.batch(&device, 0.0);
            let err = modified_subtb(&batch, 1.0).unwrap_err();
            match err {
                ObjectiveError::NonFinite {
                    input,
                    trajectory,
                    step,
                    value,
                } => {
                    assert_eq!((input, trajectory, step), (name, 3, 1));
                    assert!(value.is_nan() == bad.is_nan() && (bad.is_nan() || value == bad));
                }
                other => panic!("unexpected {other:?}"),
            }
            assert!(matches!(
                modified_db(&batch),
                Err(ObjectiveError::NonFinite { .. })
            ));
        }
    }
    // Trajectory balance reads only the terminal state: an intermediate NaN reward is ignored,
    // a terminal one is reported.
    let mut h = small_host();
    h.r[3][1] = f64::NAN;
    let z = Tensor::<1>::from_data(TensorData::new(vec![0.0f32], [1]), &device);
    assert!(trajectory_balance(&h.batch(&device, 0.0), z.clone()).is_ok());
    h.r[3][3] = f64::NAN;
    assert!(matches!(
        trajectory_balance(&h.batch(&device, 0.0), z),
        Err(ObjectiveError::NonFinite {
            input: "log_r",
            trajectory: 3,
            step: 3,
            ..
        })
    ));
}
