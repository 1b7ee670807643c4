//! `Tokenizer::from_gguf`: the real SmolLM2 GGUF against the parity fixtures and tokenizer.json,
//! and error cases on small GGUF files written into a temp dir.

mod common;

use std::time::Instant;

use gfnlm_gguf::{GgufFile, GgufWriter, MetadataArray, MetadataValue};
use gfnlm_tokenizer::{Tokenizer, TokenizerError, keys};

fn smollm2_gguf() -> Tokenizer {
    let path = common::model_path();
    let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    Tokenizer::from_gguf(&gguf).unwrap()
}

#[test]
fn gguf_tokenizer_matches_parity_fixtures() {
    common::check_parity(&smollm2_gguf());
}

#[test]
fn gguf_and_tokenizer_json_agree_on_varied_strings() {
    let gguf = smollm2_gguf();
    let json = common::from_json();
    let strings = common::varied_strings();
    assert!(strings.len() >= 300, "only {} strings", strings.len());
    let mut total = 0;
    for s in &strings {
        let a = gguf.encode(s, false).unwrap();
        assert_eq!(a, json.encode(s, false).unwrap(), "{s:?}");
        assert_eq!(gguf.decode(&a).unwrap(), *s, "round trip of {s:?}");
        total += a.len();
    }
    assert!(total > 5000, "only {total} tokens");
    assert_eq!((gguf.bos_id(), gguf.eos_id()), (Some(1), Some(2)));
    assert_eq!(gguf.encode("<|im_end|>", false).unwrap(), [2]);
    assert_eq!(
        gguf.decode(&[1, 504, 2]).unwrap(),
        "<|im_start|>The<|im_end|>",
        "special tokens are kept when decoding"
    );
}

#[test]
fn gguf_build_time() {
    let path = common::model_path();
    let gguf = GgufFile::open(&path).unwrap();
    let start = Instant::now();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let elapsed = start.elapsed();
    eprintln!(
        "from_gguf built a {}-token tokenizer in {elapsed:?}",
        tok.vocab_size()
    );
    assert!(elapsed.as_secs_f64() < 5.0, "from_gguf took {elapsed:?}");
}

/// A tiny byte-level BPE vocabulary: "<|end|>" (control), bytes "a", "b", "Ġ", two merges and
/// the user-defined (raw text) token "hi there".
fn tiny_writer(skip: &[&str]) -> GgufWriter {
    let strings = |xs: &[&str]| {
        MetadataValue::Array(
            MetadataArray::new(xs.iter().map(|&x| MetadataValue::from(x)).collect()).unwrap(),
        )
    };
    let entries: Vec<(&str, MetadataValue)> = vec![
        (keys::MODEL, "gpt2".into()),
        (keys::PRE, "default".into()),
        (
            keys::TOKENS,
            strings(&["<|end|>", "a", "b", "Ġ", "ab", "Ġab", "hi there"]),
        ),
        (keys::MERGES, strings(&["a b", "Ġ ab"])),
        (
            keys::TOKEN_TYPE,
            MetadataValue::Array(
                MetadataArray::new([3, 1, 1, 1, 1, 1, 4].map(MetadataValue::I32).to_vec()).unwrap(),
            ),
        ),
        (keys::EOS_ID, MetadataValue::U32(0)),
    ];
    let mut w = GgufWriter::new();
    for (k, v) in entries {
        if !skip.contains(&k) {
            w.add_metadata(k, v).unwrap();
        }
    }
    w
}

fn build(w: &GgufWriter) -> (tempfile::TempDir, Result<Tokenizer, TokenizerError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    w.write_file(&path).unwrap();
    let gguf = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&gguf);
    (dir, tok)
}

#[test]
fn tiny_gguf_builds_and_encodes() {
    let (_dir, tok) = build(&tiny_writer(&[]));
    let tok = tok.unwrap();
    assert_eq!(tok.vocab_size(), 7);
    assert_eq!(
        tok.encode("ab ab<|end|>ba", false).unwrap(),
        [4, 5, 0, 2, 1]
    );
    assert_eq!(tok.decode(&[4, 5, 0, 2, 1]).unwrap(), "ab ab<|end|>ba");
    // The user-defined token matches the raw text, is not special, and decodes back.
    assert_eq!(tok.encode("ahi there b", false).unwrap(), [1, 6, 3, 2]);
    assert_eq!(tok.decode(&[1, 6, 3, 2]).unwrap(), "ahi there b");
    let added = tok.inner().get_added_tokens_decoder();
    assert_eq!(added.len(), 2);
    assert!(added[&0].special && !added[&6].special);
    assert_eq!((tok.bos_id(), tok.eos_id()), (None, Some(0)));
    assert!(tok.source().ends_with("tiny.gguf"));
}

#[test]
fn in_memory_gguf_is_named_in_errors() {
    let gguf = GgufFile::from_bytes(tiny_writer(&[keys::MERGES]).to_bytes()).unwrap();
    let msg = Tokenizer::from_gguf(&gguf).unwrap_err().to_string();
    assert!(
        msg.contains("<in-memory GGUF>") && msg.contains(keys::MERGES),
        "{msg}"
    );
    let gguf = GgufFile::from_bytes(tiny_writer(&[]).to_bytes()).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    assert!(
        tok.encode("ab", true)
            .unwrap_err()
            .to_string()
            .contains("<in-memory GGUF>")
    );
}

#[test]
fn missing_keys_are_named() {
    for key in [keys::MODEL, keys::TOKENS, keys::MERGES] {
        let (_dir, res) = build(&tiny_writer(&[key]));
        let err = res.unwrap_err();
        assert!(
            matches!(err, TokenizerError::MissingKey { .. }),
            "{key}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(key) && msg.contains("tiny.gguf"), "{msg}");
    }
}

#[test]
fn unsupported_or_malformed_metadata_is_rejected() {
    let mut w = tiny_writer(&[keys::MODEL]);
    w.add_metadata(keys::MODEL, "llama").unwrap();
    let (_dir, res) = build(&w);
    let msg = res.unwrap_err().to_string();
    assert!(
        msg.contains("`llama`") && msg.contains("tiny.gguf") && msg.contains(keys::MODEL),
        "{msg}"
    );

    let mut w = tiny_writer(&[keys::PRE]);
    w.add_metadata(keys::PRE, "llama3").unwrap();
    let (_dir, res) = build(&w);
    let msg = res.unwrap_err().to_string();
    assert!(msg.contains("`llama3`") && msg.contains(keys::PRE), "{msg}");

    let mut w = tiny_writer(&[keys::TOKENS]);
    w.add_metadata(keys::TOKENS, MetadataValue::U32(3)).unwrap();
    let (_dir, res) = build(&w);
    let err = res.unwrap_err();
    assert!(
        matches!(err, TokenizerError::InvalidMetadata { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(keys::TOKENS), "{err}");

    let mut w = tiny_writer(&[keys::EOS_ID]);
    w.add_metadata(keys::EOS_ID, MetadataValue::U32(7)).unwrap();
    let (_dir, res) = build(&w);
    let msg = res.unwrap_err().to_string();
    assert!(
        msg.contains(keys::EOS_ID) && msg.contains("out of range"),
        "{msg}"
    );
}
