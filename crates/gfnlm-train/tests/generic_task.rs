//! The trainer is generic: a toy task written here — short sequences over a 3-token vocabulary
//! whose reward is the base model's likelihood plus a bonus, small enough to enumerate — trains
//! through the same `Trainer` on a tiny Llama and a tiny GPT-2, its exact distribution moves
//! toward the enumerated target, resume is exact, and a tool's tokens carry no log q.

use burn::tensor::Device;
use gfnlm_models::decode::{
    Behaviour, Tool, policy_terms, sample_trajectories, sequence_log_probs,
};
use gfnlm_models::generate::position_logprobs;
use gfnlm_models::gpt2::Gpt2Config;
use gfnlm_models::{CausalLm, LlamaConfig};
use gfnlm_rewards::LmLikelihood;
use gfnlm_tasks::{
    Constraint, EvalContext, Evaluation, Example, RewardContext, Split, Task, TaskError, Trajectory,
};
use gfnlm_train::{TrainConfig, Trainer};
use rand::SeedableRng;

const A: u32 = 10;
const B: u32 = 11;
const STOP: u32 = 2;

/// Sequences of 1–3 tokens from {A, B}, ended by STOP; log R = log p_base(Z STOP | X) + 1.5·#A.
struct Toy {
    examples: Vec<Example>,
}

impl Toy {
    fn new() -> Self {
        Self {
            examples: vec![Example::prompt_only("toy", vec![5, 6, 7])],
        }
    }

    fn all_sequences() -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        for len in 1..=3u32 {
            for code in 0..(1u32 << len) {
                out.push(
                    (0..len)
                        .map(|i| if code >> i & 1 == 1 { A } else { B })
                        .collect(),
                );
            }
        }
        out
    }
}

impl Task for Toy {
    fn name(&self) -> &str {
        "toy"
    }
    fn examples(&self, _: Split) -> &[Example] {
        &self.examples
    }
    fn constraint(&self, _: &Example) -> Constraint {
        Constraint {
            termination: STOP,
            allowed: Some(vec![A, B, STOP]),
            vocab_alpha: -99.0,
            min_len: 1,
            max_len: 3,
        }
    }
    fn log_rewards(
        &self,
        ex: &Example,
        trajs: &[Trajectory],
        ctx: &RewardContext<'_>,
    ) -> Vec<Vec<f64>> {
        let seqs: Vec<Vec<u32>> = trajs.iter().map(|t| t.tokens.clone()).collect();
        // The empty answer (never sampled: min_len 1) gets a mild penalty, so it shapes the flows
        // without dominating the loss.
        let reward = LmLikelihood {
            short_log_reward: -10.0,
            ..LmLikelihood::new(STOP)
        };
        let lm = reward.log_rewards(ctx.base, &ex.prompt, &seqs, ctx.device);
        lm.into_iter()
            .zip(&seqs)
            .map(|(r, s)| {
                let mut bonus = 0.0;
                r.into_iter()
                    .enumerate()
                    .map(|(k, v)| {
                        let out = v + bonus;
                        if k < s.len() && s[k] == A {
                            bonus += 1.5;
                        }
                        out
                    })
                    .collect()
            })
            .collect()
    }
    /// The exact distribution of the model over the 14 sequences.
    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Evaluation, TaskError> {
        let trajs: Vec<Trajectory> = Toy::all_sequences()
            .into_iter()
            .map(|s| {
                let forced = s.len() == 3;
                Trajectory::new(s, forced)
            })
            .collect();
        let c = self.constraint(&self.examples[0]);
        let terms = policy_terms(ctx.model, &self.examples[0].prompt, &trajs, &c, ctx.device);
        let lq = sequence_log_probs(&terms, &trajs);
        Ok(Evaluation {
            summary: vec![format!(
                "mass {:.4}",
                lq.iter().map(|l| l.exp()).sum::<f64>()
            )],
            markdown: String::new(),
            metrics: serde_json::json!({ "log_q": lq }),
        })
    }
}

