//! The five fuzz targets, their seed inputs, and how each reads a case folder the way the
//! `gfnlm` command line would.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use gfnlm_gguf::{GgmlType, GgufFile, GgufWriter, MetadataArray, MetadataValue};
use gfnlm_models::{CausalLm, LanguageModel, generate::tokens_tensor};
use gfnlm_tokenizer::Tokenizer;
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::Value as Json;

/// A fuzz input: named files, written into one folder that the target then reads.
#[derive(Clone, Debug)]
pub struct Case {
    /// `(file name, contents)`; names starting with `fuzz-` carry harness data and are never
    /// mutated.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Something that reads untrusted files.
pub trait Target {
    /// Short name (`gguf`, `hf`, `tokenizer`, `peft`, `toml`).
    fn name(&self) -> &'static str;
    /// A fresh unmutated (or, for GGUF, metadata-edited) input to mutate further.
    fn seed(&self, rng: &mut ChaCha8Rng) -> Case;
    /// Reads the case folder with the library; `Err` is a handled (good) outcome.
    fn run(&mut self, dir: &Path) -> Result<(), String>;
    /// Rebuilds any state a panic may have left half-changed.
    fn reset(&mut self) {}
}

/// The names [`target`] accepts, in the order `gfnlm-fuzz` runs them.
pub const TARGETS: &[&str] = &["gguf", "hf", "tokenizer", "peft", "toml"];

/// Builds the target called `name`.
pub fn target(name: &str) -> Result<Box<dyn Target>, String> {
    Ok(match name {
        "gguf" => Box::new(Gguf::new()),
        "hf" => Box::new(Hf::new()?),
        "tokenizer" => Box::new(Tok::new()?),
        "peft" => Box::new(Peft::new()?),
        "toml" => Box::new(TrainToml::new()?),
        other => return Err(format!("unknown target '{other}' ({})", TARGETS.join(", "))),
    })
}

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gfnlm-test-support/fixtures"
    ))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn device() -> Device {
    gfnlm_models::parse_device("flex").expect("flex is always compiled in")
}

