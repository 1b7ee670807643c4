//! Reward models for GFlowNet fine-tuning (design §2, reference-notes §3.3).
//!
//! [`LmLikelihood`] is the next-sentence reward: terminating after the prefix z_1..z_k scores
//! log R_k = log p_base(z_1..z_k | X) + log p_base(⊤ | X z_1..z_k), computed for every prefix of
//! every sequence from ONE teacher-forced pass of the base model. For the paper's setting the base
//! model is the policy with its LoRA adapters switched off (`gfnlm_lora::set_adapters_enabled`),
//! one copy of the weights. Prefixes shorter than `min_len` get a fixed penalty; a vocabulary
//! constraint can offset disallowed tokens' logits (the paper's `vocab_alpha = -50`). Rewards are
//! returned untempered; divide by the reward temperature where they are used.

use burn::tensor::Device;
use gfnlm_models::causal_lm::LanguageModel;
use gfnlm_models::generate::teacher_forced;

/// The LM-likelihood reward over every prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct LmLikelihood {
    /// Token that ends a sequence (⊤), e.g. "." for sentences.
    pub termination: u32,
    /// Prefixes with fewer tokens get `short_log_reward`.
    pub min_len: usize,
    /// log R of a too-short prefix (the reference uses −99).
    pub short_log_reward: f64,
    /// Optional logit offsets `[vocab]` applied to the base model's logits (0 for allowed
    /// tokens, e.g. −50 for illegal ones).
    pub logit_offsets: Option<Vec<f32>>,
}

impl LmLikelihood {
    /// The reward with ⊤ = `termination`, `min_len` 1, penalty −99, no vocabulary offsets.
    pub fn new(termination: u32) -> Self {
        Self {
            termination,
            min_len: 1,
            short_log_reward: -99.0,
            logit_offsets: None,
        }
    }

    /// Untempered log R_k for k = 0..=len of every sequence (⊤ not included in `sequences`).
    ///
    /// `base` should be a no-grad model (e.g. `policy.valid()` with adapters disabled).
    pub fn log_rewards(
        &self,
        base: &(impl LanguageModel + ?Sized),
        prompt: &[u32],
        sequences: &[Vec<u32>],
        device: &Device,
    ) -> Vec<Vec<f64>> {
        if sequences.is_empty() {
            return Vec::new();
        }
        let tf = teacher_forced(
            base,
            prompt,
            sequences,
            self.termination,
            self.logit_offsets.as_deref(),
            device,
        );
        let t = tf.steps;
        let tok: Vec<f32> = tf
            .token
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .expect("f32");
        let term: Vec<f32> = tf
            .termination
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .expect("f32");
        sequences
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut prefix = 0f64;
                (0..=s.len())
                    .map(|k| {
                        let r = if k < self.min_len {
                            self.short_log_reward
                        } else {
                            prefix + term[i * (t + 1) + k] as f64
                        };
                        if k < s.len() {
                            prefix += tok[i * t + k] as f64;
                        }
                        r
                    })
                    .collect()
            })
            .collect()
    }
}
