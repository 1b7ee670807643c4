//! `metrics.jsonl`: one JSON record per optimizer step, each written with a single `write`, and
//! trimmed on resume to the steps the checkpoint holds, so a killed run never leaves repeated
//! steps or two records glued together.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An append-only metrics file.
pub struct MetricsLog {
    file: File,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens `path` for appending, first dropping every record past `resumed_step` (and any
    /// partial last line a kill left behind). `resumed_step` is 0 for a fresh run.
    pub fn open(path: &Path, resumed_step: usize) -> io::Result<Self> {
        truncate_after(path, resumed_step)?;
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends one record as one line, in one write.
    pub fn append(&mut self, record: &serde_json::Value) -> io::Result<()> {
        let mut line = record.to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Keeps the complete records of `path` whose `step` is ≤ `step` (written atomically).
pub fn truncate_after(path: &Path, step: usize) -> io::Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let kept: String = text
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    if kept.len() == text.len() {
        return Ok(());
    }
    let tmp = path.with_extension("jsonl.tmp");
    fs::write(&tmp, kept)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_drops_later_steps_and_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("gfnlm-metrics-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("metrics.jsonl");
        let mut log = MetricsLog::open(&p, 0).unwrap();
        for step in 1..=4 {
            log.append(&serde_json::json!({"step": step, "loss": 1.0}))
                .unwrap();
        }
        // A kill mid-write leaves half a record.
        fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"step\": 5, \"lo")
            .unwrap();
        let mut log = MetricsLog::open(&p, 2).unwrap();
        log.append(&serde_json::json!({"step": 3, "loss": 2.0}))
            .unwrap();
        let steps: Vec<u64> = fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(steps, vec![1, 2, 3]);
        let _ = fs::remove_dir_all(&dir);
    }
}