/// KL(target ‖ q) over the 14 sequences: target ∝ R (from the base model), q the policy's exact
/// constrained distribution.
fn kl_to_target(trainer: &Trainer, base_logr: &[f64]) -> f64 {
    let seqs = Toy::all_sequences();
    let trajs: Vec<Trajectory> = seqs
        .iter()
        .map(|s| Trajectory::new(s.clone(), s.len() == 3))
        .collect();
    let policy = trainer.policy();
    let device = Device::default();
    let ex = &trainer.task.examples(Split::Train)[0];
    let c = trainer.task.constraint(ex);
    let lq = sequence_log_probs(
        &policy_terms(&policy, &ex.prompt, &trajs, &c, &device),
        &trajs,
    );
    let lz = log_sum_exp(base_logr);
    base_logr
        .iter()
        .zip(&lq)
        .map(|(&lr, &q)| (lr - lz).exp() * (lr - lz - q))
        .sum()
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

fn config() -> TrainConfig {
    let mut cfg = TrainConfig {
        steps: 30,
        batch_size: 8,
        lr: 1e-2,
        warmup_steps: 1,
        replay_prob: 0.0,
        tempered_prob: 0.5,
        ..TrainConfig::default()
    };
    cfg.lora.r = 4;
    cfg.lora.alpha = 8.0;
    // Every linear layer but the head, whatever the architecture names them.
    cfg.lora.target_modules = vec!["all-linear".into()];
    cfg
}

/// `device.seed` + random init use the device's global generator: tests running in parallel
/// threads would interleave their draws and get different weights.
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tiny_llama(device: &Device) -> CausalLm {
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
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

fn tiny_gpt2(device: &Device) -> CausalLm {
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(4);
    let cfg: Gpt2Config = serde_json::from_value(serde_json::json!({
        "vocab_size": 32, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4
    }))
    .unwrap();
    CausalLm::Gpt2(cfg.init_random(device))
}

fn target_log_rewards(trainer: &Trainer) -> Vec<f64> {
    let seqs = Toy::all_sequences();
    let trajs: Vec<Trajectory> = seqs
        .iter()
        .map(|s| Trajectory::new(s.clone(), false))
        .collect();
    let base = trainer.base_model();
    let device = Device::default();
    let ctx = RewardContext {
        base: &base,
        device: &device,
    };
    let ex = &trainer.task.examples(Split::Train)[0];
    trainer
        .task
        .log_rewards(ex, &trajs, &ctx)
        .into_iter()
        .map(|r| *r.last().unwrap())
        .collect()
}

fn trains_toward_target(model: impl Fn(&Device) -> CausalLm, tag: &str) {
    let device = Device::default().autodiff();
    let cfg = config();
    let update = gfnlm_train::update_from_config(&cfg);
    let mut t = Trainer::new(cfg, model(&device), Box::new(Toy::new()), update, device).unwrap();
    // Only the adapters train: every parameter with a gradient is a LoRA parameter.
    assert_eq!(
        gfnlm_lora::require_grad_parameter_count(&t.model),
        gfnlm_lora::trainable_parameter_count(&t.model),
        "{tag}: a base parameter is trainable"
    );
    let target = target_log_rewards(&t);
    let before = kl_to_target(&t, &target);
    let out = std::env::temp_dir().join(format!("gfnlm-toy-{tag}-{}", std::process::id()));
    while t.step < t.cfg.steps {
        let s = t.train_step(&out).unwrap();
        assert!(s.loss.is_finite(), "{tag} step {}: loss {}", s.step, s.loss);
    }
    let after = kl_to_target(&t, &target);
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        after < 0.25 * before,
        "{tag}: KL(target‖q) should fall at least fourfold in 30 steps: {before:.4} → {after:.4}"
    );
}

#[test]
fn toy_task_trains_on_tiny_llama() {
    trains_toward_target(tiny_llama, "llama");
}

#[test]
fn toy_task_trains_on_tiny_gpt2() {
    trains_toward_target(tiny_gpt2, "gpt2");
}

#[test]
fn toy_task_resumes_exactly() {
    let device = Device::default().autodiff();
    let cfg = TrainConfig {
        steps: 4,
        checkpoint_every: 2,
        replay_prob: 0.25,
        ..config()
    };
    let out = std::env::temp_dir().join(format!("gfnlm-toy-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let make = || {
        let update = gfnlm_train::update_from_config(&cfg);
        Trainer::new(
            cfg.clone(),
            tiny_gpt2(&device),
            Box::new(Toy::new()),
            update,
            device.clone(),
        )
        .unwrap()
    };
    let mut a = make();
    let mut stats_a = Vec::new();
    while a.step < 4 {
        stats_a.push(a.train_step(&out).unwrap());
        if a.step == 2 {
            a.save_checkpoint(&out.join("ckpt")).unwrap();
        }
    }
    let mut b = make();
    b.resume(&Trainer::latest_checkpoint(&out.join("ckpt")).unwrap())
        .unwrap();
    for x in &stats_a[2..] {
        let y = b.train_step(&out).unwrap();
        assert_eq!((x.step, &x.behaviour), (y.step, &y.behaviour));
        assert_eq!(x.mean_log_r, y.mean_log_r, "step {}", x.step);
        // GPT-2's restored adapters may sit in memory with another layout, so the products
        // can round differently in the last bits.
        assert!(
            (x.loss - y.loss).abs() <= 1e-5 * x.loss.abs().max(1.0),
            "step {}: {} vs {}",
            x.step,
            x.loss,
            y.loss
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Inserts [20, 21] after every A.
struct EchoTool;

impl Tool for EchoTool {
    fn call(&self, state: &[u32]) -> Vec<u32> {
        if state.last() == Some(&A) {
            vec![20, 21]
        } else {
            Vec::new()
        }
    }

    fn max_output_tokens(&self) -> usize {
        2
    }
}

/// Tool tokens are fed to the model but are not actions: the policy terms hold one log q per
/// action, read at the action's position of the full sequence, and log q(⊤) at the end of each
/// state (after the tool's tokens); sampling never counts them toward max_len.
#[test]
fn tool_tokens_carry_no_log_q() {
    let device = Device::default();
    let model = tiny_llama(&device);
    let prompt = [5u32, 6, 7];
    let c = Toy::new().constraint(&Toy::new().examples[0]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let behaviour = Behaviour {
        temperature: 1.0,
        epsilon: 0.5,
    };
    let trajs = sample_trajectories(
        &model,
        &prompt,
        16,
        &c,
        behaviour,
        Some(&EchoTool),
        &mut rng,
        &device,
    );
    assert!(
        trajs.iter().any(Trajectory::has_tool_tokens),
        "no tool call in 16 draws"
    );
    for t in &trajs {
        assert!(t.num_actions() <= c.max_len && t.num_actions() >= c.min_len);
        for (i, &tok) in t.tokens.iter().enumerate() {
            assert_eq!(t.is_action(i), tok == A || tok == B, "{t:?}");
        }
    }
    let terms = policy_terms(&model, &prompt, &trajs, &c, &device);
    let a = terms.steps;
    assert_eq!(a, trajs.iter().map(Trajectory::num_actions).max().unwrap());
    let pf: Vec<f32> = terms
        .log_pf
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap();
    let pt: Vec<f32> = terms
        .log_pterm
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap();
    let offsets = c.logit_offsets(model.vocab_size());
    for (i, t) in trajs.iter().enumerate() {
        let all: Vec<u32> = prompt.iter().chain(&t.tokens).copied().collect();
        // Unconstrained log-probs at every position; apply the constraint's offsets by hand.
        let lp = position_logprobs(&model, &all, &device);
        let rows = gfnlm_models::generate::rows_to_host(lp);
        let constrained = |pos: usize, tok: u32| -> f32 {
            let row = &rows[prompt.len() - 1 + pos];
            let z: Vec<f64> = row
                .iter()
                .zip(&offsets)
                .map(|(&l, &o)| l as f64 + o as f64)
                .collect();
            (z[tok as usize] - log_sum_exp(&z)) as f32
        };
        for (k, pos) in t.action_positions().into_iter().enumerate() {
            let want = constrained(pos, t.tokens[pos]);
            assert!(
                (pf[i * a + k] - want).abs() < 1e-4,
                "row {i} action {k}: {} vs {want}",
                pf[i * a + k]
            );
        }
        for (k, end) in t.state_ends().into_iter().enumerate() {
            if k == t.num_actions() && t.forced {
                continue;
            }
            let want = constrained(end, STOP);
            assert!(
                (pt[i * (a + 1) + k] - want).abs() < 1e-4,
                "row {i} ⊤ at state {k}"
            );
        }
    }
}

/// A checkpoint restores the policy exactly, whatever the architecture.
#[test]
fn checkpoint_restores_the_policy_on_every_architecture() {
    let device = Device::default().autodiff();
    let plain = Device::default();
    for (tag, make) in [
        ("llama", tiny_llama as fn(&Device) -> CausalLm),
        ("gpt2", tiny_gpt2),
    ] {
        let cfg = config();
        let mut a = Trainer::new(
            cfg.clone(),
            make(&device),
            Box::new(Toy::new()),
            gfnlm_train::update_from_config(&cfg),
            device.clone(),
        )
        .unwrap();
        gfnlm_lora::AdaptableModel::for_each_linear_mut(&mut a.model, &mut |_, l| {
            if let Some(x) = l.lora.as_mut() {
                x.lora_b = x.lora_b.clone().map(|b| b.ones_like().mul_scalar(0.05));
            }
        });
        let dir = std::env::temp_dir().join(format!("gfnlm-ckpt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ckpt = a.save_checkpoint(&dir).unwrap();
        let mut b = Trainer::new(
            cfg.clone(),
            make(&device),
            Box::new(Toy::new()),
            gfnlm_train::update_from_config(&cfg),
            device.clone(),
        )
        .unwrap();
        b.resume(&ckpt).unwrap();
        let logits = |t: &Trainer| {
            let tokens = gfnlm_models::generate::tokens_tensor(&[vec![5, 6, 7, 10, 11]], &plain);
            t.policy()
                .forward(tokens, None)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap()
        };
        let (x, y) = (logits(&a), logits(&b));
        let d = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "{tag}: restored policy differs by {d}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Inserts five tokens after every action.
struct FloodTool;

impl Tool for FloodTool {
    fn call(&self, _state: &[u32]) -> Vec<u32> {
        vec![20, 21, 22, 23, 24]
    }

    fn max_output_tokens(&self) -> usize {
        5
    }
}

/// A tool whose output could run past the context (32 positions here; 20 actions × 6 tokens
/// would need 123) ends each sequence with a forced ⊤ before the action that might not fit:
/// no panic (GPT-2 refuses positions past n_positions), every state stays inside the context,
/// and the teacher-forced pass reads the stop as forced.
#[test]
fn a_tool_that_could_overflow_the_context_forces_the_stop_first() {
    let device = Device::default();
    for model in [tiny_llama(&device), tiny_gpt2(&device)] {
        let prompt = [5u32, 6, 7];
        let c = Constraint {
            min_len: 1,
            max_len: 20,
            ..Toy::new().constraint(&Toy::new().examples[0])
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let behaviour = Behaviour {
            temperature: 1.0,
            epsilon: 0.0,
        };
        let trajs = sample_trajectories(
            &model,
            &prompt,
            32,
            &c,
            behaviour,
            Some(&FloodTool),
            &mut rng,
            &device,
        );
        let max_positions = model.max_positions();
        assert_eq!(max_positions, 32);
        let mut stopped_by_context = 0;
        for t in &trajs {
            assert!(prompt.len() + t.tokens.len() <= max_positions, "{t:?}");
            if t.forced && t.num_actions() < c.max_len {
                stopped_by_context += 1;
                assert!(gfnlm_models::decode::context_forces_stop(
                    prompt.len(),
                    t.tokens.len(),
                    5,
                    max_positions
                ));
            }
        }
        assert!(
            stopped_by_context > 0,
            "no sequence reached the context limit in 32 draws"
        );
        // The teacher-forced pass reads every state; forced stops carry no log q(⊤).
        let terms = policy_terms(&model, &prompt, &trajs, &c, &device);
        let lq = sequence_log_probs(&terms, &trajs);
        assert!(lq.iter().all(|x| x.is_finite()), "{lq:?}");
    }
}
