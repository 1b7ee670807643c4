//! Per-prompt replay buffer (design §3 step 6; reference-notes §3.4).
//!
//! Each prompt keeps its top-K trajectories by *untempered* terminal log R. Exact duplicates
//! are skipped; near-duplicates (token edit distance < `sim_tolerance`·(|a|+|b|)) keep only the
//! better of the two. Replay draws uniformly with replacement.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use gfnlm_models::decode::Trajectory;

/// A stored trajectory with its untempered log-rewards for every prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The trajectory.
    pub trajectory: Trajectory,
    /// Untempered log R of every prefix (length `tokens.len() + 1`); saved bit-exact.
    #[serde(with = "crate::exact_f64::vec")]
    pub log_rewards: Vec<f64>,
}

impl Entry {
    /// Untempered log R at termination.
    pub fn terminal_log_reward(&self) -> f64 {
        *self.log_rewards.last().expect("at least the empty prefix")
    }
}

/// The replay buffer, keyed by prompt token ids.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayBuffer {
    /// Most entries kept per prompt.
    pub capacity: usize,
    /// Near-duplicate threshold (fraction of the summed lengths).
    pub sim_tolerance: f64,
    /// (prompt ids, entries best first); few prompts per run, so a list is enough.
    buckets: Vec<(Vec<u32>, Vec<Entry>)>,
}

/// Levenshtein distance between token sequences.
pub fn edit_distance(a: &[u32], b: &[u32]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

impl ReplayBuffer {
    /// An empty buffer.
    pub fn new(capacity: usize, sim_tolerance: f64) -> Self {
        Self {
            capacity,
            sim_tolerance,
            buckets: Vec::new(),
        }
    }

    fn bucket(&self, prompt: &[u32]) -> Option<&Vec<Entry>> {
        self.buckets
            .iter()
            .find(|(p, _)| p == prompt)
            .map(|(_, b)| b)
    }

    /// Entries stored for `prompt`.
    pub fn entries(&self, prompt: &[u32]) -> &[Entry] {
        self.bucket(prompt).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Total entries over all prompts.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|(_, b)| b.len()).sum()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offers an entry; returns whether the buffer changed.
    pub fn add(&mut self, prompt: &[u32], entry: Entry) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let i = match self.buckets.iter().position(|(p, _)| p == prompt) {
            Some(i) => i,
            None => {
                self.buckets.push((prompt.to_vec(), Vec::new()));
                self.buckets.len() - 1
            }
        };
        let bucket = &mut self.buckets[i].1;
        let toks = &entry.trajectory.tokens;
        if bucket.iter().any(|e| &e.trajectory.tokens == toks) {
            return false;
        }
        let score = entry.terminal_log_reward();
        if let Some(i) = bucket.iter().position(|e| {
            let a = &e.trajectory.tokens;
            (edit_distance(a, toks) as f64) < self.sim_tolerance * (a.len() + toks.len()) as f64
        }) {
            if bucket[i].terminal_log_reward() >= score {
                return false;
            }
            bucket[i] = entry;
        } else if bucket.len() < self.capacity {
            bucket.push(entry);
        } else {
            let (worst, w) = bucket
                .iter()
                .enumerate()
                .min_by(|a, b| {
                    a.1.terminal_log_reward()
                        .total_cmp(&b.1.terminal_log_reward())
                })
                .expect("non-empty bucket");
            if w.terminal_log_reward() >= score {
                return false;
            }
            bucket[worst] = entry;
        }
        bucket.sort_by(|a, b| b.terminal_log_reward().total_cmp(&a.terminal_log_reward()));
        true
    }

    /// The best `n` entries of every prompt (best first), prompts in insertion order: what a
    /// rank sends to the others in a replay exchange.
    pub fn best(&self, n: usize) -> Vec<(Vec<u32>, Vec<Entry>)> {
        self.buckets
            .iter()
            .map(|(p, b)| (p.clone(), b.iter().take(n).cloned().collect()))
            .filter(|(_, b): &(Vec<u32>, Vec<Entry>)| !b.is_empty())
            .collect()
    }

    /// Draws `n` entries for `prompt` uniformly with replacement (`None` when empty).
    pub fn sample(&self, prompt: &[u32], n: usize, rng: &mut ChaCha8Rng) -> Option<Vec<Entry>> {
        let bucket = self.bucket(prompt).filter(|b| !b.is_empty())?;
        Some(
            (0..n)
                .map(|_| bucket[rng.random_range(0..bucket.len())].clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn e(tokens: &[u32], r: f64) -> Entry {
        let mut lr = vec![-99.0; tokens.len()];
        lr.push(r);
        Entry {
            trajectory: Trajectory::new(tokens.to_vec(), false),
            log_rewards: lr,
        }
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance(&[1, 2, 3], &[1, 2, 3]), 0);
        assert_eq!(edit_distance(&[1, 2, 3], &[1, 3]), 1);
        assert_eq!(edit_distance(&[], &[4, 5]), 2);
        assert_eq!(edit_distance(&[1, 2, 3, 4], &[4, 3, 2, 1]), 4);
    }

    #[test]
    fn keeps_top_k_and_dedups() {
        let mut b = ReplayBuffer::new(2, 0.25);
        let p = [7u32];
        assert!(b.add(&p, e(&[1, 2, 3, 4, 5, 6, 7, 8], -5.0)));
        assert!(
            !b.add(&p, e(&[1, 2, 3, 4, 5, 6, 7, 8], -1.0)),
            "exact duplicate"
        );
        // One edit in 16 tokens < 0.25·16: near duplicate, better → replaces.
        assert!(b.add(&p, e(&[1, 2, 3, 4, 5, 6, 7, 9], -2.0)));
        assert_eq!(b.entries(&p).len(), 1);
        assert!(b.add(&p, e(&[20, 21], -3.0)));
        assert!(b.add(&p, e(&[30, 31], -0.5)), "evicts the worst when full");
        let r: Vec<f64> = b
            .entries(&p)
            .iter()
            .map(Entry::terminal_log_reward)
            .collect();
        assert_eq!(r, vec![-0.5, -2.0]);
        assert!(!b.add(&p, e(&[40, 41], -9.0)), "worse than everything kept");
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(b.sample(&p, 5, &mut rng).unwrap().len(), 5);
        assert!(b.sample(&[8], 1, &mut rng).is_none());
    }
}
