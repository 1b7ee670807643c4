//! `cargo xtask <task>`: project chores that are not part of the library API.
//!
//! - `fetch-model [smollm2|minilm|all]`: download, verify and cache the default model
//!   (SmolLM2-135M-Instruct GGUF; the default), the sentence encoder all-MiniLM-L6-v2, or both.
//! - `reproduce TASK|all [--steps N] [--out DIR] [--device D] [--precision P]`: train on a task
//!   with `configs/TASK.toml`, evaluate base vs tuned with the task's evaluation, write
//!   `results/TASK/results.md` (rng adds the histogram and the KL-vs-wall-time curve).
//!   Re-running resumes an interrupted training run. `reproduce next-sentence [--samples N]
//!   [--prompts K]` adds the seven decoding baselines and the likelihood–diversity plot;
//!   `reproduce infilling [--samples N]` trains the story reward model, SFT and GFlowNet;
//!   `reproduce subjectivity [--sizes 10,20,50] [--test N]` the E-step, M-step and baselines;
//!   `reproduce rng --ranks N` the rng run data-parallel under `mpirun` (results/rng/ranks-N).
//! - `bench [criterion args]`: run the criterion benches in release mode.
//! - `bench train-step [--device D] [--precision P] [--merged] [--full-length] [--steps N]`:
//!   issue 7's training-step timing with its sample / reward / forward+backward / AdamW parts.
//! - `setup-backend wgpu|tch|mpi`: install what a backend needs (Vulkan driver / LibTorch in a
//!   venv / Open MPI and libclang for data-parallel training).
//! - `test-mpi`: set up MPI and run the data-parallel tests under `mpirun -np 2`.
//! - `bench scale-out [--steps N]`: steps/s and samples/s of `gfnlm train` on 1 and 2 ranks.
//! - `backend-env tch`: print the `export` lines to build and run with that backend.
//! - `test-backends [wgpu] [tch]`: set up and run the cross-backend tests (flex vs the others).
//! - `fuzz [--seconds N] [--seed S] [--target T]`: fuzz the file readers (`gfnlm-fuzz`), saving
//!   failing inputs under `crates/gfnlm-fuzz/crashes/`.

mod arithmetic;
mod backend;
mod fuzz;
mod infilling;
mod next_sentence;
mod plot;
mod ranks;
mod scale_out;
mod subjectivity;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

