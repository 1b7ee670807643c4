//! A structured-mutation fuzzer on stable Rust for gfnlm's file readers (issue 18).
//!
//! Each [`targets::Target`] reads a folder of files the way the command line would: a GGUF
//! model, a Hugging Face folder, a `tokenizer.json`, a PEFT adapter, a training TOML. A case is
//! a seed (real fixture files, or tiny GGUFs built with the writer) with one to three
//! [`mutate`] edits, written to a work folder and read inside [`std::panic::catch_unwind`].
//!
//! An error (`Err`) is a good outcome. A panic, a case that runs past [`Limits::time`], or one
//! whose resident memory grows by more than [`Limits::rss_growth`] is bad: its folder is saved
//! under the crash folder as `<target>-<hash>/` with a `reason.txt`. A watchdog thread catches
//! the cases that never return (a hang, memory growing without bound): it saves the case and
//! ends the process with [`WATCHDOG_EXIT`]; aborts (a failed allocation) are caught by the
//! `gfnlm-fuzz` binary, which runs each target in a child process.

pub mod mutate;
pub mod targets;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use targets::{Case, TARGETS, Target, target};

/// Exit status of a process that the watchdog ended (the case is saved).
pub const WATCHDOG_EXIT: i32 = 3;

/// What makes a case bad even when it returns.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Wall time of one case.
    pub time: Duration,
    /// Growth of the resident set during one case (bytes).
    pub rss_growth: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            time: Duration::from_secs(5),
            rss_growth: 2 << 30,
        }
    }
}

/// When a run stops.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// After this many cases.
    Cases(u64),
    /// At this instant.
    Until(Instant),
}

/// The result of one case.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The input was accepted.
    Accepted,
    /// The input was refused with an error (good).
    Rejected,
    /// A panic, or past the time or memory limit: the reason.
    Bad(String),
}

/// Totals of a run of one target.
#[derive(Debug, Default)]
pub struct Report {
    /// Cases run.
    pub cases: u64,
    /// Inputs accepted.
    pub accepted: u64,
    /// Inputs refused with an error.
    pub rejected: u64,
    /// Saved bad cases.
    pub bad: Vec<PathBuf>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Largest resident-set growth of one case (bytes).
    pub max_rss_growth: u64,
}

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);
static FUZZING: AtomicUsize = AtomicUsize::new(0);

/// Records panic messages for the report; silent while a fuzzer runs.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "<non-string payload>".into());
            *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{msg}{at}"));
            if FUZZING.load(Ordering::SeqCst) == 0 {
                previous(info);
            }
        }));
    });
}

/// Resident set size of this process in bytes (Linux; 0 elsewhere).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Peak resident set since the last [`reset_peak`] (Linux `VmHWM`), if available.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Saves the files of `case_dir` as `crashes/<target>-<hash>/`, with `reason` in
/// `reason.txt`; returns the folder.
pub fn save_crash(crashes: &Path, target: &str, case_dir: &Path, reason: &str) -> PathBuf {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(case_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            (name != "reason.txt").then(|| Some((name, std::fs::read(e.path()).ok()?)))?
        })
        .collect();
    files.sort();
    // FNV-1a over names and contents: the same input always lands in the same folder.
    let hash = files
        .iter()
        .flat_map(|(n, d)| n.bytes().chain(d.iter().copied()))
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let dir = crashes.join(format!("{target}-{hash:016x}"));
    let saved = std::fs::create_dir_all(&dir).and_then(|()| {
        files
            .iter()
            .try_for_each(|(n, d)| std::fs::write(dir.join(n), d))?;
        std::fs::write(dir.join("reason.txt"), format!("{reason}\n"))
    });
    if let Err(e) = saved {
        eprintln!("gfnlm-fuzz: could not save {}: {e}", dir.display());
    }
    dir
}

/// The case in flight, as the watchdog sees it.
struct Current {
    start: Instant,
    dir: PathBuf,
    rss: u64,
}

/// A thread that ends the process when a case runs too long or grows too large.
struct Watchdog {
    current: Arc<Mutex<Option<Current>>>,
    stop: Arc<AtomicBool>,
}

