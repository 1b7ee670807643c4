//! PEFT adapter folders: `adapter_config.json` + `adapter_model.safetensors`.
//!
//! PEFT names each factor `base_model.model.<module path>.lora_A.weight` with shape `[r, in]`
//! and `...lora_B.weight` with shape `[out, r]`; this crate holds the transposes (`A [in, r]`,
//! `B [r, out]`), so both directions transpose on the host.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use gfnlm_models::linear::LoraAdapter;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::Value;

use crate::adapt::{AdaptableModel, freeze_all, target_names};
use crate::config::LoraConfig;
use crate::error::LoraError;

/// File name of the adapter config in a PEFT folder.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// File name of the adapter weights in a PEFT folder.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Prefix PEFT puts before module paths.
pub const KEY_PREFIX: &str = "base_model.model.";

fn key(module: &str, factor: &str) -> String {
    format!("{KEY_PREFIX}{module}.{factor}.weight")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoraError + '_ {
    move |source| LoraError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Row-major `[rows, cols]` → `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = v[i * cols + j];
        }
    }
    out
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor data")
}

/// Writes the model's adapters as a PEFT folder (`dir` is created if needed).
///
/// `cfg` supplies the config file; the adapters written are those on the layers it targets,
/// and they must all be present with rank `cfg.r`. Weights are written as f32. Merged adapters
/// are written as their factors (the files never contain merged weights).
pub fn save_peft<M: AdaptableModel>(
    model: &M,
    cfg: &LoraConfig,
    dir: &Path,
) -> Result<(), LoraError> {
    let targets = target_names(model, cfg)?;
    let mut problems = Vec::new();
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    model.for_each_linear(&mut |name, lin| {
        let targeted = targets.iter().any(|t| t == name);
        match (&lin.lora, targeted) {
            (None, true) => {
                problems.push(format!("{name}: targeted by the config but has no adapter"))
            }
            (Some(_), false) => problems.push(format!(
                "{name}: has an adapter but the config's target_modules do not select it"
            )),
            (Some(l), true) => {
                let (d_in, d_out, r) = (lin.d_in(), lin.d_out(), l.rank());
                if r != cfg.r {
                    problems.push(format!("{name}: adapter rank {r} but config r = {}", cfg.r));
                    return;
                }
                let a = transpose(&host(l.lora_a.val()), d_in, r); // [r, in]
                let b = transpose(&host(l.lora_b.val()), r, d_out); // [out, r]
                let bytes =
                    |v: Vec<f32>| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
                tensors.insert(key(name, "lora_A"), (vec![r, d_in], bytes(a)));
                tensors.insert(key(name, "lora_B"), (vec![d_out, r], bytes(b)));
            }
            (None, false) => {}
        }
    });
    if !problems.is_empty() {
        return Err(LoraError::Mismatch(problems));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cfg_path = dir.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&cfg.to_peft_json()).expect("JSON value");
    std::fs::write(&cfg_path, text).map_err(io(&cfg_path))?;
    let st_path = dir.join(WEIGHTS_FILE);
    let views = tensors
        .iter()
        .map(|(k, (shape, data))| {
            TensorView::new(Dtype::F32, shape.clone(), data).map(|v| (k.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoraError::Safetensors {
            path: st_path.clone(),
            message: e.to_string(),
        })?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| LoraError::Safetensors {
        path: st_path.clone(),
        message: e.to_string(),
    })?;
    // Not `serialize_to_file`: its temporary file is created with mode 0600, which the rename
    // keeps. A plain file gets the usual mode (0644 under the default umask); written beside
    // and renamed, so a reader never sees half a file.
    let tmp = dir.join(format!(".{WEIGHTS_FILE}.tmp"));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &st_path).map_err(io(&st_path))
}

/// Reads `adapter_config.json` from a PEFT folder.
pub fn read_peft_config(dir: &Path) -> Result<LoraConfig, LoraError> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let v: Value = serde_json::from_str(&text).map_err(|source| LoraError::Json {
        path: path.clone(),
        source,
    })?;
    LoraConfig::from_peft_json(&v)
}

fn to_f32(view: &TensorView<'_>) -> Result<Vec<f32>, String> {
    let d = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(format!("dtype {other:?} (expected F32, F16 or BF16)")),
    })
}

/// Loads a PEFT adapter folder onto `model`: reads and validates the config, checks every
/// tensor against the model, then attaches the adapters (replacing any present) and freezes
/// everything else. Returns the config.
///
/// Every problem is collected before anything is changed: missing or unexpected tensors, rank
/// and shape mismatches, unsupported dtypes and NaN/Inf values all appear in one
/// [`LoraError::Mismatch`]; target names that match no layer give [`LoraError::Config`],
/// unsupported PEFT options [`LoraError::Unsupported`].
pub fn load_peft<M: AdaptableModel>(
    model: &mut M,
    dir: &Path,
    device: &Device,
) -> Result<LoraConfig, LoraError> {
    let cfg = read_peft_config(dir)?;
    let st_path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&st_path).map_err(io(&st_path))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| LoraError::Safetensors {
        path: st_path.clone(),
        message: e.to_string(),
    })?;
    let targets = target_names(model, &cfg)?;

    // Expected shapes per layer, from the model.
    let mut expected: BTreeMap<String, ([usize; 2], [usize; 2])> = BTreeMap::new();
    model.for_each_linear(&mut |name, lin| {
        if targets.iter().any(|t| t == name) {
            let (d_in, d_out) = (lin.d_in(), lin.d_out());
            expected.insert(name.to_string(), ([cfg.r, d_in], [d_out, cfg.r]));
        }
    });

    let mut problems = Vec::new();
    let mut loaded: BTreeMap<String, (Vec<f32>, Vec<f32>)> = BTreeMap::new();
    for (name, (a_shape, b_shape)) in &expected {
        let mut factor = |factor: &str, want: [usize; 2]| -> Option<Vec<f32>> {
            let k = key(name, factor);
            let view = match st.tensor(&k) {
                Ok(v) => v,
                Err(_) => {
                    problems.push(format!("missing tensor {k} (target_modules select {name})"));
                    return None;
                }
            };
            if view.shape() != want {
                let what = if factor == "lora_A" {
                    format!("[r={}, in={}]", want[0], want[1])
                } else {
                    format!("[out={}, r={}]", want[0], want[1])
                };
                problems.push(format!(
                    "{k}: shape {:?}, but the model and r = {} need {what}",
                    view.shape(),
                    cfg.r
                ));
                return None;
            }
            match to_f32(&view) {
                Ok(v) => match v.iter().position(|x| !x.is_finite()) {
                    None => Some(v),
                    Some(i) => {
                        problems.push(format!(
                            "{k}: non-finite value {} at flat index {i} (a diverged or corrupt \
                             adapter)",
                            v[i]
                        ));
                        None
                    }
                },
                Err(e) => {
                    problems.push(format!("{k}: {e}"));
                    None
                }
            }
        };
        let a = factor("lora_A", *a_shape);
        let b = factor("lora_B", *b_shape);
        if let (Some(a), Some(b)) = (a, b) {
            loaded.insert(name.clone(), (a, b));
        }
    }
    for k in st.names() {
        let module = k.strip_prefix(KEY_PREFIX).and_then(|m| {
            m.strip_suffix(".lora_A.weight")
                .or_else(|| m.strip_suffix(".lora_B.weight"))
        });
        match module {
            Some(m) if expected.contains_key(m) => {}
            Some(m) => problems.push(format!(
                "unexpected tensor {k}: the model has no linear layer '{m}' selected by target_modules"
            )),
            None => problems.push(format!(
                "unexpected tensor {k}: not a PEFT LoRA key (base_model.model.<module>.lora_A/lora_B.weight)"
            )),
        }
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(LoraError::Mismatch(problems));
    }

    let (scale, dropout, r) = (cfg.scaling(), cfg.dropout, cfg.r);
    model.for_each_linear_mut(&mut |name, lin| {
        lin.unmerge_lora();
        lin.lora = None;
        if let Some((a, b)) = loaded.remove(name) {
            let (d_in, d_out) = (lin.d_in(), lin.d_out());
            let a = Tensor::from_data(TensorData::new(transpose(&a, r, d_in), [d_in, r]), device);
            let b = Tensor::from_data(TensorData::new(transpose(&b, d_out, r), [r, d_out]), device);
            lin.lora = Some(LoraAdapter::new(a, b, scale, dropout));
        }
    });
    freeze_all(model);
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::transpose;

    #[test]
    fn transpose_is_row_major() {
        // [[1,2,3],[4,5,6]] → [[1,4],[2,5],[3,6]]
        assert_eq!(
            transpose(&[1., 2., 3., 4., 5., 6.], 2, 3),
            vec![1., 4., 2., 5., 3., 6.]
        );
    }
}