const USAGE: &str = "usage: cargo xtask <fetch-model [smollm2|minilm|all] | reproduce TASK|all [--steps N] [--with-ppo | --ranks N (rng)] [--queries N (arithmetic)] [--samples N (infilling, next-sentence, arithmetic)] [--sizes 10,20,50] [--test N] (subjectivity) [--out DIR] [--device D] [--precision P] \
     | bench [ARGS...] | bench train-step [--device D] [--precision P] [--merged] [--full-length] [--steps N] | bench scale-out [--steps N] [--batch B] | setup-backend wgpu|tch|mpi | backend-env tch | test-backends [wgpu] [tch] [cuda] | test-mpi | fuzz [--seconds N] [--seed S] [--target T]>";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fetch-model") => match args.get(1).map(String::as_str) {
            None | Some("smollm2") => fetch_model(),
            Some("minilm") => fetch_minilm(),
            Some("all") => fetch_model().and_then(|()| fetch_minilm()),
            Some(other) => {
                bail!("fetch-model: unknown model '{other}' (smollm2, minilm, all)\n{USAGE}")
            }
        },
        Some("reproduce") => match args.get(1).map(String::as_str) {
            Some("all") => {
                for task in reproducible_tasks()? {
                    reproduce(&task, &args[2..])?;
                }
                Ok(())
            }
            Some(task) => reproduce(task, &args[2..]),
            None => bail!(
                "reproduce: name a task ({}, all)\n{USAGE}",
                reproducible_tasks()?.join(", ")
            ),
        },
        Some("bench") if args.get(1).map(String::as_str) == Some("train-step") => {
            bench_train_step(&args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("scale-out") => {
            scale_out::run(&args[2..])
        }
        Some("bench") => {
            let status = Command::new(env!("CARGO"))
                .args(["bench", "--workspace"])
                .args(&args[1..])
                .status()?;
            if !status.success() {
                bail!("cargo bench failed: {status}");
            }
            Ok(())
        }
        Some("setup-backend") => {
            if args.len() < 2 {
                bail!(
                    "setup-backend: name one or more of {}\n{USAGE}",
                    backend::SETUPS.join(", ")
                );
            }
            args[1..].iter().try_for_each(|b| backend::setup(b))
        }
        Some("backend-env") => match args.get(1) {
            Some(b) => backend::print_env(b),
            None => bail!("backend-env: name a backend (tch, wgpu)\n{USAGE}"),
        },
        Some("test-backends") => backend::test(&args[1..]),
        Some("test-mpi") => backend::test_mpi(),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some(other) => bail!("unknown task '{other}'\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
}

/// The workspace's target folder (`$CARGO_TARGET_DIR`, relative to the workspace root, or
/// `target/`).
pub(crate) fn target_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
}

fn fetch_model() -> Result<()> {
    let path = gfnlm_fetch::ensure_default_model()?;
    let sha = gfnlm_fetch::sha256_file(&path)?;
    if std::env::var_os("GFNLM_MODEL").is_none() && sha != gfnlm_fetch::MODEL_SHA256 {
        bail!(
            "{}: cached model has SHA-256 {sha}, expected {}; delete it and run again",
            path.display(),
            gfnlm_fetch::MODEL_SHA256
        );
    }
    println!("{}", path.display());
    Ok(())
}

/// Fetches (if needed) and fully verifies the sentence encoder all-MiniLM-L6-v2.
fn fetch_minilm() -> Result<()> {
    let dir = gfnlm_fetch::ensure_minilm()?;
    gfnlm_fetch::verify_minilm(&dir)?;
    println!("{}", dir.display());
    Ok(())
}

/// The cargo feature that compiles in the backend of a `--device` name.
fn device_feature(device: &str) -> Result<&'static str> {
    Ok(match device.split(':').next().unwrap_or(device) {
        "flex" | "cpu" => "flex",
        "wgpu" => "wgpu",
        "tch" | "tch-cuda" => "tch",
        "cuda" => "cuda",
        other => bail!("unknown device '{other}' (flex, wgpu, tch, tch-cuda[:N], cuda[:N])"),
    })
}

/// Adds `--features` for the non-flex backends in `features` to a cargo command, with the
/// environment each needs (LibTorch's paths for `tch`, see `backend`).
fn with_backends(cmd: &mut Command, features: &[&str]) -> Result<()> {
    let extra: Vec<&str> = features.iter().copied().filter(|f| *f != "flex").collect();
    if extra.is_empty() {
        return Ok(());
    }
    cmd.args(["--features", &extra.join(",")]);
    for f in extra {
        for (k, v) in backend::env_vars(f)? {
            cmd.env(k, v);
        }
    }
    Ok(())
}