impl Watchdog {
    fn spawn(target: &'static str, crashes: PathBuf, limits: Limits) -> Self {
        let current: Arc<Mutex<Option<Current>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (current.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
                let guard = c.lock().unwrap_or_else(|e| e.into_inner());
                let Some(cur) = guard.as_ref() else { continue };
                let (elapsed, grown) = (cur.start.elapsed(), rss().saturating_sub(cur.rss));
                let reason = if elapsed > limits.time {
                    format!(
                        "hang: still running after {elapsed:.1?} (limit {:?})",
                        limits.time
                    )
                } else if grown > limits.rss_growth {
                    format!("memory: resident set grew by {} MiB", grown >> 20)
                } else {
                    continue;
                };
                let saved = save_crash(&crashes, target, &cur.dir, &reason);
                eprintln!(
                    "gfnlm-fuzz: {target}: {reason}\n  saved to {}",
                    saved.display()
                );
                std::process::exit(WATCHDOG_EXIT);
            }
        });
        Self { current, stop }
    }

    fn watch(&self, case: Option<Current>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = case;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Runs one target: generates, mutates and executes cases, and saves the bad ones.
pub struct Fuzzer {
    target: Box<dyn Target>,
    rng: ChaCha8Rng,
    limits: Limits,
    work: PathBuf,
    crashes: PathBuf,
    watchdog: Watchdog,
}

impl Fuzzer {
    /// A fuzzer for `target` (see [`target()`]), deterministic given `seed`. Cases are written
    /// to `work` (replacing the previous case); bad ones are saved under `crashes`.
    pub fn new(
        target: Box<dyn Target>,
        seed: u64,
        limits: Limits,
        work: &Path,
        crashes: &Path,
    ) -> Self {
        install_panic_hook();
        let index = TARGETS
            .iter()
            .position(|t| *t == target.name())
            .unwrap_or(0) as u64;
        Self {
            watchdog: Watchdog::spawn(target.name(), crashes.to_path_buf(), limits),
            target,
            rng: ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            limits,
            work: work.to_path_buf(),
            crashes: crashes.to_path_buf(),
        }
    }

    /// A seed with one to three mutations, now and then with a file left out.
    pub fn generate(&mut self) -> Case {
        let rng = &mut self.rng;
        let mut case = self.target.seed(rng);
        let donor = self.target.seed(rng);
        for _ in 0..rng.random_range(1..=3) {
            let mutable: Vec<usize> = (0..case.files.len())
                .filter(|&i| !case.files[i].0.starts_with("fuzz-"))
                .collect();
            let Some(&i) = mutable.choose(rng) else { break };
            let (name, data) = &mut case.files[i];
            let other = donor
                .files
                .iter()
                .find(|(n, _)| n == name)
                .map_or(&[][..], |f| &f.1);
            match Path::new(name).extension().and_then(|e| e.to_str()) {
                Some("json") => mutate::json(rng, data, other),
                Some("toml") => mutate::toml(rng, data, other),
                Some("safetensors") => mutate::safetensors(rng, data, other),
                Some("gguf") => mutate::gguf(rng, data, other),
                _ => mutate::bytes(rng, data, other),
            }
        }
        if case.files.len() > 1 && rng.random_bool(0.03) {
            case.files.remove(rng.random_range(0..case.files.len()));
        }
        case
    }

    /// Writes `case` to the work folder and runs the target on it: the outcome and the
    /// resident-set growth in bytes.
    pub fn execute(&mut self, case: &Case) -> (Outcome, u64) {
        // Files are overwritten in place, never the folder removed, so that the supervisor
        // always finds the case in flight there.
        std::fs::create_dir_all(&self.work).expect("the work folder can be created");
        for old in std::fs::read_dir(&self.work)
            .into_iter()
            .flatten()
            .flatten()
        {
            if !case
                .files
                .iter()
                .any(|(n, _)| old.file_name() == n.as_str())
            {
                let _ = std::fs::remove_file(old.path());
            }
        }
        for (name, data) in &case.files {
            std::fs::write(self.work.join(name), data).expect("the work folder is writable");
        }
        let work = self.work.clone();
        self.run_dir(&work)
    }

    /// Runs the target on a folder (a saved crash, for example): the outcome and the
    /// resident-set growth in bytes.
    pub fn run_dir(&mut self, dir: &Path) -> (Outcome, u64) {
        let peak = reset_peak();
        let rss0 = rss();
        self.watchdog.watch(Some(Current {
            start: Instant::now(),
            dir: dir.to_path_buf(),
            rss: rss0,
        }));
        let start = Instant::now();
        FUZZING.fetch_add(1, Ordering::SeqCst);
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.target.run(dir)));
        FUZZING.fetch_sub(1, Ordering::SeqCst);
        let elapsed = start.elapsed();
        self.watchdog.watch(None);
        let top = if peak { peak_rss().unwrap_or(0) } else { rss() };
        let grown = top.saturating_sub(rss0);
        let outcome = match result {
            Err(_) => {
                let msg = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
                self.target.reset();
                Outcome::Bad(format!("panic: {}", msg.unwrap_or_default()))
            }
            _ if elapsed > self.limits.time => Outcome::Bad(format!(
                "slow: {elapsed:.1?} (limit {:?})",
                self.limits.time
            )),
            _ if grown > self.limits.rss_growth => {
                Outcome::Bad(format!("memory: resident set grew by {} MiB", grown >> 20))
            }
            Ok(Ok(())) => Outcome::Accepted,
            Ok(Err(_)) => Outcome::Rejected,
        };
        (outcome, grown)
    }

    /// Runs cases until `budget` is spent; bad cases are saved and reported on stderr.
    pub fn run(&mut self, budget: Budget, seed: u64) -> Report {
        let mut report = Report::default();
        let start = Instant::now();
        loop {
            let done = match budget {
                Budget::Cases(n) => report.cases >= n,
                Budget::Until(t) => Instant::now() >= t,
            };
            if done {
                break;
            }
            let case = self.generate();
            let (outcome, grown) = self.execute(&case);
            report.cases += 1;
            report.max_rss_growth = report.max_rss_growth.max(grown);
            match outcome {
                Outcome::Accepted => report.accepted += 1,
                Outcome::Rejected => report.rejected += 1,
                Outcome::Bad(reason) => {
                    let name = self.target.name();
                    let reason = format!(
                        "{reason}\ncase {} of `gfnlm-fuzz --target {name} --seed {seed}`",
                        report.cases
                    );
                    let saved = save_crash(&self.crashes, name, &self.work, &reason);
                    eprintln!(
                        "gfnlm-fuzz: {name}: {reason}\n  saved to {}",
                        saved.display()
                    );
                    report.bad.push(saved);
                }
            }
        }
        report.elapsed = start.elapsed();
        report
    }
}

