//! [`LoraConfig`]: which linear layers get adapters, with which rank and scaling, and its
//! PEFT `adapter_config.json` form.

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::LoraError;

/// The attention and MLP projections of a Llama-family model, as the paper adapts them.
pub const LLAMA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// LoRA hyper-parameters; the serde names are PEFT's (`r`, `lora_alpha`, `lora_dropout`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank `r` of the adapters.
    pub r: usize,
    /// Scaling numerator: the low-rank path is multiplied by `alpha / r` (`alpha / √r` with
    /// [`use_rslora`](Self::use_rslora)).
    #[serde(rename = "lora_alpha")]
    pub alpha: f64,
    /// Dropout on the adapter input during training (the paper's runs use 0).
    #[serde(rename = "lora_dropout", default)]
    pub dropout: f64,
    /// Module-name patterns, PEFT semantics: a layer is adapted when its full HF name equals a
    /// pattern or ends with `.pattern` (`"q_proj"` matches `model.layers.3.self_attn.q_proj`).
    /// The single entry `"all-linear"` selects every linear layer except the output head.
    pub target_modules: Vec<String>,
    /// Alternatively, PEFT's string form of `target_modules`: a regex that must match the
    /// whole module name. When set, [`target_modules`](Self::target_modules) is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_regex: Option<String>,
    /// rsLoRA scaling `alpha / √r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// PEFT's flag for GPT-2 `Conv1D` targets (weights stored `[in, out]`). It changes only how
    /// PEFT merges, not the adapter files; kept so configs round-trip.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// The base checkpoint the adapter was trained on (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model_name_or_path: Option<String>,
}

impl LoraConfig {
    /// A config with PEFT defaults for everything but rank, alpha and targets.
    pub fn new(r: usize, alpha: f64, target_modules: &[&str]) -> Self {
        Self {
            r,
            alpha,
            dropout: 0.0,
            target_modules: target_modules.iter().map(|s| s.to_string()).collect(),
            target_regex: None,
            use_rslora: false,
            fan_in_fan_out: false,
            base_model_name_or_path: None,
        }
    }

    /// The paper's setting for Llama-family models: r = 64, α = 16 on q,k,v,o,gate,up,down.
    pub fn paper_llama() -> Self {
        Self::new(64, 16.0, &LLAMA_TARGETS)
    }

