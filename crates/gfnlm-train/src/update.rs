//! Update rules: what the trainer does with a rollout. [`GFlowNet`] wraps the four objectives
//! of `gfnlm-objectives`; supervised fine-tuning and PPO are further implementations of
//! [`Update`] ([`crate::sft::Sft`] reads the example's demonstration; [`crate::ppo::Ppo`] keeps
//! its value head and the first pass's old log-probabilities in its own state, asks for several
//! passes over each rollout with [`Update::passes`] and steps the value head in
//! [`Update::after_step`]).

use std::collections::BTreeMap;

use burn::tensor::{Device, Gradients, Tensor, TensorData};
use gfnlm_models::CausalLm;
use gfnlm_models::decode::policy_terms;
use gfnlm_objectives::{
    TrajectoryBatch, diagnostics, modified_db, modified_subtb, modified_subtb_normaliser,
    trajectory_balance, vargrad,
};
use gfnlm_tasks::{Constraint, Example, Trajectory};
use serde::{Deserialize, Serialize};

use crate::collective::{Collective, CollectiveError};
use crate::config::{Objective, TrainConfig, UpdateRule};
use crate::log_z::LogZ;
use crate::trainer::TrainError;

/// One micro-batch as the trainer hands it to an update rule.
pub struct Rollout<'a> {
    /// The example the trajectories continue.
    pub example: &'a Example,
    /// The constraint they were sampled under (the loss uses the same one).
    pub constraint: &'a Constraint,
    /// The trajectories (sampled or replayed).
    pub trajectories: &'a [Trajectory],
    /// Untempered log R of every state of every trajectory.
    pub log_rewards: &'a [Vec<f64>],
    /// Divide log R by this before use.
    pub reward_temperature: f64,
    /// `Task::is_valid` of each trajectory (PPO's 0/1 reward).
    pub valid: &'a [bool],
    /// Which pass over the step's micro-batches this is (0, or up to [`Update::passes`] − 1):
    /// later passes see the same rollouts again.
    pub pass: usize,
    /// The micro-batch's index within the step.
    pub micro: usize,
}

/// A micro-batch's loss and its diagnostics.
pub struct UpdateLoss {
    /// Scalar loss `[1]` on the autodiff device.
    pub loss: Tensor<1>,
    /// Var(log R − log q(Z⊤)) over the batch, where the rule computes it.
    pub log_ratio_var: Option<f64>,
    /// What the loss is normalised by (SubTB: the batch's total pair weight,
    /// [`gfnlm_objectives::modified_subtb_normaliser`]; DB: trajectories with a transition;
    /// TB, VarGrad: trajectories; SFT: tokens). Data-parallel ranks weight their gradients by
    /// it, so N ranks reproduce the gradient of one process with all their trajectories.
    pub weight: f64,
}

/// Where a rule's micro-batches come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutSource {
    /// Trajectories sampled from the policy (or replayed), scored by the task's reward.
    Sample,
    /// The example's demonstration (replayed through the task's tool), no reward computed.
    Demonstration,
}