/// Runs three tokens through a model that loaded, as the first `score` or `sample` would.
fn forward(model: &impl LanguageModel, device: &Device) {
    if model.max_positions() >= 3 && model.vocab_size() > 0 {
        let _ = model.forward(tokens_tensor(&[vec![0; 3]], device), None);
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A tiny Llama GGUF, built like `gfnlm-models/tests/gguf_loading.rs` builds its files.
struct GgufSpec {
    align: Option<u32>,
    meta: Vec<(String, MetadataValue)>,
    tensors: Vec<(String, Vec<usize>, GgmlType, Vec<f32>)>,
}

impl GgufSpec {
    fn tiny(blocks: usize, tied: bool, tokenizer: bool, ty: fn(&str) -> GgmlType) -> Self {
        const D: usize = 32;
        const FF: usize = 64;
        let u32 = |v: usize| MetadataValue::U32(v as u32);
        let mut meta: Vec<(String, MetadataValue)> = [
            (
                "general.architecture",
                MetadataValue::String("llama".into()),
            ),
            ("llama.embedding_length", u32(D)),
            ("llama.feed_forward_length", u32(FF)),
            ("llama.block_count", u32(blocks)),
            ("llama.attention.head_count", u32(4)),
            ("llama.attention.head_count_kv", u32(2)),
            (
                "llama.attention.layer_norm_rms_epsilon",
                MetadataValue::F32(1e-5),
            ),
            ("llama.rope.freq_base", MetadataValue::F32(10_000.0)),
            ("llama.context_length", u32(64)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut tokens = vec!["<s>".to_string(), "</s>".into(), "ab".into(), "abc".into()];
        tokens.extend(('a'..='z').chain('0'..='9').map(String::from));
        if tokenizer {
            let strings = |v: &[&str]| {
                MetadataValue::Array(
                    MetadataArray::new(
                        v.iter()
                            .map(|s| MetadataValue::String(s.to_string()))
                            .collect(),
                    )
                    .expect("one type"),
                )
            };
            let types = (0..tokens.len()).map(|i| MetadataValue::I32(if i < 2 { 3 } else { 1 }));
            let toks: Vec<&str> = tokens.iter().map(String::as_str).collect();
            meta.extend([
                (
                    "tokenizer.ggml.model".to_string(),
                    MetadataValue::String("gpt2".into()),
                ),
                ("tokenizer.ggml.tokens".into(), strings(&toks)),
                ("tokenizer.ggml.merges".into(), strings(&["a b", "ab c"])),
                (
                    "tokenizer.ggml.token_type".into(),
                    MetadataValue::Array(MetadataArray::new(types.collect()).expect("one type")),
                ),
                ("tokenizer.ggml.bos_token_id".into(), u32(0)),
                ("tokenizer.ggml.eos_token_id".into(), u32(1)),
            ]);
        }
        let v = tokens.len();
        let mut shapes = vec![("token_embd.weight".to_string(), vec![v, D])];
        for b in 0..blocks {
            for (n, s) in [
                ("attn_norm", vec![D]),
                ("attn_q", vec![D, D]),
                ("attn_k", vec![16, D]),
                ("attn_v", vec![16, D]),
                ("attn_output", vec![D, D]),
                ("ffn_norm", vec![D]),
                ("ffn_gate", vec![FF, D]),
                ("ffn_up", vec![FF, D]),
                ("ffn_down", vec![D, FF]),
            ] {
                shapes.push((format!("blk.{b}.{n}.weight"), s));
            }
        }
        shapes.push(("output_norm.weight".into(), vec![D]));
        if !tied {
            shapes.push(("output.weight".into(), vec![v, D]));
        }
        let mut state = 1u32;
        let tensors = shapes
            .into_iter()
            .map(|(name, shape)| {
                let n = shape.iter().product();
                let values = (0..n)
                    .map(|_| {
                        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (state >> 8) as f32 / (1u32 << 24) as f32 * 0.2 - 0.1
                    })
                    .collect();
                let t = if shape.len() == 1 {
                    GgmlType::F32
                } else {
                    ty(&name)
                };
                (name, shape, t, values)
            })
            .collect();
        let align = (blocks > 1).then_some(64);
        Self {
            align,
            meta,
            tensors,
        }
    }

    fn bytes(&self) -> Result<Vec<u8>, gfnlm_gguf::GgufError> {
        let mut w = GgufWriter::new();
        if let Some(a) = self.align {
            w = w.with_alignment(a)?;
        }
        for (k, v) in &self.meta {
            w.add_metadata(k, v.clone())?;
        }
        for (name, shape, ty, values) in &self.tensors {
            w.add_f32(name, shape, values, *ty)?;
        }
        Ok(w.to_bytes())
    }
}

/// A metadata value no sane GGUF holds: boundary integers of every width, non-finite floats,
/// the wrong type, huge or empty strings and arrays.
fn absurd_metadata(rng: &mut ChaCha8Rng) -> MetadataValue {
    use MetadataValue as M;
    let b = *crate::mutate::BOUNDARY.choose(rng).expect("non-empty");
    match rng.random_range(0..9) {
        0 => M::U32(b as u32),
        1 => M::U64(b),
        2 => M::I32(-(b as i32).wrapping_abs().max(1)),
        3 => M::I64(b as i64),
        4 => M::F32(
            *[f32::NAN, f32::INFINITY, -1.0, 0.0, 1e38, 1e-38]
                .choose(rng)
                .expect("x"),
        ),
        5 => M::F64(
            *[f64::NAN, f64::NEG_INFINITY, 1e300, 0.0]
                .choose(rng)
                .expect("x"),
        ),
        6 => M::String("x".repeat(*[0, 1, 100_000].choose(rng).expect("x"))),
        7 => M::Bool(rng.random()),
        _ => {
            let n = *[1usize, 2, 100_000].choose(rng).expect("x");
            let elem = [M::String(String::new()), M::U32(u32::MAX), M::F32(f32::NAN)]
                .choose(rng)
                .expect("x")
                .clone();
            M::Array(MetadataArray::new(vec![elem; n]).expect("one type"))
        }
    }
}

/// GGUF reading: `GgufFile::open`, the tokenizer rebuilt from its metadata, the Llama model
/// built from it (every tensor dequantised) and one forward pass.
struct Gguf {
    specs: Vec<GgufSpec>,
    device: Device,
}

impl Gguf {
    fn new() -> Self {
        let quant = |name: &str| {
            if name.contains("ffn") {
                GgmlType::Q4_0
            } else {
                GgmlType::Q8_0
            }
        };
        let half = |name: &str| match name {
            "token_embd.weight" => GgmlType::Q4_1,
            n if n.contains("ffn") => GgmlType::BF16,
            _ => GgmlType::F16,
        };
        Self {
            specs: vec![
                GgufSpec::tiny(1, true, true, |_| GgmlType::F32),
                GgufSpec::tiny(2, false, true, quant),
                GgufSpec::tiny(1, true, false, half),
            ],
            device: device(),
        }
    }
}

impl Target for Gguf {
    fn name(&self) -> &'static str {
        "gguf"
    }

    fn seed(&self, rng: &mut ChaCha8Rng) -> Case {
        let spec = self.specs.choose(rng).expect("non-empty");
        let mut meta = spec.meta.clone();
        // Structured edits on the metadata, written back with the real writer.
        for _ in 0..rng.random_range(0..3) {
            let i = rng.random_range(0..meta.len());
            match rng.random_range(0..4) {
                0 => {
                    meta.remove(i);
                }
                _ => meta[i].1 = absurd_metadata(rng),
            }
        }
        let edited = GgufSpec {
            align: spec.align,
            meta,
            tensors: spec.tensors.clone(),
        };
        let bytes = edited
            .bytes()
            .or_else(|_| spec.bytes())
            .expect("the seeds are valid");
        Case {
            files: vec![("model.gguf".into(), bytes)],
        }
    }

    fn run(&mut self, dir: &Path) -> Result<(), String> {
        let gguf = GgufFile::open(dir.join("model.gguf")).map_err(err)?;
        let tokenizer = Tokenizer::from_gguf(&gguf).map_err(err).and_then(|t| {
            let ids = t.encode("abc 12 zz", true).map_err(err)?;
            t.decode(&ids).map_err(err)
        });
        let (model, _) = gfnlm_models::load_llama_from_gguf(&gguf, &self.device).map_err(err)?;
        forward(&model, &self.device);
        tokenizer.map(drop)
    }
}

/// A Hugging Face folder: `config.json` + `model.safetensors`, sometimes sharded with a
/// `model.safetensors.index.json`; read by `hf::load_dir` plus one forward pass.
struct Hf {
    seeds: Vec<Case>,
    device: Device,
}

impl Hf {
    fn new() -> Result<Self, String> {
        let mut seeds = Vec::new();
        for model in ["tiny-llama", "tiny-gpt2", "tiny-gptj"] {
            let dir = fixtures().join(model);
            let config = read(&dir.join("config.json"))?;
            let weights = read(&dir.join("model.safetensors"))?;
            seeds.push(Case {
                files: vec![
                    ("config.json".into(), config.clone()),
                    ("model.safetensors".into(), weights.clone()),
                ],
            });
            // The same checkpoint as one shard plus its index.
            let n = u64::from_le_bytes(weights[..8].try_into().expect("8 bytes")) as usize;
            let header: Json = serde_json::from_slice(&weights[8..8 + n]).map_err(err)?;
            let shard = "model-00001-of-00001.safetensors";
            let map: serde_json::Map<String, Json> = header
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| *k != "__metadata__")
                .map(|(k, _)| (k.clone(), Json::from(shard)))
                .collect();
            let index = serde_json::json!({ "metadata": {}, "weight_map": map });
            seeds.push(Case {
                files: vec![
                    ("config.json".into(), config),
                    (
                        "model.safetensors.index.json".into(),
                        index.to_string().into_bytes(),
                    ),
                    (shard.into(), weights),
                ],
            });
        }
        Ok(Self {
            seeds,
            device: device(),
        })
    }
}

impl Target for Hf {
    fn name(&self) -> &'static str {
        "hf"
    }

    fn seed(&self, rng: &mut ChaCha8Rng) -> Case {
        self.seeds.choose(rng).expect("non-empty").clone()
    }

    fn run(&mut self, dir: &Path) -> Result<(), String> {
        let (model, _) = gfnlm_models::hf::load_dir(dir, &self.device).map_err(err)?;
        forward(&model, &self.device);
        Ok(())
    }
}

/// `tokenizer.json` (+ `tokenizer_config.json`): `Tokenizer::from_file`, an encode/decode
/// round trip, and the streaming vocabulary count `hf::tokenizer_vocab_size`.
struct Tok {
    seeds: Vec<Case>,
}

impl Tok {
    fn new() -> Result<Self, String> {
        let dir = fixtures().join("tiny-llama");
        let full = read(&dir.join("tokenizer.json"))?;
        let config = read(&dir.join("tokenizer_config.json"))?;
        let small = small_tokenizer(&full, 512)?;
        let with_config = |t: &[u8]| Case {
            files: vec![
                ("tokenizer.json".into(), t.to_vec()),
                ("tokenizer_config.json".into(), config.clone()),
            ],
        };
        let alone = |t: &[u8]| Case {
            files: vec![("tokenizer.json".into(), t.to_vec())],
        };
        // Mostly the small tokenizer (fast to parse); one case in eleven the real one.
        let mut seeds: Vec<Case> = (0..5)
            .flat_map(|_| [with_config(&small), alone(&small)])
            .collect();
        seeds.push(with_config(&full));
        Ok(Self { seeds })
    }
}

/// SmolLM2's tokenizer cut to its first `n` ids (and the merges among them): the same
/// structure, a hundredth of the size.
fn small_tokenizer(full: &[u8], n: u64) -> Result<Vec<u8>, String> {
    let mut t: Json = serde_json::from_slice(full).map_err(err)?;
    let vocab = t["model"]["vocab"]
        .as_object_mut()
        .ok_or("no model.vocab")?;
    vocab.retain(|_, id| id.as_u64().is_some_and(|id| id < n));
    let kept: std::collections::HashSet<String> = vocab.keys().cloned().collect();
    let merges = t["model"]["merges"]
        .as_array_mut()
        .ok_or("no model.merges")?;
    merges.retain(|m| {
        let (a, b) = (m[0].as_str().unwrap_or(""), m[1].as_str().unwrap_or(""));
        kept.contains(a) && kept.contains(b) && kept.contains(&format!("{a}{b}"))
    });
    let added = t["added_tokens"].as_array_mut().ok_or("no added_tokens")?;
    added.retain(|a| a["id"].as_u64().is_some_and(|id| id < n));
    serde_json::to_vec(&t).map_err(err)
}

impl Target for Tok {
    fn name(&self) -> &'static str {
        "tokenizer"
    }

    fn seed(&self, rng: &mut ChaCha8Rng) -> Case {
        self.seeds.choose(rng).expect("non-empty").clone()
    }

    fn run(&mut self, dir: &Path) -> Result<(), String> {
        let path = dir.join("tokenizer.json");
        let count = gfnlm_models::hf::tokenizer_vocab_size(&path).map_err(err);
        let t = Tokenizer::from_file(&path).map_err(err)?;
        let ids = t
            .encode("Hello, wörld! 12 + 30 = 42 <|im_start|>", true)
            .map_err(err)?;
        t.decode(&ids).map_err(err)?;
        count.map(drop)
    }
}

