//! Supervised fine-tuning as an [`Update`]: maximum likelihood of the task's demonstrations
//! (`Example::demonstration`, e.g. worked rationales) under the same constrained policy the
//! GFlowNet trains, so both baselines are sampled and evaluated identically.
//!
//! The policy generates Z and ends it with ⊤; the task appends Y for its reward. SFT therefore
//! maximises the policy's own log q(Z ⊤ | X) of a demonstration, per token: tool tokens in Z
//! (replayed through the task's tool when the trainer builds the demonstration trajectory) are
//! fed to the model but carry no loss, exactly as in the GFlowNet's terms.

use burn::tensor::Device;
use gfnlm_models::CausalLm;
use gfnlm_models::decode::policy_terms;

use crate::trainer::TrainError;
use crate::update::{Rollout, RolloutSource, Update, UpdateLoss};

/// Supervised fine-tuning on demonstrations.
#[derive(Debug, Default)]
pub struct Sft;

impl Update for Sft {
    fn name(&self) -> String {
        "sft".into()
    }

    fn source(&self) -> RolloutSource {
        RolloutSource::Demonstration
    }

    fn loss(
        &mut self,
        policy: &CausalLm,
        rollout: &Rollout<'_>,
        device: &Device,
    ) -> Result<UpdateLoss, TrainError> {
        let trajs = rollout.trajectories;
        if trajs.is_empty() {
            return Err(TrainError::Config(format!(
                "sft: example '{}' has no demonstration (use a task split whose examples carry one, e.g. arithmetic with num_homework = 0)",
                rollout.example.id
            )));
        }
        let terms = policy_terms(
            policy,
            &rollout.example.prompt,
            trajs,
            rollout.constraint,
            device,
        );
        let t = terms.steps;
        let mut total = None;
        let mut count = 0usize;
        for (i, traj) in trajs.iter().enumerate() {
            let a = traj.num_actions();
            let mut lp = terms.log_pterm.clone().slice([i..i + 1, a..a + 1]).sum();
            if traj.forced {
                // ⊤ was forced at max_len: it is not the policy's choice.
                lp = lp.mul_scalar(0.0);
            } else {
                count += 1;
            }
            if a > 0 {
                lp = lp + terms.log_pf.clone().slice([i..i + 1, 0..a.min(t)]).sum();
            }
            count += a;
            total = Some(match total {
                None => lp,
                Some(s) => s + lp,
            });
        }
        let loss = total
            .expect("at least one trajectory")
            .neg()
            .div_scalar(count.max(1) as f64);
        Ok(UpdateLoss {
            loss,
            log_ratio_var: None,
            weight: count.max(1) as f64,
        })
    }
}