/// The committed crash folder of this crate: inputs that once failed, replayed by the tests.
pub fn crashes_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/crashes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread with the main thread's 8 MiB stack, as the command line has.
    fn on_main_sized_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(f)
            .expect("spawn")
            .join()
            .expect("no failure");
    }

    #[test]
    fn every_target_survives_a_short_run() {
        on_main_sized_stack(|| {
            let tmp = std::env::temp_dir().join(format!("gfnlm-fuzz-test-{}", std::process::id()));
            for (name, cases) in [
                ("gguf", 300),
                ("hf", 120),
                ("tokenizer", 120),
                ("peft", 300),
                ("toml", 400),
            ] {
                let (work, crashes) = (tmp.join(name), tmp.join("crashes"));
                let target = target(name).unwrap();
                let mut fuzzer = Fuzzer::new(target, 1, Limits::default(), &work, &crashes);
                let report = fuzzer.run(Budget::Cases(cases), 1);
                eprintln!("{name}: {report:?}");
                assert!(
                    report.bad.is_empty(),
                    "{name}: bad cases saved: {:?}",
                    report.bad
                );
                assert!(
                    report.accepted > 0 && report.rejected > 0,
                    "{name}: {report:?}"
                );
            }
            let _ = std::fs::remove_dir_all(tmp);
        });
    }

    /// Panics on every other case, errs on the rest.
    struct Flaky(u32);

    impl Target for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn seed(&self, _: &mut ChaCha8Rng) -> Case {
            Case {
                files: vec![("input.bin".into(), b"seed".to_vec())],
            }
        }
        fn run(&mut self, _: &Path) -> Result<(), String> {
            self.0 += 1;
            assert!(self.0.is_multiple_of(2), "flaky panics on case {}", self.0);
            Err("refused".into())
        }
    }

    #[test]
    fn a_panic_is_caught_reported_and_saved() {
        let tmp = std::env::temp_dir().join(format!("gfnlm-fuzz-flaky-{}", std::process::id()));
        let (work, crashes) = (tmp.join("work"), tmp.join("crashes"));
        let report = Fuzzer::new(Box::new(Flaky(0)), 7, Limits::default(), &work, &crashes)
            .run(Budget::Cases(4), 7);
        assert_eq!((report.cases, report.rejected, report.bad.len()), (4, 2, 2));
        let reason = std::fs::read_to_string(report.bad[0].join("reason.txt")).unwrap();
        assert!(reason.contains("panic: flaky panics on case 1"), "{reason}");
        assert!(report.bad[0].join("input.bin").is_file());
        let _ = std::fs::remove_dir_all(tmp);
    }

    #[test]
    fn the_saved_crashes_are_handled_now() {
        on_main_sized_stack(|| {
            let tmp =
                std::env::temp_dir().join(format!("gfnlm-fuzz-replay-{}", std::process::id()));
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(crashes_dir())
                .into_iter()
                .flatten()
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.is_dir())
                .collect();
            dirs.sort();
            for dir in dirs {
                let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let target = name.split('-').next().unwrap_or_default();
                let mut fuzzer = Fuzzer::new(
                    super::target(target).unwrap(),
                    0,
                    Limits::default(),
                    &tmp,
                    &tmp,
                );
                let (outcome, _) = fuzzer.run_dir(&dir);
                assert!(
                    !matches!(outcome, Outcome::Bad(_)),
                    "{}: {outcome:?}",
                    dir.display()
                );
            }
            let _ = std::fs::remove_dir_all(tmp);
        });
    }
}
