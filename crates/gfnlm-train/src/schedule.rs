//! Learning-rate and reward-temperature schedules (reference-notes §3.5).

use serde::{Deserialize, Serialize};

/// Linear warm-up to `lr`, then constant or linear decay to 0 at `total_steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Optimizer steps of linear warm-up (step 0 has lr = 0, as in the reference).
    pub warmup_steps: usize,
    /// Decay linearly to 0 at `total_steps` after warm-up.
    pub linear_decay: bool,
    /// Total optimizer steps (for the decay).
    pub total_steps: usize,
}

impl LrSchedule {
    /// The learning rate at optimizer step `step`.
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * step as f64 / self.warmup_steps as f64;
        }
        if self.linear_decay && self.total_steps > self.warmup_steps {
            let left = self.total_steps.saturating_sub(step) as f64;
            return self.lr * left / (self.total_steps - self.warmup_steps) as f64;
        }
        self.lr
    }
}

/// Reward temperature T_R, linear from `start` to `end` over `horizon` steps, then held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardTemperature {
    /// T_R at step 0.
    pub start: f64,
    /// T_R from `horizon` on.
    pub end: f64,
    /// Steps of the linear ramp.
    pub horizon: usize,
}

impl RewardTemperature {
    /// T_R at `step`.
    pub fn at(&self, step: usize) -> f64 {
        if self.horizon == 0 {
            return self.end;
        }
        let f = (step as f64 / self.horizon as f64).min(1.0);
        self.start + (self.end - self.start) * f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let s = LrSchedule {
            lr: 1e-3,
            warmup_steps: 10,
            linear_decay: true,
            total_steps: 110,
        };
        assert_eq!(s.at(0), 0.0);
        assert!((s.at(5) - 5e-4).abs() < 1e-15);
        assert!((s.at(10) - 1e-3).abs() < 1e-15);
        assert!((s.at(60) - 5e-4).abs() < 1e-15);
        assert_eq!(s.at(110), 0.0);
        let t = RewardTemperature {
            start: 1.0,
            end: 0.8,
            horizon: 750,
        };
        assert_eq!(t.at(0), 1.0);
        assert!((t.at(375) - 0.9).abs() < 1e-12);
        assert!((t.at(5000) - 0.8).abs() < 1e-12);
    }
}
