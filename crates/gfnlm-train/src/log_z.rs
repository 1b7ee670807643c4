//! The learned scalar log Z of trajectory balance (objective `tb`): a host-side scalar with its
//! own Adam state, so it is checkpointed in `state.json` and resumes exactly.

use serde::{Deserialize, Serialize};

/// log Z and the Adam moments that update it (β₁ = 0.9, β₂ = 0.999, ε = 1e-8).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogZ {
    /// Current estimate of log Σ_Z R(Z).
    #[serde(with = "crate::exact_f64")]
    pub value: f64,
    #[serde(with = "crate::exact_f64")]
    m: f64,
    #[serde(with = "crate::exact_f64")]
    v: f64,
    t: u64,
}

impl LogZ {
    /// One Adam step on `grad` = ∂loss/∂log Z with learning rate `lr`.
    pub fn step(&mut self, grad: f64, lr: f64) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        self.t += 1;
        self.m = B1 * self.m + (1.0 - B1) * grad;
        self.v = B2 * self.v + (1.0 - B2) * grad * grad;
        let m_hat = self.m / (1.0 - B1.powi(self.t as i32));
        let v_hat = self.v / (1.0 - B2.powi(self.t as i32));
        self.value -= lr * m_hat / (v_hat.sqrt() + 1e-8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_finds_the_minimum_of_a_quadratic() {
        let mut z = LogZ::default();
        // loss = (z − 4.6)², grad = 2 (z − 4.6): the first step moves by lr, towards the target.
        z.step(2.0 * (z.value - 4.6), 0.1);
        assert!((z.value - 0.1).abs() < 1e-9, "{}", z.value);
        for _ in 0..2000 {
            z.step(2.0 * (z.value - 4.6), 0.1);
        }
        assert!((z.value - 4.6).abs() < 1e-2, "{}", z.value);
    }
}