    /// The scale of the low-rank path: `alpha / r`, or `alpha / √r` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Checks the values; the message lists every problem.
    pub fn validate(&self) -> Result<(), LoraError> {
        let mut problems = Vec::new();
        if self.r == 0 {
            problems.push("r must be > 0".to_string());
        }
        if !self.alpha.is_finite() {
            problems.push(format!("lora_alpha must be finite, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            problems.push(format!(
                "lora_dropout must be in [0, 1), got {}",
                self.dropout
            ));
        }
        match &self.target_regex {
            Some(re) => {
                if let Err(e) = Regex::new(&format!("^(?:{re})$")) {
                    problems.push(format!("target_modules regex '{re}' is invalid: {e}"));
                }
            }
            None if self.target_modules.is_empty() => {
                problems.push("target_modules is empty".to_string())
            }
            None => {}
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoraError::Config(problems.join("; ")))
        }
    }

    /// A matcher for module names (call [`validate`](Self::validate) first for a clear error).
    pub fn matcher(&self) -> Result<TargetMatcher, LoraError> {
        self.validate()?;
        Ok(match &self.target_regex {
            Some(re) => {
                TargetMatcher::Regex(Regex::new(&format!("^(?:{re})$")).expect("validated regex"))
            }
            None if self.target_modules.len() == 1 && self.target_modules[0] == "all-linear" => {
                TargetMatcher::AllLinear
            }
            None => TargetMatcher::Suffixes(self.target_modules.clone()),
        })
    }

    /// Reads PEFT's `adapter_config.json` content.
    ///
    /// Options this crate does not implement are refused by name when they are set (DoRA,
    /// per-layer rank/alpha patterns, `layers_to_transform`, `modules_to_save`, LoRA biases,
    /// non-LoRA `peft_type`, …). Unknown keys are accepted only when inert (null, false, empty).
    pub fn from_peft_json(v: &Value) -> Result<Self, LoraError> {
        let obj = v
            .as_object()
            .ok_or_else(|| LoraError::Config("adapter_config.json is not a JSON object".into()))?;
        let mut unsupported = Vec::new();
        let mut problems = Vec::new();
        for (key, value) in obj {
            match key.as_str() {
                // Read below.
                "r"
                | "lora_alpha"
                | "lora_dropout"
                | "target_modules"
                | "use_rslora"
                | "fan_in_fan_out"
                | "base_model_name_or_path" => {}
                // Metadata without effect on the adapter's math.
                "revision" | "inference_mode" | "peft_version" | "task_type" | "auto_mapping"
                | "megatron_core" | "qalora_group_size" => {}
                "peft_type" => {
                    if value != "LORA" {
                        unsupported.push(format!("peft_type = {value} (only LORA)"));
                    }
                }
                "bias" => {
                    if value != "none" {
                        unsupported.push(format!("bias = {value} (only \"none\")"));
                    }
                }
                "init_lora_weights" => {
                    // Only affects fresh initialisation; these leave the base model untouched.
                    let ok = value.is_boolean() || value == "gaussian";
                    if !ok {
                        unsupported.push(format!(
                            "init_lora_weights = {value} (only true, false, \"gaussian\")"
                        ));
                    }
                }
                _ => {
                    if !is_inert(value) {
                        unsupported.push(format!("{key} = {value}"));
                    }
                }
            }
        }
        let r = match obj.get("r").and_then(Value::as_u64) {
            Some(r) => r as usize,
            None => {
                problems.push("r is missing or not a non-negative integer".to_string());
                0
            }
        };
        let num = |key: &str, default: f64, problems: &mut Vec<String>| match obj.get(key) {
            None | Some(Value::Null) => default,
            Some(v) => v.as_f64().unwrap_or_else(|| {
                problems.push(format!("{key} must be a number, got {v}"));
                default
            }),
        };
        let alpha = num("lora_alpha", 8.0, &mut problems);
        let dropout = num("lora_dropout", 0.0, &mut problems);
        let flag = |key: &str, problems: &mut Vec<String>| match obj.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                problems.push(format!("{key} must be a boolean, got {v}"));
                false
            }
        };
        let use_rslora = flag("use_rslora", &mut problems);
        let fan_in_fan_out = flag("fan_in_fan_out", &mut problems);
        let (target_modules, target_regex) = match obj.get("target_modules") {
            Some(Value::String(s)) if s == "all-linear" => (vec![s.clone()], None),
            Some(Value::String(s)) => (Vec::new(), Some(s.clone())),
            Some(Value::Array(items)) => {
                let names: Vec<String> = items
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect();
                if names.len() != items.len() {
                    problems.push("target_modules must be a list of strings".to_string());
                }
                (names, None)
            }
            other => {
                problems.push(format!(
                    "target_modules must be a list of names or a regex string, got {} \
                     (PEFT's per-architecture defaults are not supported)",
                    other.cloned().unwrap_or(Value::Null)
                ));
                (Vec::new(), None)
            }
        };
        if !unsupported.is_empty() {
            return Err(LoraError::Unsupported(unsupported));
        }
        if !problems.is_empty() {
            return Err(LoraError::Config(problems.join("; ")));
        }
        let cfg = Self {
            r,
            alpha,
            dropout,
            target_modules,
            target_regex,
            use_rslora,
            fan_in_fan_out,
            base_model_name_or_path: obj
                .get("base_model_name_or_path")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `adapter_config.json` content PEFT 0.21 writes for this config.
    pub fn to_peft_json(&self) -> Value {
        let targets = match &self.target_regex {
            Some(re) => Value::String(re.clone()),
            None if self.target_modules.len() == 1 && self.target_modules[0] == "all-linear" => {
                Value::String("all-linear".into())
            }
            None => json!(self.target_modules),
        };
        let alpha = if self.alpha.fract() == 0.0 && self.alpha.abs() < 1e15 {
            json!(self.alpha as i64)
        } else {
            json!(self.alpha)
        };
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("alpha_pattern", json!({}));
        put("auto_mapping", Value::Null);
        put(
            "base_model_name_or_path",
            json!(self.base_model_name_or_path),
        );
        put("bias", json!("none"));
        put("exclude_modules", Value::Null);
        put("fan_in_fan_out", json!(self.fan_in_fan_out));
        put("inference_mode", json!(true));
        put("init_lora_weights", json!(true));
        put("layer_replication", Value::Null);
        put("layers_pattern", Value::Null);
        put("layers_to_transform", Value::Null);
        put("loftq_config", json!({}));
        put("lora_alpha", alpha);
        put("lora_bias", json!(false));
        put("lora_dropout", json!(self.dropout));
        put("megatron_config", Value::Null);
        put("megatron_core", json!("megatron.core"));
        put("modules_to_save", Value::Null);
        put("peft_type", json!("LORA"));
        put("r", json!(self.r));
        put("rank_pattern", json!({}));
        put("revision", Value::Null);
        put("target_modules", targets);
        put("task_type", json!("CAUSAL_LM"));
        put("use_dora", json!(false));
        put("use_rslora", json!(self.use_rslora));
        Value::Object(m)
    }
}

