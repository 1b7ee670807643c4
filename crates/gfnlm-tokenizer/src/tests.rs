//! Unit tests of `Tokenizer::from_parts` against SmolLM2's tokenizer.json.

use super::*;
use gfnlm_test_support::tokenizer_json;

/// Vocabulary, merges and token types extracted from SmolLM2's tokenizer.json, as a GGUF
/// converter would store them.
fn smollm2_parts() -> BpeParts {
    let path = tokenizer_json();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vocab = json["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (tok, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = tok.clone();
    }
    let merges = json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let pair = m.as_array().unwrap();
            format!(
                "{} {}",
                pair[0].as_str().unwrap(),
                pair[1].as_str().unwrap()
            )
        })
        .collect();
    let mut token_types = vec![token_type::NORMAL; tokens.len()];
    for added in json["added_tokens"].as_array().unwrap() {
        if added["special"].as_bool().unwrap() {
            token_types[added["id"].as_u64().unwrap() as usize] = token_type::CONTROL;
        }
    }
    BpeParts {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        tokens,
        merges,
        token_types,
        bos: Some(1),
        eos: Some(2),
        add_prefix_space: false,
    }
}

#[test]
fn from_parts_matches_tokenizer_json() {
    let rebuilt = Tokenizer::from_parts(smollm2_parts(), "smollm2-parts").unwrap();
    let reference = Tokenizer::from_file(tokenizer_json()).unwrap();
    assert_eq!(rebuilt.vocab_size(), 49152);
    assert_eq!(reference.vocab_size(), 49152);
    for text in [
        "The capital of France is",
        "  two spaces  ",
        "line1\nline2\n\n",
        "Café naïve – déjà vu 😀",
        "<|im_start|>user\nHi<|im_end|>",
        "x<|im_end|>y 12345 ?!",
        "",
    ] {
        let a = rebuilt.encode(text, false).unwrap();
        let b = reference.encode(text, false).unwrap();
        assert_eq!(a, b, "{text:?}");
        assert_eq!(rebuilt.decode(&a).unwrap(), text);
    }
    assert_eq!(
        rebuilt.encode("The capital of France is", false).unwrap(),
        [504, 3575, 282, 4649, 314]
    );
    let a = rebuilt.token_to_id("a").unwrap();
    assert_eq!(rebuilt.encode("a<|im_end|>", false).unwrap(), [a, 2]);
}

#[test]
fn bos_only_when_asked() {
    let tok = Tokenizer::from_parts(smollm2_parts(), "smollm2-parts").unwrap();
    let plain = tok.encode("Hello", false).unwrap();
    let with_bos = tok.encode("Hello", true).unwrap();
    assert_eq!(with_bos[0], 1);
    assert_eq!(&with_bos[1..], plain.as_slice());
    assert_ne!(plain[0], 1);

    let mut parts = smollm2_parts();
    parts.bos = None;
    let tok = Tokenizer::from_parts(parts, "no-bos.gguf").unwrap();
    let err = tok.encode("Hello", true).unwrap_err();
    assert!(matches!(err, TokenizerError::NoBos { .. }), "{err}");
    assert!(err.to_string().contains("no-bos.gguf"), "{err}");
}

#[test]
fn token_lookups() {
    let tok = Tokenizer::from_parts(smollm2_parts(), "smollm2-parts").unwrap();
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(tok.id_to_token(504).as_deref(), Some("The"));
    assert_eq!(tok.token_to_id("Ġcapital"), Some(3575));
    assert_eq!(tok.id_to_token(49152), None);
    assert_eq!(tok.token_to_id("definitely not a token"), None);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
}

#[test]
fn rejects_bad_parts() {
    let check = |parts: BpeParts, needle: &str| {
        let err = Tokenizer::from_parts(parts, "bad.gguf")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.gguf") && err.contains(needle), "{err}");
    };
    let mut p = smollm2_parts();
    p.model = "llama".into();
    check(p, "`llama`");
    let mut p = smollm2_parts();
    p.pre = Some("llama3".into());
    check(p, "`llama3`");
    let mut p = smollm2_parts();
    p.token_types.pop();
    check(p, keys::TOKEN_TYPE);
    let mut p = smollm2_parts();
    p.eos = Some(49152);
    check(p, keys::EOS_ID);
    let mut p = smollm2_parts();
    p.merges[5] = "nospace".into();
    check(p, "merge #5");
    let mut p = smollm2_parts();
    p.merges.push("Ġt notatoken".into());
    check(p, "BPE");
    let mut p = smollm2_parts();
    p.tokens.clear();
    p.token_types.clear();
    check(p, keys::TOKENS);
}

/// A syntax error inside `"decoder"` made `tokenizers` panic (`expect("Helper")`); found by
/// `gfnlm-fuzz` (its input is `crates/gfnlm-fuzz/crashes/tokenizer-c6b543714928d83d/`).
#[test]
fn a_syntax_error_in_the_decoder_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    let text = r#"{"version":"1.0","decoder":{"type":"ByteLevel",,},"model":{"type":"BPE"}}"#;
    std::fs::write(&path, text).unwrap();
    let err = Tokenizer::from_file(&path).unwrap_err();
    assert!(matches!(err, TokenizerError::Load { .. }), "{err}");
}
