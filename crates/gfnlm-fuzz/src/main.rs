//! `gfnlm-fuzz [--seconds N] [--seed S] [--target NAME]... [--cases N] [--time-limit SECS]
//! [--rss-limit-mib M] [--crashes DIR] | --replay DIR...`
//!
//! Fuzzes each target for its share of `--seconds` (or `--cases` cases each) in a child
//! process of its own, so that an abort (a failed allocation) or the watchdog ending the
//! child is caught here: the case in flight is saved and the target restarts with the next
//! seed. Exits 1 when any bad case was found. `--replay` runs saved cases once.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use gfnlm_fuzz::{Budget, Fuzzer, Limits, Outcome, TARGETS, WATCHDOG_EXIT, save_crash};

struct Args {
    seconds: f64,
    cases: Option<u64>,
    seed: u64,
    targets: Vec<String>,
    limits: Limits,
    crashes: PathBuf,
    replay: Vec<PathBuf>,
    /// Internal: run one target in this process, writing cases to this folder.
    worker: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seconds: 60.0,
        cases: None,
        seed: 0,
        targets: Vec::new(),
        limits: Limits::default(),
        crashes: gfnlm_fuzz::crashes_dir(),
        replay: Vec::new(),
        worker: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--seconds" => a.seconds = num(value()?)?,
            "--cases" => a.cases = Some(num(value()?)? as u64),
            "--seed" => a.seed = num(value()?)? as u64,
            "--target" => a.targets.extend(value()?.split(',').map(String::from)),
            "--time-limit" => a.limits.time = Duration::from_secs_f64(num(value()?)?),
            "--rss-limit-mib" => a.limits.rss_growth = (num(value()?)? as u64) << 20,
            "--crashes" => a.crashes = value()?.into(),
            "--replay" => a.replay.push(value()?.into()),
            "--worker" => a.worker = Some(value()?.into()),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if a.targets.is_empty() {
        a.targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    if let Some(bad) = a.targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
        return Err(format!("unknown target '{bad}' ({})", TARGETS.join(", ")));
    }
    Ok(a)
}

/// One line per worker, parsed back by the supervisor.
fn summary(target: &str, r: &gfnlm_fuzz::Report) -> String {
    format!(
        "target={target} cases={} accepted={} rejected={} bad={} secs={:.2} max_rss_growth_mib={}",
        r.cases,
        r.accepted,
        r.rejected,
        r.bad.len(),
        r.elapsed.as_secs_f64(),
        r.max_rss_growth >> 20
    )
}

