//! Parity of the burn all-MiniLM-L6-v2 encoder with sentence-transformers, on the real model
//! (`gfnlm_fetch::ensure_minilm`, fetched by `cargo xtask fetch-model minilm`).
//!
//! Reference: `tests/fixtures/minilm-expected.json`, written by
//! `scripts/make-embed-fixtures.py` (sentence-transformers: Transformer with max_seq_length
//! 256 → mean Pooling → Normalize).

use std::time::Instant;

use burn::tensor::Device;
use gfnlm_embed::{SentenceEncoder, cosine, semantic_diversity};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    encoder: String,
    max_seq_length: usize,
    semantic_diversity: f64,
    sentences: Vec<String>,
    token_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm-expected.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn encoder() -> SentenceEncoder {
    let dir = gfnlm_fetch::ensure_minilm()
        .expect("all-MiniLM-L6-v2 (run `cargo xtask fetch-model minilm`)");
    SentenceEncoder::load(&dir, &Device::flex()).expect("load all-MiniLM-L6-v2")
}

#[test]
fn embeddings_match_sentence_transformers() {
    let fx = fixture();
    let t0 = Instant::now();
    let enc = encoder();
    let load_s = t0.elapsed().as_secs_f64();
    assert_eq!(enc.name(), fx.encoder);
    assert_eq!(enc.dim(), 384);
    assert_eq!(enc.max_seq_length(), fx.max_seq_length);

    for (s, want) in fx.sentences.iter().zip(&fx.token_ids) {
        assert_eq!(&enc.tokenize(s).unwrap(), want, "token ids of {s:?}");
    }
    assert!(
        fx.token_ids
            .iter()
            .any(|ids| ids.len() == fx.max_seq_length),
        "the fixture must exercise truncation"
    );

    let t1 = Instant::now();
    let got = enc.embed(&fx.sentences).unwrap();
    let embed_s = t1.elapsed().as_secs_f64();
    assert_eq!(got.len(), fx.embeddings.len());
    let mut min_cos = f64::INFINITY;
    let mut max_abs = 0.0f32;
    for ((s, g), w) in fx.sentences.iter().zip(&got).zip(&fx.embeddings) {
        assert_eq!(g.len(), w.len());
        let c = cosine(g, w);
        let d = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(c >= 0.9999, "cosine {c} for {s:?}");
        assert!(d <= 1e-4, "max |diff| {d} for {s:?}");
        min_cos = min_cos.min(c);
        max_abs = max_abs.max(d);
    }
    let div = semantic_diversity(&got);
    eprintln!(
        "parity over {} sentences: min cosine {min_cos:.9}, max |diff| {max_abs:.2e}, \
         diversity {div:.7} (reference {:.7}); load {load_s:.2}s, embed {embed_s:.2}s",
        got.len(),
        fx.semantic_diversity
    );
    assert!(
        (div - fx.semantic_diversity).abs() < 1e-4,
        "diversity {div} vs {}",
        fx.semantic_diversity
    );
}

#[test]
fn padding_and_batching_do_not_change_embeddings() {
    let fx = fixture();
    let enc = encoder();
    let short = fx.sentences[0].clone();
    let alone = enc.embed(std::slice::from_ref(&short)).unwrap();
    // In one padded batch with the longest (truncated, 256-token) sentence.
    let long = fx.sentences.last().unwrap().clone();
    let batched = enc
        .embed(&[long, short.clone(), "Hello!".into(), short])
        .unwrap();
    for got in [&batched[1], &batched[3]] {
        let d = alone[0]
            .iter()
            .zip(got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-5, "padding changed the embedding by {d}");
    }
    assert!(enc.embed(&[]).unwrap().is_empty());
    // Many texts: more than one internal batch, order preserved.
    let many: Vec<String> = (0..70).map(|i| format!("sentence {i}")).collect();
    let out = enc.embed(&many).unwrap();
    let single = enc.embed(&many[37..38]).unwrap();
    let d = out[37]
        .iter()
        .zip(&single[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(d < 1e-5, "order or batching changed the embedding by {d}");
}

#[test]
fn bert_score_of_real_sentences_ranks_paraphrases_first() {
    let enc = encoder();
    let texts: Vec<String> = [
        "The cat sat on the warm mat by the door.",
        "A cat was sitting on the mat near the door.",
        "Stock prices fell sharply after the bank's report.",
        "Hello",
    ]
    .map(String::from)
    .to_vec();
    let toks = enc.token_embeddings(&texts).unwrap();
    // [CLS] and [SEP] are left out; every vector is unit length.
    for (t, e) in texts.iter().zip(&toks) {
        assert_eq!(e.len(), enc.tokenize(t).unwrap().len() - 2, "{t}");
        for v in e {
            let n: f32 = v.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4, "{n}");
        }
    }
    let (p, r, f) = gfnlm_embed::bert_score(&toks[0], &toks[0]);
    assert!((p - 1.0).abs() < 1e-5 && (r - 1.0).abs() < 1e-5 && (f - 1.0).abs() < 1e-5);
    let para = gfnlm_embed::bert_score(&toks[1], &toks[0]).2;
    let unrelated = gfnlm_embed::bert_score(&toks[2], &toks[0]).2;
    assert!(
        para > unrelated + 0.1,
        "paraphrase {para} vs unrelated {unrelated}"
    );
    // Batched with a longer text (padding) gives the same vectors as alone.
    let alone = enc.token_embeddings(&texts[3..4]).unwrap();
    let d = alone[0][0]
        .iter()
        .zip(&toks[3][0])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(d < 1e-5, "padding changed a token vector by {d}");
}
