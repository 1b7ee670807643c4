//! An exclusive lock on a run folder, so that two trainers never write the same checkpoints
//! and metrics.
//!
//! The lock is an OS advisory lock (`flock` on Unix, `LockFileEx` on Windows) on
//! `DIR/train.lock`, held for as long as the [`RunLock`] lives and released by the OS when the
//! process ends, however it ends: a killed trainer never leaves a lock that blocks the next
//! run. The file records the holder's pid and host, for the error the second trainer gets and
//! for the note a run prints when it takes over from one that was killed.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file inside a run folder.
pub const LOCK_FILE: &str = "train.lock";

/// A held lock on a run folder; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock on `dir` (which must exist). Fails with a message naming the folder and
    /// the holder's pid and host when another process holds it. On success, returns a note when
    /// the lock file names a previous holder that ended without releasing it (a killed run).
    pub fn acquire(dir: &Path) -> Result<(Self, Option<String>), String> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file);
                return Err(format!(
                    "{} is in use by another `gfnlm train` ({}); wait for it to finish or stop \
                     it, or choose another --out",
                    dir.display(),
                    holder.as_deref().unwrap_or("holder unknown"),
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(format!("{}: cannot lock: {e}", path.display()));
            }
        }
        let note = read_holder(&mut file).map(|previous| {
            format!(
                "{}: taking over the lock of a run that ended without releasing it ({previous}, \
                 no longer running)",
                dir.display()
            )
        });
        let me = format!(
            "pid {} on {}\n",
            std::process::id(),
            hostname().unwrap_or_else(|| "unknown host".into())
        );
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(me.as_bytes())?;
            file.sync_all()
        };
        write(&mut file).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((Self { file, path }, note))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    /// Clears the holder (a clean exit leaves nothing to take over) and releases the lock. The
    /// file itself stays: deleting it while another process waits on it would let two
    /// processes hold "the" lock on different files.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// The holder recorded in the lock file, if any (`pid N on HOST`).
fn read_holder(file: &mut File) -> Option<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_a_stale_holder_is_taken_over() {
        let dir = std::env::temp_dir().join(format!("gfnlm-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (first, note) = RunLock::acquire(&dir).unwrap();
        assert!(note.is_none(), "fresh folder: {note:?}");
        // A second open file description conflicts even within one process.
        let refused = RunLock::acquire(&dir).unwrap_err();
        assert!(refused.contains(&dir.display().to_string()), "{refused}");
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(first);
        // A clean release leaves nothing to report.
        let (again, note) = RunLock::acquire(&dir).unwrap();
        assert!(note.is_none(), "after a clean release: {note:?}");
        drop(again);
        // A killed holder leaves its pid in the file but not the lock.
        fs::write(dir.join(LOCK_FILE), "pid 4194999 on elsewhere\n").unwrap();
        let (lock, note) = RunLock::acquire(&dir).unwrap();
        let note = note.expect("stale holder reported");
        assert!(note.contains("pid 4194999 on elsewhere"), "{note}");
        let recorded = fs::read_to_string(lock.path()).unwrap();
        assert!(
            recorded.starts_with(&format!("pid {} on ", std::process::id())),
            "{recorded}"
        );
        drop(lock);
        let _ = fs::remove_dir_all(&dir);
    }
}
