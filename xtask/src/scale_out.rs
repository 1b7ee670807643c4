//! `cargo xtask bench scale-out [--steps N] [--batch B] [--config C]`: the data-parallel
//! scaling figure of docs/performance.md — `gfnlm train` (built with `--features mpi`) on the
//! default model for N steps, once as one process and once as two ranks under `mpirun`, every
//! process on one thread (`RAYON_NUM_THREADS=1`), each rank sampling B trajectories a step.
//! Prints steps/s, samples/s, the all-reduce's share of a step, and the projection to more
//! ranks from the measured all-reduce time (ring all-reduce: 2(N−1)/N of the buffer per rank).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

struct Run {
    ranks: usize,
    /// Median seconds of a step after the first (warm-up) step.
    step_s: f64,
    /// Median seconds of the gradient all-reduce, host copies included (0 for one process).
    allreduce_s: f64,
    /// Median seconds rank 0 waited for the slower rank before it (load imbalance).
    wait_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn read_run(out: &Path, ranks: usize) -> Result<Run> {
    let path = out.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    let field = |k: &str| -> Vec<f64> {
        lines
            .iter()
            .skip(1)
            .filter_map(|l| l.get(k).and_then(Value::as_f64))
            .collect()
    };
    Ok(Run {
        ranks,
        step_s: median(field("seconds")),
        allreduce_s: if ranks > 1 {
            median(field("allreduce_s"))
        } else {
            0.0
        },
        wait_s: if ranks > 1 {
            median(field("rank_wait_s"))
        } else {
            0.0
        },
    })
}

/// Runs the bench and prints its table.
pub fn run(rest: &[String]) -> Result<()> {
    let (mut steps, mut batch) = (12usize, 8usize);
    let mut config = PathBuf::from("configs/rng.toml");
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> Result<usize> {
            it.next()
                .with_context(|| format!("{what} needs a number"))?
                .parse()
                .with_context(|| format!("{what} needs a number"))
        };
        match a.as_str() {
            "--steps" => steps = num("--steps")?,
            "--batch" => batch = num("--batch")?,
            "--config" => {
                config = PathBuf::from(it.next().context("--config needs a file")?);
            }
            other => bail!("bench scale-out: unknown argument '{other}'"),
        }
    }
    if steps < 3 || batch == 0 {
        bail!("bench scale-out: --steps must be ≥ 3 (the first is warm-up) and --batch ≥ 1");
    }
    let bin = crate::backend::build_gfnlm_with_mpi()?;
    let model = gfnlm_fetch::ensure_default_model()?;
    let scratch = std::env::temp_dir().join(format!("gfnlm-scale-out-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let mut cfg: toml::Table = toml::from_str(
        &std::fs::read_to_string(&config)
            .with_context(|| format!("reading {}", config.display()))?,
    )
    .with_context(|| format!("parsing {}", config.display()))?;
    cfg.insert("steps".into(), (steps as i64).into());
    cfg.insert("batch_size".into(), (batch as i64).into());
    cfg.insert("grad_accum".into(), 1.into());
    cfg.insert("checkpoint_every".into(), 1_000_000.into());
    let cfg_path = scratch.join("config.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg)?)?;
    let mut runs = Vec::new();
    for ranks in [1usize, 2] {
        let out = scratch.join(format!("ranks-{ranks}"));
        let _ = std::fs::remove_dir_all(&out);
        let mut cmd = if ranks == 1 {
            Command::new(&bin)
        } else {
            crate::backend::mpirun(ranks, &bin)
        };
        cmd.arg("train")
            .arg("--model")
            .arg(&model)
            .arg("--config")
            .arg(&cfg_path)
            .arg("--out")
            .arg(&out)
            .env("RAYON_NUM_THREADS", "1");
        println!("scale-out: {ranks} rank(s) × batch {batch}, {steps} steps, 1 thread each");
        let status = cmd.status().context("starting gfnlm train")?;
        if !status.success() {
            bail!("gfnlm train on {ranks} rank(s) failed ({status})");
        }
        runs.push(read_run(&out, ranks)?);
    }
    let one = &runs[0];
    let two = &runs[1];
    println!(
        "\n| ranks | batch per rank | s / step (median) | steps/s | samples/s | all-reduce s / step | wait for the slower rank s / step | speed-up in samples/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let sps = (r.ranks * batch) as f64 / r.step_s;
        println!(
            "| {} | {batch} | {:.3} | {:.3} | {:.2} | {:.4} | {:.4} | {:.2}× |",
            r.ranks,
            r.step_s,
            1.0 / r.step_s,
            sps,
            r.allreduce_s,
            r.wait_s,
            sps / (batch as f64 / one.step_s)
        );
    }
    // Projection: compute time per step stays (one device per rank), the ring all-reduce
    // moves 2(N−1)/N of the buffer per rank: t(N) = t_compute + t_ar(2)·2(N−1)/N; the wait for
    // the slowest rank is kept at its 2-rank value (it grows slowly with N: a lower bound).
    let compute = two.step_s - two.allreduce_s;
    println!(
        "\nprojection (t_compute {compute:.3} s incl. {:.3} s waiting, all-reduce measured at 2 ranks):",
        two.wait_s
    );
    println!("| ranks | s / step | samples/s | efficiency |");
    println!("|---|---|---|---|");
    for n in [2usize, 4, 8, 16, 64] {
        let t = compute + two.allreduce_s * 2.0 * (n as f64 - 1.0) / n as f64;
        let sps = (n * batch) as f64 / t;
        println!(
            "| {n} | {t:.3} | {sps:.1} | {:.0} % |",
            100.0 * sps / (n as f64 * batch as f64 / one.step_s)
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
