//! `Tokenizer::from_file` on SmolLM2's tokenizer.json against the parity fixtures.

mod common;

use gfnlm_tokenizer::{Tokenizer, TokenizerError};

#[test]
fn tokenizer_json_matches_parity_fixtures() {
    common::check_parity(&common::from_json());
}

#[test]
fn special_tokens_encode_to_single_ids() {
    let tok = common::from_json();
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    assert_eq!(
        tok.decode(&ids).unwrap(),
        "<|im_start|>user\nHi<|im_end|>",
        "special tokens are kept when decoding"
    );
    assert_eq!(tok.encode("Hi", true).unwrap()[0], 1);
}

#[test]
fn bos_eos_guessed_without_config() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tokenizer.json");
    std::fs::copy(common::tokenizer_json(), &copy).unwrap();
    // No tokenizer_config.json: SmolLM2 has no <s>-style BOS, and <|endoftext|> is the EOS guess.
    let tok = Tokenizer::from_file(&copy).unwrap();
    assert_eq!(tok.bos_id(), None);
    assert_eq!(tok.eos_id(), Some(0));
    let err = tok.encode("Hi", true).unwrap_err();
    assert!(matches!(err, TokenizerError::NoBos { .. }));

    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": {"content": "<|im_start|>", "special": true}, "eos_token": "<|im_end|>"}"#,
    )
    .unwrap();
    let tok = Tokenizer::from_file(&copy).unwrap();
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));

    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": null, "eos_token": "<not-a-token>"}"#,
    )
    .unwrap();
    let err = Tokenizer::from_file(&copy).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer_config.json") && err.contains("<not-a-token>"),
        "{err}"
    );
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing/tokenizer.json");
    let err = Tokenizer::from_file(&missing).unwrap_err();
    assert!(matches!(err, TokenizerError::Io { .. }));
    assert!(err.to_string().contains("missing/tokenizer.json"), "{err}");

    let garbage = dir.path().join("tokenizer.json");
    std::fs::write(&garbage, "{\"not\": \"a tokenizer\"}").unwrap();
    let err = Tokenizer::from_file(&garbage).unwrap_err();
    assert!(matches!(err, TokenizerError::Load { .. }));
    assert!(
        err.to_string().contains(&*garbage.to_string_lossy()),
        "{err}"
    );
}