/// Runs the release `gfnlm` binary through cargo with `args`, built with the backend of
/// `device` (and its environment, see `backend`), passing `--device` on. The first call of a
/// run builds the binary and says so; cargo's own progress is shown.
fn gfnlm_on(device: &str, args: &[&str]) -> Result<()> {
    let feature = device_feature(device)?;
    static ANNOUNCED: std::sync::Once = std::sync::Once::new();
    ANNOUNCED.call_once(|| {
        println!(
            "xtask: building gfnlm (release, backend {feature}) — the first build takes ≈ 10 min on 2 cores, later ones seconds"
        )
    });
    println!("xtask: gfnlm {}", args.join(" "));
    // `GFNLM_BIN` runs a prebuilt binary (e.g. a copy made before editing the sources during a
    // long reproduce) instead of `cargo run`.
    let mut cmd = match std::env::var_os("GFNLM_BIN") {
        Some(bin) => Command::new(bin),
        None => {
            let mut c = Command::new(env!("CARGO"));
            c.args(["run", "--release", "-p", "gfnlm"]);
            with_backends(&mut c, &[feature])?;
            c.arg("--");
            c
        }
    };
    let status = cmd
        .args(args)
        .args(["--device", device])
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("gfnlm {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Runs the release `gfnlm` binary on flex.
fn gfnlm(args: &[&str]) -> Result<()> {
    gfnlm_on("flex", args)
}

/// `bench train-step [--device D] [--precision P] [--merged] [--full-length] [--steps N]`: issue
/// 7's training-step timing (gfnlm-train's `train_step` example) with its per-part breakdown.
fn bench_train_step(rest: &[String]) -> Result<()> {
    let (mut device, mut steps) = ("flex".to_string(), "11".to_string());
    let mut envs: Vec<(&str, String)> = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => device = it.next().context("--device needs a name")?.clone(),
            "--precision" => envs.push((
                "GFNLM_BENCH_PRECISION",
                it.next()
                    .context("--precision needs f32, bf16 or f16")?
                    .clone(),
            )),
            "--merged" => envs.push(("GFNLM_BENCH_MERGED", "1".into())),
            "--full-length" => envs.push(("GFNLM_BENCH_FULL_LENGTH", "1".into())),
            "--steps" => steps = it.next().context("--steps needs a number")?.clone(),
            other => bail!("bench train-step: unknown argument '{other}'"),
        }
    }
    let feature = device_feature(&device)?;
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "gfnlm-train",
        "--example",
        "train_step",
    ]);
    // wgpu and tch: the cross-backend tests' feature set, so their burn build is reused.
    let features: &[&str] = match feature {
        "flex" | "cuda" => &[feature],
        _ => &["wgpu", "tch"],
    };
    with_backends(&mut cmd, features)?;
    cmd.env("GFNLM_BENCH_DEVICE", &device);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let status = cmd.args(["--", &steps]).status().context("running cargo")?;
    if !status.success() {
        bail!("train_step failed: {status}");
    }
    Ok(())
}

/// The training time a run recorded itself (`elapsed_s` of its last metrics line), which
/// counts every resumed part.
fn last_elapsed_s(run: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).ok()?;
    let last: Value = serde_json::from_str(text.lines().last()?).ok()?;
    last.get("elapsed_s").and_then(Value::as_f64)
}