fn worker(a: &Args, work: &Path) -> Result<ExitCode, String> {
    let target = &a.targets[0];
    let mut fuzzer = Fuzzer::new(
        gfnlm_fuzz::target(target)?,
        a.seed,
        a.limits,
        work,
        &a.crashes,
    );
    let budget = match a.cases {
        Some(n) => Budget::Cases(n),
        None => Budget::Until(Instant::now() + Duration::from_secs_f64(a.seconds)),
    };
    let report = fuzzer.run(budget, a.seed);
    println!("{}", summary(target, &report));
    Ok(if report.bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn replay(a: &Args) -> Result<ExitCode, String> {
    let mut bad = 0;
    let tmp = std::env::temp_dir().join(format!("gfnlm-fuzz-replay-{}", std::process::id()));
    for dir in &a.replay {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let target = match a.targets.as_slice() {
            [one] => one.as_str(),
            _ => name.split('-').next().unwrap_or_default(),
        };
        let mut fuzzer = Fuzzer::new(gfnlm_fuzz::target(target)?, a.seed, a.limits, &tmp, &tmp);
        let (outcome, grown) = fuzzer.run_dir(dir);
        println!(
            "{}: {target}: {outcome:?} (resident set +{} MiB)",
            dir.display(),
            grown >> 20
        );
        bad += usize::from(matches!(outcome, Outcome::Bad(_)));
    }
    let _ = std::fs::remove_dir_all(tmp);
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Totals of one target over its (re)started workers.
#[derive(Default)]
struct Totals {
    cases: u64,
    accepted: u64,
    rejected: u64,
    bad: u64,
    secs: f64,
    max_rss_mib: u64,
}

fn supervise(a: &Args) -> Result<ExitCode, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let root = std::env::temp_dir().join(format!("gfnlm-fuzz-{}", std::process::id()));
    let share = a.seconds / a.targets.len() as f64;
    let mut rows = Vec::new();
    for target in &a.targets {
        let work = root.join(target);
        let deadline = Instant::now() + Duration::from_secs_f64(share);
        let mut t = Totals::default();
        for restart in 0u64.. {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_secs_f64();
            if restart > 0 && (a.cases.is_some() || left < 1.0) {
                break;
            }
            let mut cmd = Command::new(&exe);
            cmd.args(["--worker", &work.display().to_string(), "--target", target])
                .args(["--seed", &a.seed.wrapping_add(restart).to_string()])
                .args(["--time-limit", &a.limits.time.as_secs_f64().to_string()])
                .args(["--rss-limit-mib", &(a.limits.rss_growth >> 20).to_string()])
                .arg("--crashes")
                .arg(&a.crashes)
                .stdout(Stdio::piped());
            match a.cases {
                Some(n) => cmd.args(["--cases", &n.to_string()]),
                None => cmd.args(["--seconds", &left.to_string()]),
            };
            let out = cmd
                .output()
                .map_err(|e| format!("{}: {e}", exe.display()))?;
            let line = String::from_utf8_lossy(&out.stdout);
            for field in line.split_whitespace() {
                let (k, v) = field.split_once('=').unwrap_or_default();
                let n = v.parse::<f64>().unwrap_or(0.0);
                match k {
                    "cases" => t.cases += n as u64,
                    "accepted" => t.accepted += n as u64,
                    "rejected" => t.rejected += n as u64,
                    "bad" => t.bad += n as u64,
                    "secs" => t.secs += n,
                    "max_rss_growth_mib" => t.max_rss_mib = t.max_rss_mib.max(n as u64),
                    _ => {}
                }
            }
            match out.status.code() {
                Some(0 | 1) => break,
                Some(WATCHDOG_EXIT) => t.bad += 1,
                code => {
                    let reason = format!(
                        "abort: the worker died ({}) on this case (seed {})",
                        code.map_or_else(|| "killed by a signal".into(), |c| format!("exit {c}")),
                        a.seed.wrapping_add(restart)
                    );
                    let saved = save_crash(&a.crashes, target, &work, &reason);
                    eprintln!(
                        "gfnlm-fuzz: {target}: {reason}\n  saved to {}",
                        saved.display()
                    );
                    t.bad += 1;
                }
            }
        }
        rows.push((target, t));
    }
    let _ = std::fs::remove_dir_all(&root);
    println!("target     cases  cases/s  accepted  rejected  bad  max RSS growth");
    for (target, t) in &rows {
        println!(
            "{target:<9} {:>6} {:>8.1} {:>9} {:>9} {:>4}  {} MiB",
            t.cases,
            t.cases as f64 / t.secs.max(1e-9),
            t.accepted,
            t.rejected,
            t.bad,
            t.max_rss_mib
        );
    }
    let bad: u64 = rows.iter().map(|(_, t)| t.bad).sum();
    if bad > 0 {
        eprintln!(
            "gfnlm-fuzz: {bad} bad case(s), saved under {} (replay: gfnlm-fuzz --replay DIR)",
            a.crashes.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let result = parse().and_then(|a| match (&a.worker, a.replay.is_empty()) {
        (Some(work), _) => worker(&a, work),
        (None, false) => replay(&a),
        (None, true) => supervise(&a),
    });
    result.unwrap_or_else(|e| {
        if !e.is_empty() {
            eprintln!("gfnlm-fuzz: {e}");
        }
        eprintln!(
            "usage: gfnlm-fuzz [--seconds N] [--seed S] [--target {}]... [--cases N] \
             [--time-limit SECS] [--rss-limit-mib M] [--crashes DIR] | --replay DIR...",
            TARGETS.join("|")
        );
        ExitCode::from(2)
    })
}
