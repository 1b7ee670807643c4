//! Data-parallel training over MPI (issue #19), with `mpirun -np 2` on this machine.
//!
//! The parent test starts this same test binary under `mpirun`, which runs the `#[ignore]`d
//! child tests as two ranks. On every rank the child checks that
//! - 2 ranks × 8 trajectories give the gradient 1 rank × the same 16 trajectories gives (one
//!   flat all-reduce; tolerance 1e-6 relative to the largest gradient, float summation order),
//!   and one AdamW step from either gives the same adapters (1e-6), bit-identical across ranks;
//! - five `Trainer` steps keep the adapters bit-identical across ranks, and a rank whose adapter
//!   was perturbed makes the digest check fail on every rank.
//!
//! Needs `--features mpi` (Open MPI and libclang: `cargo xtask setup-backend mpi`).
#![cfg(feature = "mpi")]

use std::process::Command;
use std::rc::Rc;

use burn::module::Param;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use gfnlm_lora::{AdaptableModel, LoraConfig};
use gfnlm_models::{CausalLm, LlamaConfig};
use gfnlm_tasks::{
    Constraint, EvalContext, Evaluation, Example, RewardContext, Split, Task, TaskError, Trajectory,
};
use gfnlm_train::collective::mpi::MpiCollective;
use gfnlm_train::collective::{adapter_params, average_gradients, fnv1a_f32};
use gfnlm_train::{Collective, GFlowNet, Rollout, TrainConfig, TrainError, Trainer, Update};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const A: u32 = 10;
const B: u32 = 11;
const STOP: u32 = 2;

fn constraint() -> Constraint {
    Constraint {
        termination: STOP,
        allowed: Some(vec![A, B, STOP]),
        vocab_alpha: -99.0,
        min_len: 1,
        max_len: 3,
    }
}

fn tiny_llama(device: &Device) -> CausalLm {
    device.seed(3);
    CausalLm::Llama(
        LlamaConfig {
            vocab_size: 32,
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 32,
            tie_word_embeddings: true,
        }
        .init_random(device),
    )
}

/// The tiny model with LoRA on every linear layer, B random (so A's gradients are not zero).
fn adapted(device: &Device) -> CausalLm {
    let mut m = tiny_llama(device);
    let lc = LoraConfig::new(4, 8.0, &["all-linear"]);
    gfnlm_lora::apply_lora_seeded(&mut m, &lc, 5, device).unwrap();
    device.seed(6);
    m.for_each_linear_mut(&mut |_, lin| {
        if let Some(l) = lin.lora.as_mut() {
            let dims = l.lora_b.val().dims();
            l.lora_b = Param::initialized(
                l.lora_b.id,
                Tensor::<2>::random(dims, Distribution::Normal(0.0, 0.1), device),
            )
            .set_require_grad(true);
        }
    });
    m
}

/// 16 fixed trajectories (lengths 1–3 over {A, B}) with random per-state log-rewards: the
/// same on every rank (one seed).
fn trajectories() -> (Vec<Trajectory>, Vec<Vec<f64>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut t = Vec::new();
    let mut r = Vec::new();
    for _ in 0..16 {
        let len = rng.random_range(1..=3usize);
        let toks: Vec<u32> = (0..len)
            .map(|_| if rng.random::<bool>() { A } else { B })
            .collect();
        r.push((0..=len).map(|_| rng.random_range(-6.0..0.0)).collect());
        t.push(Trajectory::new(toks, len == 3));
    }
    (t, r)
}