fn read_json(p: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// The tasks with a committed config (`configs/TASK.toml`), i.e. what `reproduce` can run.
fn reproducible_tasks() -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir("configs")
        .context("reading configs/ (run cargo xtask from the repository root)")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.strip_suffix(".toml").map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// `reproduce TASK`: trains with `configs/TASK.toml` (resuming an interrupted run), evaluates
/// the base model and the adapter through the task's own evaluation, and writes
/// `results/TASK/results.md`. The random-integer task adds its exact per-checkpoint KL curve
/// and plots.
fn reproduce(task: &str, rest: &[String]) -> Result<()> {
    let known = reproducible_tasks()?;
    if !known.iter().any(|t| t == task) {
        bail!(
            "reproduce: no config configs/{task}.toml (tasks with a config: {})\n{USAGE}",
            known.join(", ")
        );
    }
    if task == "rng" {
        return reproduce_rng(rest);
    }
    if task == "next-sentence" {
        return next_sentence::reproduce(rest);
    }
    if task == "arithmetic" {
        return arithmetic::reproduce(rest);
    }
    if task == "infilling" {
        return infilling::reproduce(rest);
    }
    if task == "subjectivity" {
        return subjectivity::reproduce(rest);
    }
    let r = reproduce_args(task, rest)?;
    let config = format!("configs/{task}.toml");
    let (run, train_secs) = r.train(&config)?;
    let out = r.out;
    let mut md = format!(
        "# {task}: GFlowNet fine-tuning of SmolLM2-135M-Instruct\n\nWritten by `cargo xtask reproduce {task}` (config `{config}`); this invocation spent {:.1} min training.\n\n",
        train_secs / 60.0
    );
    let adapter = run.join("adapter").to_string_lossy().to_string();
    for (label, adapter) in [("base", None), ("tuned", Some(adapter.as_str()))] {
        let json = out.join(format!("eval-{label}.json"));
        let table = out.join(format!("eval-{label}.md"));
        let mut args = vec![
            "eval".to_string(),
            "--config".into(),
            config.clone(),
            "--json".into(),
            json.to_string_lossy().into(),
            "--markdown".into(),
            table.to_string_lossy().into(),
        ];
        if let Some(a) = adapter {
            args.extend(["--adapter".into(), a.to_string()]);
        }
        gfnlm(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        md.push_str(&format!(
            "## {label}\n\n{}\n",
            std::fs::read_to_string(&table)
                .with_context(|| format!("reading {}", table.display()))?
        ));
    }
    let path = out.join("results.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `[--out DIR] [--steps N] [--device D] [--precision P]` of `reproduce`.
struct ReproduceArgs {
    out: PathBuf,
    steps: Option<String>,
    device: String,
    precision: Option<String>,
}

impl ReproduceArgs {
    /// Fetches the model and trains with `config` into `out/run`, resuming an interrupted run;
    /// returns the run folder and the seconds this invocation spent training.
    fn train(&self, config: &str) -> Result<(PathBuf, f64)> {
        fetch_model()?;
        std::fs::create_dir_all(&self.out)?;
        let run = self.out.join("run");
        let run_s = run.to_string_lossy().to_string();
        let t0 = std::time::Instant::now();
        let mut args = vec!["train", "--config", config, "--out", &run_s, "--resume"];
        if let Some(s) = &self.steps {
            args.extend(["--steps", s]);
        }
        if let Some(p) = &self.precision {
            args.extend(["--precision", p]);
        }
        gfnlm_on(&self.device, &args)?;
        Ok((run, t0.elapsed().as_secs_f64()))
    }
}

fn reproduce_args(task: &str, rest: &[String]) -> Result<ReproduceArgs> {
    let mut out = PathBuf::from(format!("results/{task}"));
    let mut steps: Option<String> = None;
    let mut device = "flex".to_string();
    let mut precision: Option<String> = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(it.next().context("--out needs a folder")?),
            "--steps" => steps = Some(it.next().context("--steps needs a number")?.clone()),
            "--device" => device = it.next().context("--device needs a name")?.clone(),
            "--precision" => {
                precision = Some(
                    it.next()
                        .context("--precision needs f32, bf16 or f16")?
                        .clone(),
                )
            }
            other => bail!("reproduce {task}: unknown argument '{other}'"),
        }
    }
    Ok(ReproduceArgs {
        out,
        steps,
        device,
        precision,
    })
}

/// The PPO baseline of the random-integer results (`reproduce rng --with-ppo` trains it, ≈ 8 min
/// more on 2 cores, and adds its rows).
const RNG_PPO_CONFIG: &str = "configs/baselines/rng-ppo.toml";

fn reproduce_rng(rest: &[String]) -> Result<()> {
    if let Some(i) = rest.iter().position(|a| a == "--ranks") {
        let n: usize = rest
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .context("--ranks needs a number of ranks (≥ 2)")?;
        if n < 2 {
            bail!("--ranks needs ≥ 2 (one rank is `cargo xtask reproduce rng`)");
        }
        let others: Vec<String> = rest[..i].iter().chain(&rest[i + 2..]).cloned().collect();
        return ranks::reproduce_rng(n, &others);
    }
    let with_ppo = rest.iter().any(|a| a == "--with-ppo");
    let rest: Vec<String> = rest
        .iter()
        .filter(|a| *a != "--with-ppo")
        .cloned()
        .collect();
    let r = reproduce_args("rng", &rest)?;
    let config = "configs/rng.toml";
    let (run, train_secs) = r.train(config)?;
    // PPO on the same task and prompt, evaluated the same exact way.
    let ppo = if with_ppo {
        let ppo_run = r.out.join("run-ppo");
        let ppo_run_s = ppo_run.to_string_lossy().to_string();
        let mut args = vec![
            "train",
            "--config",
            RNG_PPO_CONFIG,
            "--out",
            &ppo_run_s,
            "--resume",
        ];
        if let Some(p) = &r.precision {
            args.extend(["--precision", p]);
        }
        gfnlm_on(&r.device, &args)?;
        let json = r.out.join("eval-ppo.json");
        gfnlm(&[
            "eval",
            "--config",
            config,
            "--adapter",
            &ppo_run.join("adapter").to_string_lossy(),
            "--json",
            &json.to_string_lossy(),
        ])?;
        let secs = last_elapsed_s(&ppo_run).unwrap_or(f64::NAN);
        Some((read_json(&json)?, secs))
    } else {
        None
    };
    let ReproduceArgs {
        out,
        steps,
        device,
        precision,
    } = r;

    let base_json = out.join("eval-base.json");
    let tuned_json = out.join("eval-tuned.json");
    let adapter = run.join("adapter").to_string_lossy().to_string();
    gfnlm(&[
        "eval",
        "--config",
        config,
        "--json",
        &base_json.to_string_lossy(),
    ])?;
    gfnlm(&[
        "eval",
        "--config",
        config,
        "--adapter",
        &adapter,
        "--json",
        &tuned_json.to_string_lossy(),
    ])?;

    // KL over wall time: evaluate every checkpoint (exact, cheap) against its elapsed time.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl"))?;
    let elapsed: Vec<(u64, f64)> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v["elapsed_s"].as_f64()?)))
        .collect();
    let mut curve = Vec::new();
    let ckpts = run.join("checkpoints");
    let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&ckpts)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            Some((n.strip_prefix("step-")?.parse().ok()?, e.path()))
        })
        .collect();
    names.sort();
    for (step, dir) in names {
        let j = dir.join("eval.json");
        if !j.is_file() {
            gfnlm(&[
                "eval",
                "--config",
                config,
                "--adapter",
                &dir.join("adapter").to_string_lossy(),
                "--samples",
                "0",
                "--json",
                &j.to_string_lossy(),
            ])?;
        }
        let e = read_json(&j)?;
        let secs = elapsed
            .iter()
            .find(|(s, _)| *s == step)
            .map(|x| x.1)
            .unwrap_or(f64::NAN);
        curve.push((
            step,
            secs,
            e["constrained"]["kl_q_u"].as_f64().unwrap_or(f64::NAN),
            e["constrained"]["valid_mass"].as_f64().unwrap_or(f64::NAN),
        ));
    }

    let base = read_json(&base_json)?;
    let tuned = read_json(&tuned_json)?;
    plot::histogram(&out.join("histogram.png"), &base, &tuned)?;
    plot::kl_curve(&out.join("kl_vs_time.png"), &curve)?;
    write_results(
        &out.join("results.md"),
        &base,
        &tuned,
        &curve,
        train_secs,
        ppo.as_ref(),
        &flags(steps.as_deref(), &device, precision.as_deref()),
    )?;
    println!("wrote {}", out.join("results.md").display());
    Ok(())
}

