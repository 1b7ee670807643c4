//! The release CLI on bad input (issue #18): every case ends with an error that names the flag,
//! key, file or tensor, quickly and without a panic. Runs the `gfnlm` binary of this build on
//! the tiny parity fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../gfnlm-test-support/fixtures"
);

struct Run {
    ok: bool,
    stderr: String,
    secs: f64,
}

/// Runs `gfnlm args…`, killing it after 60 s.
fn gfnlm(args: &[&str]) -> Run {
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gfnlm"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr beside the wait, so a chatty child never blocks on a full pipe.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut s).unwrap();
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("gfnlm {args:?} ran past 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap();
    assert!(
        !stderr.contains("panicked"),
        "gfnlm {args:?} panicked:\n{stderr}"
    );
    Run {
        ok: status.success(),
        stderr,
        secs: t0.elapsed().as_secs_f64(),
    }
}

/// `gfnlm args…` must fail with every needle in its stderr.
fn fails_with(args: &[&str], needles: &[&str]) -> Run {
    let r = gfnlm(args);
    assert!(!r.ok, "gfnlm {args:?} succeeded:\n{}", r.stderr);
    for n in needles {
        assert!(
            r.stderr.contains(n),
            "gfnlm {args:?}: no {n:?} in:\n{}",
            r.stderr
        );
    }
    r
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gfnlm-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

/// A copy of the fixture `name` with the tiny Llama's tokenizer (HF folders need one).
fn model_copy(name: &str, tag: &str) -> PathBuf {
    let d = scratch(tag);
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
    }
    if !d.join("tokenizer.json").exists() {
        std::fs::copy(
            fixture("tiny-llama/tokenizer.json"),
            d.join("tokenizer.json"),
        )
        .unwrap();
    }
    d
}

/// Overwrites the first element of `tensor` in a safetensors file with NaN.
fn poison(path: &Path, tensor: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let e = &header[tensor];
    let start = 8 + n + e["data_offsets"][0].as_u64().unwrap() as usize;
    let nan: Vec<u8> = match e["dtype"].as_str().unwrap() {
        "F32" => f32::NAN.to_le_bytes().to_vec(),
        "F16" => 0x7e00u16.to_le_bytes().to_vec(),
        "BF16" => 0x7fc0u16.to_le_bytes().to_vec(),
        other => panic!("{tensor}: dtype {other}"),
    };
    bytes[start..start + nan.len()].copy_from_slice(&nan);
    std::fs::write(path, bytes).unwrap();
}

fn tiny_llama() -> String {
    fixture("tiny-llama").display().to_string()
}

#[test]
fn gpt2_past_its_positions_is_an_error_not_a_panic() {
    let dir = model_copy("tiny-gpt2", "gpt2-context");
    let model = dir.to_str().unwrap();
    fails_with(
        &[
            "sample",
            "--model",
            model,
            "--prompt",
            "hi",
            "-n",
            "1",
            "--max-tokens",
            "200",
            "--ignore-eos",
        ],
        &["--max-tokens", "at most 128"],
    );
    let long = "hello ".repeat(300);
    fails_with(
        &[
            "score",
            "--model",
            model,
            "--prompt",
            &long,
            "--continuation",
            " world",
        ],
        &["at most 128"],
    );
    fails_with(
        &[
            "sample",
            "--model",
            model,
            "--prompt",
            &long,
            "-n",
            "1",
            "--max-tokens",
            "1",
        ],
        &["at most 128"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn llama_prompts_and_max_tokens_past_the_context_fail_fast() {
    let model = tiny_llama();
    let long = "hello world. ".repeat(7_700); // 100k characters
    let r = fails_with(
        &["sample", "--model", &model, "--prompt", &long, "-n", "1"],
        &["at most 128", "--max-tokens"],
    );
    assert!(r.secs < 20.0, "{} s", r.secs);
    let r = fails_with(
        &[
            "sample",
            "--model",
            &model,
            "--prompt",
            "hi",
            "--max-tokens",
            "1000000000",
            "--ignore-eos",
        ],
        &["--max-tokens", "1000000000 new tokens"],
    );
    assert!(r.secs < 20.0, "{} s", r.secs);
    // Just inside the context still runs.
    let r = gfnlm(&[
        "sample",
        "--model",
        &model,
        "--prompt",
        "hi",
        "-n",
        "1",
        "--max-tokens",
        "20",
        "--ignore-eos",
    ]);
    assert!(r.ok, "{}", r.stderr);
}

#[test]
fn sample_counts_are_bounded_before_the_model_loads() {
    let model = tiny_llama();
    for (flags, needle) in [
        (
            vec!["-n", "10000000"],
            "-n/--num-samples must be in 0..=4096",
        ),
        (
            vec!["-n", "4", "--method", "beam", "--beams", "100000"],
            "--beams",
        ),
        (
            vec!["-n", "1000", "--method", "beam"],
            "--beams (default 5 × -n)",
        ),
    ] {
        let mut args = vec!["sample", "--model", model.as_str(), "--prompt", "hi"];
        args.extend(flags);
        let r = fails_with(&args, &[needle]);
        assert!(!r.stderr.contains("gfnlm: loaded"), "{}", r.stderr);
    }
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    // Adapter.
    let adapter = scratch("nan-adapter");
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixture("tiny-llama-lora").join(f), adapter.join(f)).unwrap();
    }
    let st = adapter.join("adapter_model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = header
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.ends_with("lora_B.weight"))
        .unwrap()
        .clone();
    poison(&st, &name);
    fails_with(
        &[
            "sample",
            "--model",
            &tiny_llama(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--prompt",
            "hi",
            "-n",
            "1",
            "--max-tokens",
            "1",
        ],
        &[&name, "non-finite"],
    );
    std::fs::remove_dir_all(&adapter).unwrap();

    // Base weights.
    let dir = model_copy("tiny-llama", "nan-base");
    poison(&dir.join("model.safetensors"), "model.norm.weight");
    fails_with(
        &[
            "score",
            "--model",
            dir.to_str().unwrap(),
            "--prompt",
            "hi",
            "--continuation",
            " a",
        ],
        &["model.norm.weight", "non-finite"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_configs_are_refused_before_the_model_loads_naming_file_and_key() {
    let dir = scratch("configs");
    let missing_model = dir.join("no-such-model").display().to_string();
    for (i, (text, key)) in [
        (
            "[task]\nname = \"rng\"\ninvalid_log_reward = nan\n",
            "invalid_log_reward",
        ),
        ("subtb_lambda = -1.0\n", "subtb_lambda"),
        ("batch_size = 1000000000\n", "batch_size"),
        ("grad_accum = 1000000000\n", "grad_accum"),
        ("[lora]\nr = 1000000000\n", "[lora] r"),
        ("steps = 0\n", "steps"),
    ]
    .into_iter()
    .enumerate()
    {
        let cfg = dir.join(format!("bad-{i}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let cfg = cfg.display().to_string();
        let out = dir.join(format!("out-{i}")).display().to_string();
        for cmd in ["train", "eval"] {
            let mut args = vec![
                cmd,
                "--model",
                missing_model.as_str(),
                "--config",
                cfg.as_str(),
            ];
            if cmd == "train" {
                args.extend(["--out", out.as_str()]);
            }
            let r = fails_with(&args, &[&format!("bad-{i}.toml"), key]);
            assert!(!r.stderr.contains("no-such-model"), "{}", r.stderr);
        }
    }
    let out = dir.join("out-steps").display().to_string();
    let r = fails_with(
        &[
            "train",
            "--model",
            &missing_model,
            "--steps",
            "0",
            "--out",
            &out,
        ],
        &["--steps must be ≥ 1"],
    );
    assert!(!r.stderr.contains("no-such-model"), "{}", r.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lora_settings_that_do_not_fit_the_model_are_named() {
    let dir = scratch("lora");
    let model = tiny_llama();
    for (i, (lora, needles)) in [
        (
            "r = 4\ntarget_modules = [\"c_attn\"]\n",
            vec!["target_modules", "c_attn", "q_proj", "down_proj"],
        ),
        ("r = 64\n", vec!["r = 64", "exceeds the width"]),
    ]
    .into_iter()
    .enumerate()
    {
        let cfg = dir.join(format!("lora-{i}.toml"));
        std::fs::write(&cfg, format!("steps = 1\n[lora]\n{lora}")).unwrap();
        let out = dir.join(format!("out-{i}")).display().to_string();
        fails_with(
            &[
                "train",
                "--model",
                &model,
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                &out,
            ],
            &needles,
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