/// Null, false, an empty string, list or object: a PEFT option left at its "off" default.
fn is_inert(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}

/// Decides which module names a [`LoraConfig`] adapts.
#[derive(Debug, Clone)]
pub enum TargetMatcher {
    /// PEFT list form: exact name or `.suffix` match.
    Suffixes(Vec<String>),
    /// PEFT string form: full-match regex.
    Regex(Regex),
    /// Every linear layer except the output head.
    AllLinear,
}

impl TargetMatcher {
    /// Whether the linear layer `name` (full HF module path) is adapted; `is_output` marks the
    /// LM head, which `all-linear` skips.
    pub fn matches(&self, name: &str, is_output: bool) -> bool {
        match self {
            Self::Suffixes(pats) => pats.iter().any(|p| {
                name == p
                    || name
                        .strip_suffix(p.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }),
            Self::Regex(re) => re.is_match(name),
            Self::AllLinear => !is_output,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_json() -> Value {
        let path = gfnlm_test_support::parity_dir().join("tiny-llama-lora/adapter_config.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn reads_the_peft_fixture() {
        let cfg = LoraConfig::from_peft_json(&fixture_json()).unwrap();
        assert_eq!(cfg.r, 8);
        assert_eq!(cfg.alpha, 16.0);
        assert_eq!(cfg.scaling(), 2.0);
        let mut t = cfg.target_modules.clone();
        t.sort();
        assert_eq!(
            t,
            [
                "down_proj",
                "gate_proj",
                "k_proj",
                "o_proj",
                "q_proj",
                "up_proj",
                "v_proj"
            ]
        );
        assert_eq!(cfg.base_model_name_or_path.as_deref(), Some("tiny-llama"));
    }

    #[test]
    fn dora_and_friends_are_refused_by_name() {
        let mut v = fixture_json();
        v["use_dora"] = json!(true);
        v["rank_pattern"] = json!({"q_proj": 4});
        v["brand_new_option"] = json!(3);
        v["bias"] = json!("all");
        let err = LoraConfig::from_peft_json(&v).unwrap_err();
        let msg = err.to_string();
        for name in ["use_dora", "rank_pattern", "brand_new_option", "bias"] {
            assert!(msg.contains(name), "{name} not named in: {msg}");
        }
        assert!(matches!(err, LoraError::Unsupported(ref v) if v.len() == 4));
    }

    #[test]
    fn unknown_inert_keys_are_accepted() {
        let mut v = fixture_json();
        v["some_future_config"] = Value::Null;
        v["use_fancy"] = json!(false);
        assert!(LoraConfig::from_peft_json(&v).is_ok());
    }

    #[test]
    fn peft_json_round_trips() {
        let mut cfg = LoraConfig::paper_llama();
        cfg.use_rslora = true;
        cfg.base_model_name_or_path = Some("smollm2".into());
        let back = LoraConfig::from_peft_json(&cfg.to_peft_json()).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.scaling(), 16.0 / 8.0);
        let mut cfg = LoraConfig::new(4, 2.5, &[]);
        cfg.target_regex = Some(r".*\.(q|v)_proj".into());
        assert_eq!(
            LoraConfig::from_peft_json(&cfg.to_peft_json()).unwrap(),
            cfg
        );
    }

    #[test]
    fn bad_values_are_listed() {
        let mut cfg = LoraConfig::new(0, f64::NAN, &[]);
        cfg.dropout = 1.0;
        let msg = cfg.validate().unwrap_err().to_string();
        for part in [
            "r must be > 0",
            "lora_alpha",
            "lora_dropout",
            "target_modules",
        ] {
            assert!(msg.contains(part), "{part} missing from: {msg}");
        }
    }

    #[test]
    fn matching_follows_peft() {
        let m = LoraConfig::new(8, 16.0, &["q_proj", "c_proj"])
            .matcher()
            .unwrap();
        assert!(m.matches("model.layers.0.self_attn.q_proj", false));
        assert!(m.matches("q_proj", false));
        assert!(!m.matches("model.layers.0.self_attn.xq_proj", false));
        assert!(m.matches("transformer.h.0.attn.c_proj", false));
        assert!(m.matches("transformer.h.0.mlp.c_proj", false));
        let mut cfg = LoraConfig::new(8, 16.0, &[]);
        cfg.target_regex = Some(r"model\.layers\.1\..*proj".into());
        let m = cfg.matcher().unwrap();
        assert!(m.matches("model.layers.1.mlp.up_proj", false));
        assert!(!m.matches("model.layers.0.mlp.up_proj", false));
        let m = LoraConfig::new(8, 16.0, &["all-linear"]).matcher().unwrap();
        assert!(m.matches("model.layers.0.mlp.up_proj", false));
        assert!(!m.matches("lm_head", true));
    }
}
