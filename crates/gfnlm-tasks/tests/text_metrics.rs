//! BLEU-4 (smoothing method 1), GLEU and the tokeniser against NLTK's values in
//! tests/fixtures/bleu_gleu_nltk.json (written by scripts/make-bleu-fixtures.py).

use gfnlm_tasks::text_metrics::{bleu4, gleu, words};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    nltk_version: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    hypothesis_text: String,
    reference_texts: Vec<String>,
    hypothesis: Vec<String>,
    references: Vec<Vec<String>>,
    bleu4_method1: f64,
    gleu: f64,
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bleu_gleu_nltk.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn bleu_and_gleu_match_nltk() {
    let f = fixture();
    assert!(f.cases.len() >= 30, "{} cases", f.cases.len());
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    for c in &f.cases {
        // The tokens NLTK scored are Python's str.split() of the texts.
        assert_eq!(
            words(&c.hypothesis_text),
            c.hypothesis,
            "{}: hypothesis tokens",
            c.name
        );
        let refs: Vec<Vec<String>> = c.reference_texts.iter().map(|r| words(r)).collect();
        assert_eq!(refs, c.references, "{}: reference tokens", c.name);

        let b = bleu4(&refs, &c.hypothesis);
        let g = gleu(&refs, &c.hypothesis);
        worst = worst
            .max((b - c.bleu4_method1).abs())
            .max((g - c.gleu).abs());
        if (b - c.bleu4_method1).abs() >= 1e-9 {
            failures.push(format!("{}: bleu4 {b} vs NLTK {}", c.name, c.bleu4_method1));
        }
        if (g - c.gleu).abs() >= 1e-9 {
            failures.push(format!("{}: gleu {g} vs NLTK {}", c.name, c.gleu));
        }
    }
    eprintln!(
        "{} cases, NLTK {}: largest |ours - NLTK| = {worst:e}",
        f.cases.len(),
        f.nltk_version
    );
    assert!(
        failures.is_empty(),
        "against NLTK {}:\n{}",
        f.nltk_version,
        failures.join("\n")
    );
}
