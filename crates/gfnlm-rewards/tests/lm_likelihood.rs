//! The batched LM-likelihood reward equals log p(z_1..z_k ⊤ | X) scored one prefix at a time.

use gfnlm_models::LlamaConfig;
use gfnlm_models::generate::score_continuations;
use gfnlm_rewards::LmLikelihood;

#[test]
fn every_prefix_reward_equals_scoring_that_prefix_plus_termination() {
    let device = gfnlm_models::parse_device("flex").unwrap();
    device.seed(3);
    let model = LlamaConfig {
        vocab_size: 50,
        hidden_size: 32,
        intermediate_size: 40,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
    }
    .init_random(&device);
    let prompt = vec![4u32, 8, 15, 16];
    let seqs = vec![vec![23u32, 42, 7], vec![9], vec![11, 12]];
    let term = 30;
    let reward = LmLikelihood {
        min_len: 1,
        ..LmLikelihood::new(term)
    };
    let got = reward.log_rewards(&model, &prompt, &seqs, &device);
    for (s, r) in seqs.iter().zip(&got) {
        assert_eq!(r.len(), s.len() + 1);
        assert_eq!(r[0], -99.0, "the empty prefix is below min_len");
        for k in 1..=s.len() {
            let mut cont = s[..k].to_vec();
            cont.push(term);
            let want: f64 = score_continuations(&model, &prompt, &[cont], &device)[0]
                .iter()
                .map(|&x| x as f64)
                .sum();
            assert!(
                (r[k] - want).abs() < 1e-4,
                "seq {s:?} prefix {k}: {} vs {want}",
                r[k]
            );
        }
    }
    // A vocabulary offset on an unused token changes every reward (renormalisation), so the
    // option is really applied.
    let mut offsets = vec![0f32; 50];
    offsets[49] = -50.0;
    let constrained = LmLikelihood {
        logit_offsets: Some(offsets),
        ..reward.clone()
    }
    .log_rewards(&model, &prompt, &seqs, &device);
    assert!(
        constrained[0][1] > got[0][1],
        "masking a token raises the others' log-probs"
    );
}