/// A PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`) loaded with
/// `gfnlm_lora::load_peft` onto the tiny model it was made for (named in `fuzz-base-model`).
struct Peft {
    seeds: Vec<Case>,
    models: Vec<(String, CausalLm)>,
    device: Device,
}

impl Peft {
    const MODELS: [&str; 3] = ["tiny-llama", "tiny-gpt2", "tiny-gptj"];

    fn new() -> Result<Self, String> {
        let mut seeds = Vec::new();
        for model in Self::MODELS {
            let dir = fixtures().join(format!("{model}-lora"));
            seeds.push(Case {
                files: vec![
                    (
                        "adapter_config.json".into(),
                        read(&dir.join("adapter_config.json"))?,
                    ),
                    (
                        "adapter_model.safetensors".into(),
                        read(&dir.join("adapter_model.safetensors"))?,
                    ),
                    ("fuzz-base-model".into(), model.as_bytes().to_vec()),
                ],
            });
        }
        let mut peft = Self {
            seeds,
            models: Vec::new(),
            device: device(),
        };
        peft.load_models()?;
        Ok(peft)
    }

    fn load_models(&mut self) -> Result<(), String> {
        self.models = Self::MODELS
            .iter()
            .map(|m| {
                Ok((
                    m.to_string(),
                    gfnlm_models::hf::load_dir(&fixtures().join(m), &self.device)
                        .map_err(err)?
                        .0,
                ))
            })
            .collect::<Result<_, String>>()?;
        Ok(())
    }
}

