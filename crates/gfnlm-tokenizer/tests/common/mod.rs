//! Shared helpers for the integration tests: fixture paths and loaders.
#![allow(dead_code)]

use std::path::PathBuf;

use gfnlm_tokenizer::Tokenizer;

pub use gfnlm_test_support::{datasets_dir, parity_dir, tokenizer_json};

/// Reads and parses a JSON fixture, panicking with the path on failure.
pub fn read_json(path: PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

/// `$GFNLM_MODEL`, else `$GFNLM_CACHE/models/<file>`, else `~/.cache/gfnlm/models/<file>`.
/// Panics (the test fails) when the file is absent.
pub fn model_path() -> PathBuf {
    const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let path = if let Some(p) = std::env::var_os("GFNLM_MODEL") {
        PathBuf::from(p)
    } else if let Some(cache) = std::env::var_os("GFNLM_CACHE") {
        PathBuf::from(cache).join("models").join(FILE)
    } else {
        let home = std::env::var_os("HOME").expect("HOME is not set; set GFNLM_MODEL instead");
        PathBuf::from(home).join(".cache/gfnlm/models").join(FILE)
    };
    assert!(
        path.is_file(),
        "model file {} not found: run `cargo xtask fetch-model` (or set GFNLM_MODEL)",
        path.display()
    );
    path
}

/// The tokenizer loaded from SmolLM2's tokenizer.json.
pub fn from_json() -> Tokenizer {
    Tokenizer::from_file(tokenizer_json()).expect("load parity tokenizer.json")
}

/// Ids as a `Vec<u32>` from a JSON array.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Checks one tokenizer against `smollm2.json` and the `prompts` of `expected.json`.
pub fn check_parity(tok: &Tokenizer) {
    let smol = read_json(parity_dir().join("smollm2.json"));
    let texts = smol["texts"].as_array().unwrap();
    assert_eq!(texts.len(), 6);
    for t in texts {
        let text = t["text"].as_str().unwrap();
        let expected = ids(&t["token_ids"]);
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, expected, "ids of {text:?}");
        let tokens: Vec<String> = got.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
        let want_tokens: Vec<&str> = t["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(tokens, want_tokens, "tokens of {text:?}");
        assert_eq!(tok.decode(&got).unwrap(), t["decoded"].as_str().unwrap());
        assert_eq!(tok.decode(&got).unwrap(), text, "round trip of {text:?}");
    }

    let task = &smol["integer_task"];
    let prompt_ids = tok.encode(task["prompt"].as_str().unwrap(), false).unwrap();
    assert_eq!(prompt_ids, ids(&task["prompt_ids"]));
    assert_eq!(prompt_ids.len(), 18);
    assert_eq!(prompt_ids.last(), Some(&216));
    for (digit, id) in task["digit_token_ids"].as_object().unwrap() {
        let id = id.as_u64().unwrap() as u32;
        assert_eq!(tok.encode(digit, false).unwrap(), [id], "digit {digit}");
    }
    // Each integer is one token per digit, and joint tokenization equals the concatenation.
    for k in [0u32, 7, 42, 100] {
        let joint = tok.encode(&format!("{}{k}", task["prompt"].as_str().unwrap()), false);
        let digits: Vec<u32> = k
            .to_string()
            .bytes()
            .map(|b| 32 + u32::from(b - b'0'))
            .collect();
        assert_eq!(
            joint.unwrap(),
            [prompt_ids.clone(), digits].concat(),
            "integer {k}"
        );
    }

    let expected = read_json(parity_dir().join("expected.json"));
    for p in expected["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids(&p["token_ids"]),
            "{text:?}"
        );
    }
    assert_eq!(
        tok.encode("The capital of France is", false).unwrap(),
        [504, 3575, 282, 4649, 314]
    );
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.vocab_size(), 49152);
}

/// A few hundred varied strings: openwebtext prompts, SUBJ texts and hand-written edge cases.
pub fn varied_strings() -> Vec<String> {
    let mut out: Vec<String> = [
        "",
        " ",
        "\n",
        "\t\tindented\ttabs",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>",
        "no<|endoftext|>space",
        "Ünïcödé, 中文字符, العربية, emoji 👍🏽 and ZWJ 👨‍👩‍👧",
        "Numbers: 3.14159, 1,000,000, -42, 0x1F, 1e-9",
        "it's they're we've I'm you'll he'd",
        "   leading and trailing   ",
        "CamelCaseIdentifier snake_case_name kebab-case",
        "\r\nwindows\r\nline endings\r\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let owt = datasets_dir().join("openwebtext/prompts.txt");
    let text = std::fs::read_to_string(&owt)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", owt.display()));
    out.extend(
        text.lines()
            .filter(|l| !l.is_empty())
            .take(200)
            .map(String::from),
    );

    let subj = datasets_dir().join("subj/test.jsonl");
    let text = std::fs::read_to_string(&subj)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", subj.display()));
    out.extend(text.lines().take(200).map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["text"].as_str().unwrap().to_string()
    }));
    out
}
