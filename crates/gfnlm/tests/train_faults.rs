//! Faults during `gfnlm train` (issue #18), through the release binary on the tiny Llama of the
//! parity fixtures: kill -9 at random moments and resume, damaged checkpoints and `latest`
//! pointers, two trainers on one folder. Every run that finishes must end with the same adapter
//! bytes, the same metrics (wall-clock fields aside) and the same final state as an
//! uninterrupted run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STEPS: u64 = 10;

const CONFIG: &str = r#"seed = 7
steps = 10
batch_size = 4
lr = 0.01
warmup_steps = 1
checkpoint_every = 2
keep_checkpoints = 3
buffer_size = 8

[lora]
r = 2
alpha = 4.0
target_modules = ["q_proj", "v_proj"]

[task]
name = "rng"
"#;

/// This test binary's scratch folder (one per process, emptied first).
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let r = std::env::temp_dir().join(format!("gfnlm-train-faults-{}", std::process::id()));
        let _ = fs::remove_dir_all(&r);
        fs::create_dir_all(&r).unwrap();
        fs::write(r.join("config.toml"), CONFIG).unwrap();
        r
    })
}

fn scratch(name: &str) -> PathBuf {
    let d = root().join(name);
    let _ = fs::remove_dir_all(&d);
    d
}

fn command(out: &Path, extra: &[&str]) -> Command {
    let model = gfnlm_test_support::parity_dir().join("tiny-llama");
    let mut c = Command::new(env!("CARGO_BIN_EXE_gfnlm"));
    c.arg("train")
        .arg("--model")
        .arg(model)
        .arg("--config")
        .arg(root().join("config.toml"))
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

/// Runs `gfnlm train` to the end.
fn train(out: &Path, extra: &[&str]) -> Output {
    command(out, extra).output().expect("gfnlm runs")
}

/// A trainer in the background, killed (SIGKILL) when dropped, so a failing test leaves no
/// process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(out: &Path, extra: &[&str]) -> Running {
    Running(
        command(out, extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gfnlm starts"),
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed:\n{}", stderr(o));
}

/// An uninterrupted run, made once per test process, and how long it took.
fn reference_run() -> &'static (PathBuf, Duration) {
    static REF: OnceLock<(PathBuf, Duration)> = OnceLock::new();
    REF.get_or_init(|| {
        let out = scratch("reference");
        let t0 = Instant::now();
        assert_ok(&train(&out, &[]), "the uninterrupted run");
        (out, t0.elapsed())
    })
}

fn reference() -> &'static Path {
    &reference_run().0
}

/// metrics.jsonl without the wall-clock fields.
fn metrics(out: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("whole records only");
            let m = v.as_object_mut().unwrap();
            for timing in ["seconds", "elapsed_s", "sample_s", "reward_s", "update_s"] {
                m.remove(timing);
            }
            v
        })
        .collect()
}

/// The highest step of the complete records in metrics.jsonl (0 if none).
fn last_step(out: &Path) -> u64 {
    fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .max()
        .unwrap_or(0)
}

fn checkpoint_names(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "latest")
        .collect();
    names.sort();
    names
}