fn grads_of(
    model: &CausalLm,
    update: &mut GFlowNet,
    trajs: &[Trajectory],
    log_r: &[Vec<f64>],
    device: &Device,
) -> (GradientsParams, f64) {
    let example = Example::prompt_only("toy", vec![5, 6, 7]);
    let c = constraint();
    let valid = vec![true; trajs.len()];
    let rollout = Rollout {
        example: &example,
        constraint: &c,
        trajectories: trajs,
        log_rewards: log_r,
        reward_temperature: 1.0,
        valid: &valid,
        pass: 0,
        micro: 0,
    };
    let out = update.loss(model, &rollout, device).unwrap();
    (
        GradientsParams::from_grads(out.loss.backward(), model),
        out.weight,
    )
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn digest(model: &CausalLm) -> u64 {
    fnv1a_f32(
        adapter_params(model)
            .into_iter()
            .flat_map(|(_, _, v)| host(v)),
    )
}

fn same_on_every_rank(c: &dyn Collective, d: u64) -> bool {
    let all = c.all_gather_bytes(&d.to_le_bytes()).unwrap();
    all.iter().all(|x| x[..] == all[0][..])
}

fn child_gradients(c: &dyn Collective) {
    assert_eq!(c.size(), 2, "run with mpirun -np 2");
    let device = Device::default().autodiff();
    let model = adapted(&device);
    let cfg = TrainConfig::default();
    let (trajs, log_r) = trajectories();
    // One process, all 16.
    let (full, _) = grads_of(&model, &mut GFlowNet::new(&cfg), &trajs, &log_r, &device);
    // This rank's 8, averaged over the two ranks.
    let r = c.rank();
    let (half, weight) = grads_of(
        &model,
        &mut GFlowNet::new(&cfg),
        &trajs[r * 8..r * 8 + 8],
        &log_r[r * 8..r * 8 + 8],
        &device,
    );
    let averaged = average_gradients(&model, half, 1, weight, c, &device).unwrap();
    assert!(averaged.any_finite);
    let dp = averaged.grads.expect("averaged gradients");
    let mut scale = 0f32;
    let mut worst = 0f32;
    for (id, _, _) in adapter_params(&model) {
        let g1 = host(full.get::<2>(id).expect("full-batch gradient"));
        let g2 = host(dp.get::<2>(id).expect("averaged gradient"));
        for (a, b) in g1.iter().zip(&g2) {
            scale = scale.max(a.abs());
            worst = worst.max((a - b).abs());
        }
    }
    assert!(scale > 1e-4, "gradients too small to compare ({scale})");
    assert!(
        worst <= 1e-6 * scale.max(1.0),
        "rank {r}: max |Δ grad| = {worst:e} (largest gradient {scale:e})"
    );
    // The same optimizer step from either.
    let mut opt1 = AdamWConfig::new().init();
    let mut opt2 = AdamWConfig::new().init();
    let m1 = opt1.step(1e-2, model.clone(), full);
    let m2 = opt2.step(1e-2, model.clone(), dp);
    let (p1, p2) = (adapter_params(&m1), adapter_params(&m2));
    let mut moved = 0f32;
    let p0 = adapter_params(&model);
    for ((_, _, a), ((_, _, b), (_, _, a0))) in p1.into_iter().zip(p2.into_iter().zip(p0)) {
        let (a, b, a0) = (host(a), host(b), host(a0));
        for ((x, y), z) in a.iter().zip(&b).zip(&a0) {
            assert!(
                (x - y).abs() <= 1e-6,
                "rank {r}: adapters differ: {x} vs {y}"
            );
            moved = moved.max((x - z).abs());
        }
    }
    assert!(moved > 1e-4, "the step did not move the adapters");
    assert!(
        same_on_every_rank(c, digest(&m2)),
        "the data-parallel step left different adapters on the ranks"
    );
}

/// Sequences over {A, B}; log R = 1.5 · #A (no model needed).
struct Toy(Vec<Example>);

impl Task for Toy {
    fn name(&self) -> &str {
        "toy"
    }
    fn examples(&self, _: Split) -> &[Example] {
        &self.0
    }
    fn constraint(&self, _: &Example) -> Constraint {
        constraint()
    }
    fn log_rewards(
        &self,
        _: &Example,
        trajs: &[Trajectory],
        _: &RewardContext<'_>,
    ) -> Vec<Vec<f64>> {
        trajs
            .iter()
            .map(|t| {
                (0..=t.tokens.len())
                    .map(|k| 1.5 * t.tokens[..k].iter().filter(|&&x| x == A).count() as f64)
                    .collect()
            })
            .collect()
    }
    fn evaluate(&self, _: &EvalContext<'_>) -> Result<Evaluation, TaskError> {
        Err(TaskError::Config("not evaluated".into()))
    }
}

fn trainer(c: Rc<dyn Collective>, check_every: usize, exchange_every: usize) -> Trainer {
    let device = Device::default().autodiff();
    let mut cfg = TrainConfig {
        steps: 5,
        batch_size: 4,
        lr: 1e-2,
        warmup_steps: 1,
        replay_prob: 0.3,
        ..TrainConfig::default()
    };
    cfg.lora.r = 4;
    cfg.lora.alpha = 8.0;
    cfg.lora.target_modules = vec!["all-linear".into()];
    cfg.distributed.check_every = check_every;
    cfg.distributed.exchange_every = exchange_every;
    let task = Toy(vec![
        Example::prompt_only("a", vec![5, 6, 7]),
        Example::prompt_only("b", vec![7, 6]),
    ]);
    let update = gfnlm_train::update_from_config(&cfg);
    let mut t = Trainer::new(cfg, tiny_llama(&device), Box::new(task), update, device).unwrap();
    t.set_collective(c).unwrap();
    t
}

fn child_trainer(c: Rc<dyn Collective>) {
    let out = std::env::temp_dir().join(format!("gfnlm-mpi-trainer-{}", c.rank()));
    // Five steps, the digest compared after each: identical adapters on both ranks.
    let mut t = trainer(c.clone(), 1, 2);
    let mut sampled = Vec::new();
    for _ in 0..5 {
        let s = t.train_step(&out).unwrap();
        assert_eq!(s.ranks, Some(2));
        sampled.push(s.mean_log_r);
    }
    assert!(same_on_every_rank(&*c, digest(&t.model)));
    // The ranks sampled different trajectories (their own RNG streams)…
    let bits: Vec<u8> = sampled.iter().flat_map(|v| v.to_le_bytes()).collect();
    let all = c.all_gather_bytes(&bits).unwrap();
    assert_eq!(all[0], all[1], "step figures are reduced over both ranks");
    // The replay exchange after a step leaves the other rank's best entries in each buffer.
    let mut t = trainer(c.clone(), 0, 1);
    t.train_step(&out).unwrap();
    let mine: Vec<(Vec<u32>, Vec<u32>)> = t
        .buffer
        .best(usize::MAX)
        .into_iter()
        .flat_map(|(p, es)| {
            es.into_iter()
                .map(move |e| (p.clone(), e.trajectory.tokens))
        })
        .collect();
    let all = c
        .all_gather_bytes(&serde_json::to_vec(&t.buffer.best(4)).unwrap())
        .unwrap();
    let other: Vec<(Vec<u32>, Vec<gfnlm_train::buffer::Entry>)> =
        serde_json::from_slice(&all[1 - c.rank()]).unwrap();
    for (p, es) in other {
        for e in es {
            assert!(
                mine.contains(&(p.clone(), e.trajectory.tokens.clone())),
                "rank {}: the other rank's best entry {:?} was not shared",
                c.rank(),
                e.trajectory.tokens
            );
        }
    }
    // …and a rank whose adapter drifts is caught on every rank.
    let mut t = trainer(c.clone(), 1, 2);
    if c.rank() == 1 {
        t.model.for_each_linear_mut(&mut |_, lin| {
            if let Some(l) = lin.lora.as_mut() {
                l.lora_a = l.lora_a.clone().map(|v| v.add_scalar(1e-3));
            }
        });
    }
    match t.train_step(&out) {
        Err(TrainError::Ranks(m)) => assert!(m.contains("differ across ranks"), "{m}"),
        other => panic!(
            "rank {}: expected a divergence error, got {other:?}",
            c.rank()
        ),
    }
}

#[test]
#[ignore = "run by two_ranks_under_mpirun, as a rank"]
fn mpi_child() {
    let c: Rc<dyn Collective> = Rc::new(MpiCollective::init().unwrap());
    child_gradients(&*c);
    let rank = c.rank();
    child_trainer(c);
    if let Some(dir) = std::env::var_os("GFNLM_MPI_MARKS") {
        std::fs::write(
            std::path::Path::new(&dir).join(format!("rank-{rank}.ok")),
            "",
        )
        .unwrap();
    }
}

#[test]
fn two_ranks_under_mpirun() {
    let exe = std::env::current_exe().unwrap();
    let marks = std::env::temp_dir().join(format!("gfnlm-mpi-marks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&marks);
    std::fs::create_dir_all(&marks).unwrap();
    let out = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe"])
        .arg(&exe)
        .args(["mpi_child", "--exact", "--include-ignored", "--nocapture"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .env("GFNLM_MPI_MARKS", &marks)
        .output()
        .expect("mpirun (Open MPI) on PATH: cargo xtask setup-backend mpi");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "mpirun failed:\n{text}");
    // Both ranks ran the child test to its end (not zero tests by a filter typo).
    for r in 0..2 {
        assert!(
            marks.join(format!("rank-{r}.ok")).is_file(),
            "rank {r} did not finish:\n{text}"
        );
    }
}
