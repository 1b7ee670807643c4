//! `cargo xtask reproduce rng --ranks N`: the random-integer run data-parallel on N ranks
//! under `mpirun` (config `configs/distributed/rng-N-ranks.toml`: the same run as
//! `configs/rng.toml` with the batch split over the ranks), every checkpoint evaluated exactly,
//! and `results/rng/ranks-N/results.md` beside the single-process figures of
//! `results/rng/eval-tuned.json`. Re-running resumes the run and reuses finished evaluations.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

fn eval_row(path: &Path) -> Result<(f64, f64, f64)> {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let c = &v["constrained"];
    let u = &v["unconstrained"];
    let f = |x: &Value, k: &str| {
        x[k].as_f64()
            .with_context(|| format!("{}: no {k}", path.display()))
    };
    Ok((f(c, "valid_mass")?, f(c, "kl_q_u")?, f(u, "valid_mass")?))
}

/// Runs the data-parallel reproduction on `ranks` ranks; `rest` may hold `--out DIR`.
pub fn reproduce_rng(ranks: usize, rest: &[String]) -> Result<()> {
    let mut out = PathBuf::from(format!("results/rng/ranks-{ranks}"));
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(it.next().context("--out needs a folder")?),
            other => bail!("reproduce rng --ranks: unknown argument '{other}'"),
        }
    }
    let config = format!("configs/distributed/rng-{ranks}-ranks.toml");
    if !Path::new(&config).is_file() {
        bail!(
            "reproduce rng --ranks {ranks}: no {config}; copy configs/distributed/rng-2-ranks.toml \
             and set batch_size = 16 / {ranks} (the batch is per rank)"
        );
    }
    let bin = crate::backend::build_gfnlm_with_mpi()?;
    let model = gfnlm_fetch::ensure_default_model()?;
    std::fs::create_dir_all(&out)?;
    let run = out.join("run");
    // Threads per rank: the machine's cores shared out (1 each on 2 cores).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / ranks).max(1).to_string();
    println!(
        "xtask: mpirun -np {ranks} gfnlm train --config {config} --out {} --resume ({threads} thread(s) per rank)",
        run.display()
    );
    let status = crate::backend::mpirun(ranks, &bin)
        .args(["train", "--config", &config, "--resume", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&run)
        .env("RAYON_NUM_THREADS", &threads)
        .status()
        .context("starting mpirun (cargo xtask setup-backend mpi)")?;
    if !status.success() {
        bail!("mpirun -np {ranks} gfnlm train failed ({status}); re-run to resume");
    }
    // Wall time at each step, from rank 0's metrics.
    let metrics = run.join("metrics.jsonl");
    let mut elapsed = std::collections::BTreeMap::new();
    let mut seconds = Vec::new();
    for line in std::fs::read_to_string(&metrics)
        .with_context(|| format!("reading {}", metrics.display()))?
        .lines()
    {
        let v: Value = serde_json::from_str(line)?;
        if let (Some(s), Some(e)) = (v["step"].as_u64(), v["elapsed_s"].as_f64()) {
            elapsed.insert(s as usize, e);
        }
        seconds.push(v["seconds"].as_f64().unwrap_or(0.0));
    }
    let train_min = seconds.iter().sum::<f64>() / 60.0;
    // The run folder is not committed; its metrics are, beside the results.
    std::fs::copy(&metrics, out.join("metrics.jsonl"))
        .with_context(|| format!("copying {}", metrics.display()))?;
    let eval = |adapter: &Path, json: &Path| -> Result<()> {
        if json.is_file() {
            return Ok(());
        }
        let status = Command::new(&bin)
            .args(["eval", "--config", &config, "--samples", "0", "--model"])
            .arg(&model)
            .arg("--adapter")
            .arg(adapter)
            .arg("--json")
            .arg(json)
            .status()
            .context("running gfnlm eval")?;
        if !status.success() {
            bail!("gfnlm eval of {} failed ({status})", adapter.display());
        }
        Ok(())
    };
    let mut rows = Vec::new();
    let mut ckpts: Vec<(usize, PathBuf)> = std::fs::read_dir(run.join("checkpoints"))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step: usize = name.strip_prefix("step-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    ckpts.sort();
    for (step, dir) in &ckpts {
        let json = out.join(format!("eval-step-{step}.json"));
        eval(&dir.join("adapter"), &json)?;
        rows.push((*step, eval_row(&json)?));
    }
    let final_json = out.join("eval-tuned.json");
    eval(&run.join("adapter"), &final_json)?;
    let (fv, fkl, fu) = eval_row(&final_json)?;
    let mut md = format!(
        "# Random integers on {ranks} ranks (MPI): the single-process run, data-parallel\n\n\
         Written by `cargo xtask reproduce rng --ranks {ranks}` (config `{config}`: \
         configs/rng.toml with the batch of 16 split over the ranks, {threads} thread(s) per \
         rank). Training wall time (rank 0's metrics.jsonl): {train_min:.1} min.\n\n\
         | run | valid mass (exact, constrained) | KL(q‖U) | valid mass of the unconstrained LM |\n\
         |---|---|---|---|\n\
         | {ranks} ranks × {} trajectories | {fv:.4} | {fkl:.4} | {fu:.4} |\n",
        16 / ranks
    );
    let single = Path::new("results/rng/eval-tuned.json");
    if let Ok((v, kl, u)) = eval_row(single) {
        md.push_str(&format!(
            "| 1 process × 16 (results/rng/results.md) | {v:.4} | {kl:.4} | {u:.4} |\n"
        ));
    }
    md.push_str(
        "\nThe ranks sample different trajectories from the single process (their own RNG \
         streams), so the runs agree in distribution, not bit for bit; the gradient of N ranks \
         equals one process's on the same trajectories (tested: crates/gfnlm-train/tests/mpi.rs).\n\n\
         ## KL to uniform over wall time (exact, per checkpoint)\n\n\
         | step | wall time (s) | KL(q‖U) | valid mass |\n|---|---|---|---|\n",
    );
    for (step, (v, kl, _)) in rows {
        let t = elapsed.get(&step).copied().unwrap_or(f64::NAN);
        md.push_str(&format!("| {step} | {t:.0} | {kl:.4} | {v:.4} |\n"));
    }
    let path = out.join("results.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
