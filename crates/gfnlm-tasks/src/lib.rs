//! Tasks for GFlowNet fine-tuning: what is sampled, when it ends, which tokens are allowed, and
//! the reward of terminating at every prefix (design §4).
//!
//! A task is pure host-side logic; rewards that need a language model live in the trainer.

pub mod rng;

pub use rng::{RngMetrics, RngTask};

/// Vocabulary and length constraints applied identically when sampling and in the loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// Token that ends a sequence (⊤).
    pub termination: u32,
    /// Tokens the policy may emit (⊤ included); `None` allows the whole vocabulary.
    pub allowed: Option<Vec<u32>>,
    /// Offset added to the logits of disallowed tokens (the paper's `vocab_alpha`, e.g. −99).
    pub vocab_alpha: f32,
    /// ⊤ is not sampled before this many tokens.
    pub min_len: usize,
    /// ⊤ is forced after this many tokens.
    pub max_len: usize,
}

impl Constraint {
    /// The additive logit offsets `[vocab]`: 0 for allowed tokens, `vocab_alpha` otherwise.
    pub fn logit_offsets(&self, vocab: usize) -> Vec<f32> {
        match &self.allowed {
            None => vec![0.0; vocab],
            Some(allowed) => {
                let mut v = vec![self.vocab_alpha; vocab];
                for &t in allowed {
                    if (t as usize) < vocab {
                        v[t as usize] = 0.0;
                    }
                }
                v
            }
        }
    }
}