fn assert_same_as_reference(out: &Path) {
    let reference = reference();
    for f in ["adapter_model.safetensors", "adapter_config.json"] {
        let (a, b) = (
            fs::read(reference.join("adapter").join(f)).unwrap(),
            fs::read(out.join("adapter").join(f)).unwrap(),
        );
        assert!(
            a == b,
            "{}: adapter/{f} differs from the reference",
            out.display()
        );
    }
    assert_eq!(
        metrics(out),
        metrics(reference),
        "{}: metrics",
        out.display()
    );
    let state = |d: &Path| -> serde_json::Value {
        let p = d.join(format!("checkpoints/step-{STEPS}/state.json"));
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    };
    assert_eq!(
        state(out),
        state(reference),
        "{}: final state",
        out.display()
    );
    assert_eq!(
        checkpoint_names(out),
        ["step-10", "step-6", "step-8"],
        "{}: keep_checkpoints = 3, and no leftovers",
        out.display()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A copy of the finished reference run, without its final adapter (a resumed run rewrites it).
fn finished_copy(name: &str) -> PathBuf {
    let out = scratch(name);
    copy_dir(reference(), &out);
    fs::remove_dir_all(out.join("adapter")).unwrap();
    out
}

fn flip_bit(path: &Path, from_end: usize) {
    let mut b = fs::read(path).unwrap();
    let i = b.len() - 1 - from_end;
    b[i] ^= 0x10;
    fs::write(path, b).unwrap();
}

fn truncate_half(path: &Path) {
    let b = fs::read(path).unwrap();
    fs::write(path, &b[..b.len() / 2]).unwrap();
}

#[test]
fn killed_at_random_moments_resumes_to_the_same_adapter_and_metrics() {
    let whole_run = reference_run().1;
    let out = scratch("killed");
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    let mut killed_at = Vec::new();
    // Round 0 kills at a random moment after the start (loading, or the first steps); later
    // rounds wait for a random number of new steps and kill a few milliseconds after one
    // ends, which lands in sampling, the update, metrics or checkpoint writing.
    for round in 0..8 {
        let before = last_step(&out);
        if before >= STEPS - 1 {
            break;
        }
        let mut child = spawn(&out, &["--resume"]);
        let deadline = Instant::now() + Duration::from_secs(300);
        if round == 0 {
            std::thread::sleep(whole_run.mul_f64(rng.random_range(0.05..0.5)));
        } else {
            let target = (before + rng.random_range(1..=2)).min(STEPS - 1);
            while child.0.try_wait().unwrap().is_none() && last_step(&out) < target {
                assert!(Instant::now() < deadline, "no progress past step {before}");
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_micros(rng.random_range(0..6000)));
        }
        let _ = child.0.kill(); // SIGKILL on Unix
        let status = child.0.wait().unwrap();
        if !status.success() {
            killed_at.push(last_step(&out));
        }
    }
    assert!(
        killed_at.len() >= 3,
        "too few kills hit a running trainer: {killed_at:?}"
    );
    let o = train(&out, &["--resume"]);
    assert_ok(&o, "the final resume");
    assert_same_as_reference(&out);
    eprintln!("killed after steps {killed_at:?}");
    let _ = fs::remove_dir_all(&out);
}

#[cfg(unix)]
#[test]
fn the_final_adapter_has_the_usual_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    let probe = root().join("probe");
    fs::write(&probe, b"x").unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let usual = mode(&probe);
    for f in [
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "checkpoints/step-10/adapter/adapter_model.safetensors",
        "checkpoints/step-10/optimizer.bpk",
        "checkpoints/step-10/state.json",
        "checkpoints/step-10/manifest.json",
    ] {
        assert_eq!(mode(&reference().join(f)), usual, "{f}");
    }
}

#[test]
fn a_corrupted_latest_checkpoint_falls_back_to_the_previous_one() {
    let out = finished_copy("flipped");
    // One bit in the tensor data: the file still parses; only the checksum sees it.
    flip_bit(
        &out.join("checkpoints/step-10/adapter/adapter_model.safetensors"),
        3,
    );
    // What a kill while writing a checkpoint leaves: a partial temporary folder, ignored on
    // resume and removed by the next save.
    let partial = out.join("checkpoints/.tmp-step-12/adapter");
    fs::create_dir_all(&partial).unwrap();
    fs::write(partial.join("adapter_config.json"), b"{\"r\": ").unwrap();
    let o = train(&out, &["--resume"]);
    assert_ok(&o, "resume past a flipped bit");
    let err = stderr(&o);
    assert!(
        err.contains("skipping checkpoint") && err.contains("SHA-256"),
        "{err}"
    );
    assert!(err.contains("step-8 (step 8)"), "{err}");
    assert_same_as_reference(&out);
    let _ = fs::remove_dir_all(&out);
}

#[test]
fn truncated_and_damaged_checkpoints_fall_back_further() {
    let out = finished_copy("truncated");
    truncate_half(&out.join("checkpoints/step-10/optimizer.bpk"));
    flip_bit(&out.join("checkpoints/step-8/state.json"), 40);
    let o = train(&out, &["--resume"]);
    assert_ok(&o, "resume past two damaged checkpoints");
    let err = stderr(&o);
    assert!(err.contains("truncated"), "{err}");
    assert!(err.contains("step-6 (step 6)"), "{err}");
    assert_same_as_reference(&out);
    let _ = fs::remove_dir_all(&out);
}

#[test]
fn a_damaged_or_missing_latest_pointer_is_replaced_by_a_scan() {
    let out = finished_copy("pointer");
    let latest = out.join("checkpoints/latest");
    fs::write(&latest, b"\xff\x00step-99 garbage").unwrap();
    // Without --resume the run is still refused: the folder holds checkpoints.
    let o = train(&out, &[]);
    assert!(!o.status.success(), "started fresh over checkpoints");
    assert!(
        stderr(&o).contains("already holds checkpoints"),
        "{}",
        stderr(&o)
    );
    let o = train(&out, &["--resume"]);
    assert_ok(&o, "resume with a damaged pointer");
    let err = stderr(&o);
    assert!(
        err.contains("damaged") && err.contains("step-10 (step 10)"),
        "{err}"
    );
    assert_same_as_reference(&out);

    fs::remove_file(&latest).unwrap();
    fs::remove_dir_all(out.join("adapter")).unwrap();
    let o = train(&out, &["--resume"]);
    assert_ok(&o, "resume without a pointer");
    assert!(stderr(&o).contains("step-10 (step 10)"), "{}", stderr(&o));
    assert_same_as_reference(&out);
    let _ = fs::remove_dir_all(&out);
}

#[test]
fn without_a_usable_checkpoint_resume_refuses_and_restart_starts_over() {
    let out = finished_copy("unusable");
    for s in [6, 8, 10] {
        truncate_half(&out.join(format!("checkpoints/step-{s}/state.json")));
    }
    let o = train(&out, &["--resume"]);
    assert!(!o.status.success(), "resumed from nothing");
    let err = stderr(&o);
    assert!(err.contains("--restart") && err.contains("step-6"), "{err}");
    let o = train(&out, &["--restart"]);
    assert_ok(&o, "--restart");
    assert!(stderr(&o).contains("before-restart"), "{}", stderr(&o));
    let moved = fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("checkpoints.before-restart-")
        })
        .count();
    assert_eq!(moved, 1, "the old checkpoints are kept aside");
    assert_same_as_reference(&out);
    let _ = fs::remove_dir_all(&out);
}

#[test]
fn a_second_trainer_is_refused_and_a_killed_trainers_lock_is_taken_over() {
    let out = scratch("locked");
    let mut first = spawn(&out, &["--steps", "1000000"]);
    let pid = format!("pid {} on", first.0.id());
    let deadline = Instant::now() + Duration::from_secs(300);
    while !fs::read_to_string(out.join("train.lock")).is_ok_and(|t| t.contains(&pid)) {
        assert!(
            first.0.try_wait().unwrap().is_none(),
            "the first trainer ended"
        );
        assert!(Instant::now() < deadline, "no lock file");
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = train(&out, &["--resume"]);
    assert!(
        !o.status.success(),
        "a second trainer ran on the same folder"
    );
    let err = stderr(&o);
    assert!(
        err.contains(&out.display().to_string()) && err.contains(&pid),
        "{err}"
    );
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let o = train(&out, &["--resume", "--steps", "1"]);
    assert_ok(&o, "the run after a killed one");
    let err = stderr(&o);
    assert!(err.contains("taking over") && err.contains(&pid), "{err}");
    let _ = fs::remove_dir_all(&out);
}