impl Target for Peft {
    fn name(&self) -> &'static str {
        "peft"
    }

    fn seed(&self, rng: &mut ChaCha8Rng) -> Case {
        self.seeds.choose(rng).expect("non-empty").clone()
    }

    fn run(&mut self, dir: &Path) -> Result<(), String> {
        let base = std::fs::read_to_string(dir.join("fuzz-base-model")).unwrap_or_default();
        let (_, model) = self
            .models
            .iter_mut()
            .find(|(name, _)| *name == base.trim())
            .ok_or_else(|| format!("fuzz-base-model names no fixture model: '{base}'"))?;
        gfnlm_lora::load_peft(model, dir, &self.device).map_err(err)?;
        forward(model, &self.device);
        Ok(())
    }

    fn reset(&mut self) {
        self.load_models().expect("the fixture models load");
    }
}

/// The training config: `TrainConfig::from_file` and the task's own check of `[task]`.
struct TrainToml {
    seeds: Vec<Case>,
}

impl TrainToml {
    fn new() -> Result<Self, String> {
        let configs = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"));
        let mut seeds = Vec::new();
        for dir in [configs.clone(), configs.join("baselines")] {
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
            paths.sort();
            for p in paths
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            {
                seeds.push(Case {
                    files: vec![("config.toml".into(), read(p)?)],
                });
            }
        }
        let default = toml::to_string(&gfnlm_train::TrainConfig::default()).map_err(err)?;
        seeds.push(Case {
            files: vec![("config.toml".into(), default.into_bytes())],
        });
        Ok(Self { seeds })
    }
}

impl Target for TrainToml {
    fn name(&self) -> &'static str {
        "toml"
    }

    fn seed(&self, rng: &mut ChaCha8Rng) -> Case {
        self.seeds.choose(rng).expect("non-empty").clone()
    }

    fn run(&mut self, dir: &Path) -> Result<(), String> {
        let cfg = gfnlm_train::TrainConfig::from_file(&dir.join("config.toml"))?;
        gfnlm_tasks::check_config(&cfg.task).map_err(err)
    }
}
