//! Fast checks of the model's mechanics on a tiny random-weight Llama: the KV cache, right
//! padding, the shared prompt prefix and GQA. (Numerical parity lives in `smollm2_parity.rs`.)

use burn::tensor::{Device, Tensor};
use gfnlm_models::generate::{SampleOptions, sample, score_continuations, tokens_tensor};
use gfnlm_models::{LlamaConfig, LlamaForCausalLm};

fn tiny() -> (LlamaForCausalLm, Device) {
    let device = gfnlm_models::parse_device("flex").unwrap();
    device.seed(7);
    let config = LlamaConfig {
        vocab_size: 97,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
    };
    config.validate().unwrap();
    (config.init_random(&device), device)
}

fn host3(t: Tensor<3>) -> (Vec<f32>, [usize; 3]) {
    let d = t.dims();
    (t.into_data().convert::<f32>().try_into_vec().unwrap(), d)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn incremental_decode_with_cache_equals_full_forward() {
    let (m, dev) = tiny();
    let seq: Vec<u32> = vec![5, 17, 3, 88, 41, 2, 60, 9];
    let (full, [_, t, v]) = host3(m.forward(tokens_tensor(std::slice::from_ref(&seq), &dev), None));
    let mut cache = m.new_cache();
    // Prefill 3 tokens, then one token at a time.
    let (pre, _) = host3(m.forward(tokens_tensor(&[seq[..3].to_vec()], &dev), Some(&mut cache)));
    assert!(max_diff(&pre, &full[..3 * v]) < 1e-5);
    for i in 3..t {
        let step = m.forward_last(tokens_tensor(&[vec![seq[i]]], &dev), Some(&mut cache));
        let step: Vec<f32> = step.into_data().convert::<f32>().try_into_vec().unwrap();
        let d = max_diff(&step, &full[i * v..(i + 1) * v]);
        assert!(d < 1e-4, "position {i}: cache vs full differ by {d}");
    }
    assert_eq!(cache.len(), t);
}

#[test]
fn right_padded_rows_match_unpadded_rows() {
    let (m, dev) = tiny();
    let a: Vec<u32> = vec![1, 2, 3, 4, 5, 6];
    let b: Vec<u32> = vec![9, 8, 7];
    let mut b_padded = b.clone();
    b_padded.resize(a.len(), 0);
    let (batch, [_, t, v]) = host3(m.forward(tokens_tensor(&[a.clone(), b_padded], &dev), None));
    let (alone, _) = host3(m.forward(tokens_tensor(std::slice::from_ref(&b), &dev), None));
    let row1 = &batch[t * v..t * v + b.len() * v];
    assert!(
        max_diff(row1, &alone) < 1e-5,
        "padding leaked into real positions"
    );
    // Changing the padding does not change the real positions either.
    let mut b_other = b.clone();
    b_other.resize(a.len(), 50);
    let (batch2, _) = host3(m.forward(tokens_tensor(&[a, b_other], &dev), None));
    assert!(max_diff(&batch2[t * v..t * v + b.len() * v], row1) < 1e-6);
}

#[test]
fn shared_prefix_scores_equal_separate_full_forwards() {
    let (m, dev) = tiny();
    let prompt: Vec<u32> = vec![11, 12, 13, 14];
    let conts: Vec<Vec<u32>> = vec![vec![20, 21, 22], vec![30], vec![40, 41]];
    let got = score_continuations(&m, &prompt, &conts, &dev);
    for (c, g) in conts.iter().zip(&got) {
        let all: Vec<u32> = prompt.iter().chain(c).copied().collect();
        let lp = gfnlm_models::generate::position_logprobs(&m, &all, &dev);
        let [_, v] = lp.dims();
        let lp: Vec<f32> = lp.into_data().convert::<f32>().try_into_vec().unwrap();
        for (j, &tok) in c.iter().enumerate() {
            let want = lp[(prompt.len() - 1 + j) * v + tok as usize];
            assert!(
                (g[j] - want).abs() < 1e-4,
                "cont {c:?} step {j}: {} vs {want}",
                g[j]
            );
        }
    }
}

#[test]
fn sampling_is_seeded_and_logprobs_are_the_models() {
    let (m, dev) = tiny();
    let prompt: Vec<u32> = vec![3, 1, 4, 1, 5];
    let opts = SampleOptions {
        num_samples: 4,
        max_new_tokens: 6,
        temperature: 1.0,
        seed: 42,
        stop_token: Some(2),
    };
    let a = sample(&m, &prompt, &opts, &dev);
    let b = sample(&m, &prompt, &opts, &dev);
    assert_eq!(a, b, "same seed, same samples");
    let c = sample(
        &m,
        &prompt,
        &SampleOptions {
            seed: 43,
            ..opts.clone()
        },
        &dev,
    );
    assert_ne!(a, c, "different seed, different samples");
    // The sampler's recorded log-probs equal teacher forcing of what it produced.
    let conts: Vec<Vec<u32>> = a.iter().map(|s| s.tokens.clone()).collect();
    let tf = score_continuations(&m, &prompt, &conts, &dev);
    for (s, t) in a.iter().zip(&tf) {
        assert!(s.tokens.len() <= 6);
        for (x, y) in s.token_logprobs.iter().zip(t) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
    // Tempered sampling still records untempered log-probs.
    let hot = sample(
        &m,
        &prompt,
        &SampleOptions {
            temperature: 2.5,
            ..opts
        },
        &dev,
    );
    let tf = score_continuations(
        &m,
        &prompt,
        &hot.iter().map(|s| s.tokens.clone()).collect::<Vec<_>>(),
        &dev,
    );
    for (s, t) in hot.iter().zip(&tf) {
        for (x, y) in s.token_logprobs.iter().zip(t) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
}

/// `score_suffix_after_prefixes` equals the plain definition: each token's (offset)
/// log-softmax at its position, and log p(Y | context, seq[..e]) from scoring seq[..e] + Y
/// as a separate continuation — for sequences of unequal lengths, ends 0..=len, repeated and
/// missing ends, and a one-token suffix.
#[test]
fn suffix_after_prefixes_matches_separate_continuations() {
    use gfnlm_models::generate::score_suffix_after_prefixes;
    let (m, dev) = tiny();
    let context: Vec<u32> = vec![5, 6, 7];
    let seqs: Vec<Vec<u32>> = vec![vec![20, 21, 22, 23, 24], vec![30, 31], vec![40, 41, 42]];
    let ends: Vec<Vec<usize>> = vec![vec![0, 2, 3, 5], vec![1, 2], vec![]];
    let mut offsets = vec![0.0f32; 97];
    for o in offsets.iter_mut().skip(30) {
        *o = -3.0;
    }
    for suffix in [vec![50u32, 51, 52], vec![60]] {
        let got =
            score_suffix_after_prefixes(&m, &context, &seqs, &ends, &suffix, Some(&offsets), &dev);
        for (i, s) in seqs.iter().enumerate() {
            // Tokens: log-softmax of (logits + offsets) at each position, by hand.
            let all: Vec<u32> = context.iter().chain(s).copied().collect();
            let logits = m.forward(tokens_tensor(std::slice::from_ref(&all), &dev), None);
            let (l, [_, _, v]) = host3(logits);
            for (k, &tok) in s.iter().enumerate() {
                let row = &l[(context.len() - 1 + k) * v..(context.len() + k) * v];
                let shifted: Vec<f32> = row.iter().zip(&offsets).map(|(a, b)| a + b).collect();
                let max = shifted.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let lse = max + shifted.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
                let want = shifted[tok as usize] - lse;
                assert!(
                    (got.tokens[i][k] - want).abs() < 1e-4,
                    "seq {i} token {k}: {} vs {want}",
                    got.tokens[i][k]
                );
            }
            assert_eq!(got.tokens[i].len(), s.len());
            assert_eq!(got.suffix[i].len(), ends[i].len());
            for (j, &e) in ends[i].iter().enumerate() {
                let mut prefix: Vec<u32> = context.clone();
                prefix.extend(&s[..e]);
                let want: f64 =
                    score_continuations(&m, &prefix, std::slice::from_ref(&suffix), &dev)[0]
                        .iter()
                        .map(|&x| x as f64)
                        .sum();
                assert!(
                    (got.suffix[i][j] - want).abs() < 1e-4,
                    "seq {i} end {e}: {} vs {want}",
                    got.suffix[i][j]
                );
            }
        }
    }
}