fn row(label: &str, r: &Value, samples: Option<&Value>) -> String {
    let top: Vec<String> = r["top"]
        .as_array()
        .map(|a| {
            a.iter()
                .take(3)
                .map(|p| format!("{} ({:.1}%)", p[0], 100.0 * p[1].as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default();
    let sampled = samples
        .map(|e| {
            let n = e["samples"].as_f64().unwrap_or(0.0);
            let bad = e["invalid_samples"].as_f64().unwrap_or(0.0);
            format!("{:.1}%", 100.0 * (n - bad) / n.max(1.0))
        })
        .unwrap_or_else(|| "–".into());
    let mass = r["valid_mass"].as_f64().unwrap_or(f64::NAN);
    let mass = if mass < 1e-3 {
        format!("{mass:.3e}")
    } else {
        format!("{mass:.4}")
    };
    format!(
        "| {label} | {mass} | {sampled} | {:.4} | {:.4} | {:.3} | {} |\n",
        r["kl_q_u"].as_f64().unwrap_or(f64::NAN),
        r["kl_u_q"].as_f64().unwrap_or(f64::NAN),
        r["entropy"].as_f64().unwrap_or(f64::NAN),
        top.join(", ")
    )
}

/// The non-default `reproduce rng` flags, as the user would type them.
fn flags(steps: Option<&str>, device: &str, precision: Option<&str>) -> String {
    let mut f = Vec::new();
    if let Some(n) = steps {
        f.push(format!("--steps {n}"));
    }
    if device != "flex" {
        f.push(format!("--device {device}"));
    }
    if let Some(p) = precision {
        f.push(format!("--precision {p}"));
    }
    f.join(" ")
}

fn write_results(
    path: &Path,
    base: &Value,
    tuned: &Value,
    curve: &[(u64, f64, f64, f64)],
    train_secs: f64,
    ppo: Option<&(Value, f64)>,
    flags: &str,
) -> Result<()> {
    let mut s = String::new();
    s.push_str("# Random integers in [0, 100]: GFlowNet fine-tuning of SmolLM2-135M-Instruct\n\n");
    s.push_str("Written by `cargo xtask reproduce rng` (config `configs/rng.toml`");
    let flags = match (ppo.is_some(), flags.is_empty()) {
        (true, true) => "--with-ppo".to_string(),
        (true, false) => format!("{flags} --with-ppo"),
        (false, _) => flags.to_string(),
    };
    if !flags.is_empty() {
        s.push_str(&format!(", `{flags}`"));
    }
    let total = curve.last().map(|c| c.1).unwrap_or(f64::NAN);
    s.push_str(&format!(
        "). Training wall time of the run (metrics.jsonl): {:.1} min; this invocation spent {:.1} min training (0 when it only resumed a finished run).\n\n",
        total / 60.0,
        train_secs / 60.0
    ));
    s.push_str(
        "Prompt: \"The following is a random integer drawn uniformly between 0 and 100: \". ",
    );
    s.push_str("*Constrained sampler*: the policy as trained and sampled (digits and EOS only, at least one digit, EOS forced after three). ");
    s.push_str("*Unconstrained LM*: the same weights without the constraint, log p(digits, EOS | prompt) over the full vocabulary. ");
    s.push_str("Valid mass and KL are exact (teacher forcing over the 101 answers); \"sampled valid\" is from the histogram draws.\n\n");
    s.push_str("| model | valid mass (exact) | sampled valid | KL(q‖U) | KL(U‖q) | entropy (uniform 4.615) | top integers |\n|---|---|---|---|---|---|---|\n");
    s.push_str(&row("base, unconstrained LM", &base["unconstrained"], None));
    s.push_str(&row(
        "base, constrained sampler",
        &base["constrained"],
        Some(base),
    ));
    s.push_str(&row(
        "GFlowNet-tuned, constrained sampler",
        &tuned["constrained"],
        Some(tuned),
    ));
    s.push_str(&row(
        "GFlowNet-tuned, unconstrained LM",
        &tuned["unconstrained"],
        None,
    ));
    if let Some((p, secs)) = ppo {
        s.push_str(&row(
            "PPO-tuned, constrained sampler",
            &p["constrained"],
            Some(p),
        ));
        s.push_str(&row(
            "PPO-tuned, unconstrained LM",
            &p["unconstrained"],
            None,
        ));
        s.push_str(&format!(
            "\nPPO: `{RNG_PPO_CONFIG}` (the TRL recipe, reward log R of the task, per-token KL penalty to the base model; docs/training.md), {:.1} min of training.\n",
            secs / 60.0
        ));
    }
    s.push_str("\nThe paper (GPT-J 6B, GPU, Hu et al. 2024, §2): base model 50.5 % valid; PPO 95.8 % valid and skewed; GFlowNet 100 % valid and near-uniform.\n\n");
    s.push_str("## KL to uniform over wall time (exact, per checkpoint)\n\n| step | wall time (s) | KL(q‖U) | valid mass |\n|---|---|---|---|\n");
    for (step, secs, kl, mass) in curve {
        s.push_str(&format!("| {step} | {secs:.0} | {kl:.4} | {mass:.4} |\n"));
    }
    s.push_str("\nThe histogram plots the exact normalised distributions (base: unconstrained LM; tuned: the sampler).\n\n![histogram](histogram.png)\n\n![KL vs time](kl_vs_time.png)\n");
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}