/// A learning rule applied by [`crate::Trainer`] to each micro-batch.
pub trait Update: Send {
    /// A short name for logs (`gflownet-subtb`, `sft`, …).
    fn name(&self) -> String;
    /// Where the rule's micro-batches come from (sampled by default).
    fn source(&self) -> RolloutSource {
        RolloutSource::Sample
    }
    /// Optimizer steps the trainer takes over each step's micro-batches (PPO epochs): pass 0
    /// collects them, passes 1.. replay the same rollouts, one optimizer step per pass. 1 by
    /// default.
    fn passes(&self) -> usize {
        1
    }
    /// The loss of one micro-batch, with gradients flowing into `policy`'s adapters.
    fn loss(
        &mut self,
        policy: &CausalLm,
        rollout: &Rollout<'_>,
        device: &Device,
    ) -> Result<UpdateLoss, TrainError>;
    /// Called with the gradients of the last finite loss, before they reach the optimizer:
    /// read the gradients of the rule's own parameters (e.g. log Z) here.
    fn after_backward(&mut self, _grads: &Gradients) {}
    /// Whether the rule can run data-parallel ([`crate::Trainer::set_collective`]): its
    /// own parameters are averaged by [`Update::all_reduce`] and it takes one optimizer step
    /// per training step.
    fn data_parallel(&self) -> bool {
        self.passes() == 1
    }
    /// Data-parallel runs only, on every rank, once per step before [`Update::after_step`]:
    /// average the gradients of the rule's own parameters (collected in
    /// [`Update::after_backward`]) over the ranks, so every rank steps them alike.
    fn all_reduce(&mut self, _collective: &dyn Collective) -> Result<(), CollectiveError> {
        Ok(())
    }
    /// Called once per optimizer step, after the policy's update, when at least one
    /// micro-batch was finite (on any rank): step the rule's own parameters.
    fn after_step(&mut self) {}
    /// The rule's learned log Z to report, if it has one.
    fn log_z(&self) -> Option<f64> {
        None
    }
    /// The rule's own diagnostics of the step just taken (averaged over its micro-batches and
    /// passes), written to `metrics.jsonl` beside the step's figures; drained by the call.
    fn step_metrics(&mut self) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
    /// The rule's state for checkpoints.
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Restores [`Update::state`].
    fn load_state(&mut self, _state: serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

/// The update rule a config asks for.
pub fn update_from_config(cfg: &TrainConfig) -> Box<dyn Update> {
    match cfg.update {
        UpdateRule::Gflownet => Box::new(GFlowNet::new(cfg)),
        UpdateRule::Sft => Box::new(crate::sft::Sft),
        UpdateRule::Ppo => Box::new(crate::ppo::Ppo::new(cfg)),
    }
}

/// GFlowNet fine-tuning: one of the four objectives on the policy's per-step terms.
/// Trajectory balance learns one log Z **per prompt**, keyed like the replay buffer.
pub struct GFlowNet {
    objective: Objective,
    subtb_lambda: f64,
    lr_log_z: f64,
    log_z: BTreeMap<String, LogZ>,
    pending: Option<(String, Tensor<1>)>,
    grads: BTreeMap<String, f64>,
}

#[derive(Serialize, Deserialize)]
struct GFlowNetState {
    log_z: BTreeMap<String, LogZ>,
}

fn prompt_key(prompt: &[u32]) -> String {
    prompt
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl GFlowNet {
    /// The rule with the config's objective, λ and log Z learning rate.
    pub fn new(cfg: &TrainConfig) -> Self {
        Self {
            objective: cfg.objective,
            subtb_lambda: cfg.subtb_lambda,
            lr_log_z: cfg.lr_log_z,
            log_z: BTreeMap::new(),
            pending: None,
            grads: BTreeMap::new(),
        }
    }

    /// The learned log Z of a prompt (0 before its first step).
    pub fn log_z_of(&self, prompt: &[u32]) -> f64 {
        self.log_z.get(&prompt_key(prompt)).map_or(0.0, |z| z.value)
    }
}

impl Update for GFlowNet {
    fn name(&self) -> String {
        format!("gflownet-{:?}", self.objective).to_lowercase()
    }

    fn loss(
        &mut self,
        policy: &CausalLm,
        rollout: &Rollout<'_>,
        device: &Device,
    ) -> Result<UpdateLoss, TrainError> {
        let prompt = &rollout.example.prompt;
        let trajs = rollout.trajectories;
        let terms = policy_terms(policy, prompt, trajs, rollout.constraint, device);
        let t = terms.steps;
        let b = trajs.len();
        let mut lr_host = vec![0f32; b * (t + 1)];
        for (i, r) in rollout.log_rewards.iter().enumerate() {
            for (k, v) in r.iter().enumerate() {
                lr_host[i * (t + 1) + k] = (*v / rollout.reward_temperature) as f32;
            }
        }
        let log_r = Tensor::<2>::from_data(TensorData::new(lr_host, [b, t + 1]), device);
        let lengths: Vec<usize> = trajs.iter().map(Trajectory::num_actions).collect();
        let mut batch = TrajectoryBatch::new(terms.log_pf, terms.log_pterm, log_r, lengths)?;
        // Forced stops (at max_len, or earlier where the context was full) had no choice.
        let forced: Vec<bool> = trajs.iter().map(|t| t.forced).collect();
        batch = batch.with_forced_ends(&forced)?;
        self.pending = None;
        let loss = match self.objective {
            Objective::Subtb => modified_subtb(&batch, self.subtb_lambda)?,
            Objective::Db => modified_db(&batch)?,
            Objective::Vargrad => vargrad(&batch)?,
            Objective::Tb => {
                let key = prompt_key(prompt);
                let value = self.log_z.get(&key).map_or(0.0, |z| z.value);
                let z = Tensor::<1>::from_data(TensorData::new(vec![value as f32], [1]), device)
                    .require_grad();
                self.pending = Some((key, z.clone()));
                trajectory_balance(&batch, z)?
            }
        };
        let log_ratio_var = diagnostics(&batch).map(|d| d.log_ratio_var).ok();
        let weight = match self.objective {
            Objective::Subtb => modified_subtb_normaliser(batch.lengths(), self.subtb_lambda),
            Objective::Db => batch.lengths().iter().filter(|&&n| n > 0).count() as f64,
            Objective::Tb | Objective::Vargrad => b as f64,
        };
        Ok(UpdateLoss {
            loss,
            log_ratio_var,
            weight,
        })
    }

    fn after_backward(&mut self, grads: &Gradients) {
        if let Some((key, z)) = self.pending.take()
            && let Some(g) = z.grad(grads)
        {
            *self.grads.entry(key).or_default() += g.into_scalar::<f32>() as f64;
        }
    }

    /// log Z gradients are keyed by prompt and ranks draw different prompts: every rank
    /// sends its map, every rank sums them all by key and divides by the number of ranks.
    fn all_reduce(&mut self, collective: &dyn Collective) -> Result<(), CollectiveError> {
        if self.objective != Objective::Tb {
            return Ok(());
        }
        let mine: Vec<(String, u64)> = self
            .grads
            .iter()
            .map(|(k, g)| (k.clone(), g.to_bits()))
            .collect();
        let bytes = serde_json::to_vec(&mine).expect("log Z gradients serialise");
        let mut sum: BTreeMap<String, f64> = BTreeMap::new();
        for (r, b) in collective.all_gather_bytes(&bytes)?.iter().enumerate() {
            let theirs: Vec<(String, u64)> = serde_json::from_slice(b)
                .map_err(|e| CollectiveError(format!("log Z gradients of rank {r}: {e}")))?;
            for (k, g) in theirs {
                *sum.entry(k).or_default() += f64::from_bits(g);
            }
        }
        let n = collective.size() as f64;
        self.grads = sum.into_iter().map(|(k, g)| (k, g / n)).collect();
        Ok(())
    }

    fn after_step(&mut self) {
        for (key, g) in std::mem::take(&mut self.grads) {
            self.log_z.entry(key).or_default().step(g, self.lr_log_z);
        }
    }

    fn log_z(&self) -> Option<f64> {
        (self.objective == Objective::Tb).then(|| {
            let n = self.log_z.len().max(1) as f64;
            self.log_z.values().map(|z| z.value).sum::<f64>() / n
        })
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(GFlowNetState {
            log_z: self.log_z.clone(),
        })
        .expect("state serialises")
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), String> {
        if state.is_null() {
            return Ok(());
        }
        let s: GFlowNetState = serde_json::from_value(state).map_err(|e| e.to_string())?;
        self.log_z = s.log_z;
        Ok(())
    }
}
