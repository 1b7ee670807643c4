//! Backends beyond flex: install what each needs, give the environment to build with it, run
//! the cross-backend tests.
//!
//! - wgpu: a Vulkan driver. On a machine without a GPU that is Mesa's lavapipe (CPU), from
//!   Debian's `mesa-vulkan-drivers`.
//! - tch: LibTorch 2.9.0 (what burn-tch 0.22.1 links). PyPI's `torch==2.9.0` wheel carries it;
//!   it goes into a venv under the gfnlm cache, and the build/run environment points at it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The LibTorch version burn-tch 0.22.1 (torch-sys 0.22) is built against.
pub const TORCH_VERSION: &str = "2.9.0";

/// Backends `setup-backend` and `test-backends` know (`cuda` is compiled only: its tests run
/// where `GFNLM_TEST_DEVICES` names a CUDA device; its build downloads LLVM, so not offline).
pub const BACKENDS: [&str; 3] = ["wgpu", "tch", "cuda"];

/// What `setup-backend` installs: the compute backends, and `mpi` (Open MPI for data-parallel
/// training; not a compute backend).
pub const SETUPS: [&str; 4] = ["wgpu", "tch", "cuda", "mpi"];

fn venv_dir() -> Result<PathBuf> {
    Ok(gfnlm_fetch::cache_dir()?
        .join("backends")
        .join(format!("torch-{TORCH_VERSION}")))
}

/// `import torch` in the venv and return its version and library folder, if that works.
fn torch_in_venv(venv: &Path) -> Option<(String, PathBuf)> {
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import torch, os; print(torch.__version__.split('+')[0]); print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    Some((lines.next()?.to_string(), PathBuf::from(lines.next()?)))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Vulkan ICD files Mesa's lavapipe installs.
fn lavapipe_present() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("lvp_icd"))
}

/// `apt-get install -y PACKAGES` (through sudo unless root), with one `apt-get update` and a
/// retry when the first attempt fails (a fresh machine's empty package lists).
fn apt_install(packages: &[&str], hint: &str) -> Result<()> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let apt = |args: &[&str]| {
        let mut c = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    let install: Vec<&str> = ["install", "-y", "-qq"]
        .into_iter()
        .chain(packages.iter().copied())
        .collect();
    if run(&mut apt(&install), "apt-get install").is_err() {
        run(&mut apt(&["update", "-qq"]), "apt-get update").context(hint.to_string())?;
        run(
            &mut apt(&install),
            &format!("apt-get install {}", packages.join(" ")),
        )
        .context(hint.to_string())?;
    }
    Ok(())
}

fn setup_wgpu() -> Result<()> {
    if lavapipe_present() {
        println!("wgpu: a Vulkan driver (Mesa lavapipe) is installed");
        return Ok(());
    }
    println!("wgpu: installing Mesa's Vulkan drivers (lavapipe runs wgpu on the CPU) with apt-get");
    let hint = "install it by hand: `sudo apt-get install -y mesa-vulkan-drivers` (Debian/Ubuntu), \
                or your distribution's Vulkan driver";
    apt_install(&["mesa-vulkan-drivers"], hint)?;
    if !lavapipe_present() {
        bail!("mesa-vulkan-drivers is installed but no lavapipe ICD file was found; {hint}");
    }
    Ok(())
}

/// Open MPI's launcher and compiler wrapper, and libclang (rsmpi's bindgen reads mpi.h with it).
fn mpi_present() -> bool {
    let ok = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let libclang = Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libclang"));
    ok("mpirun", "--version") && ok("mpicc", "--showme:version") && libclang
}

fn setup_mpi() -> Result<()> {
    if mpi_present() {
        println!("mpi: Open MPI (mpirun, mpicc) and libclang are installed");
        return Ok(());
    }
    println!("mpi: installing Open MPI and libclang (for rsmpi's bindings) with apt-get");
    let hint = "install them by hand: `sudo apt-get install -y libopenmpi-dev openmpi-bin \
                libclang-dev` (Debian/Ubuntu), or load your cluster's MPI module and libclang";
    apt_install(&["libopenmpi-dev", "openmpi-bin", "libclang-dev"], hint)?;
    if !mpi_present() {
        bail!("the MPI packages are installed but mpirun/mpicc/libclang are not found; {hint}");
    }
    println!(
        "mpi: build with `cargo build --release -p gfnlm --features mpi`, run with \
         `mpirun -np N target/release/gfnlm train …` (docs/scale-out.md)"
    );
    Ok(())
}

/// Sets up MPI and builds the release `gfnlm` with the `mpi` feature; returns the binary.
pub fn build_gfnlm_with_mpi() -> Result<PathBuf> {
    setup_mpi()?;
    println!("xtask: building gfnlm with the mpi feature (release)");
    run(
        Command::new(env!("CARGO")).args([
            "build",
            "--release",
            "-p",
            "gfnlm",
            "--features",
            "mpi",
        ]),
        "cargo build --release -p gfnlm --features mpi",
    )?;
    Ok(crate::target_dir().join("release/gfnlm"))
}

/// `mpirun -np N --oversubscribe PROGRAM`, allowed to run as root (containers, CI: mpirun
/// refuses root without the two variables).
pub fn mpirun(ranks: usize, program: &Path) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", &ranks.to_string(), "--oversubscribe"])
        .arg(program);
    allow_root(&mut c);
    c
}

/// The environment with which Open MPI's mpirun accepts running as root.
fn allow_root(c: &mut Command) {
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
}

/// Sets up MPI and runs the data-parallel tests (`mpirun -np 2` on this machine).
pub fn test_mpi() -> Result<()> {
    setup_mpi()?;
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "test",
        "--release",
        "-p",
        "gfnlm-train",
        "-p",
        "gfnlm",
        "--features",
        "gfnlm-train/mpi,gfnlm/mpi",
        "--test",
        "mpi",
        "--test",
        "mpi_train",
    ]);
    // The tests start mpirun themselves (CI runs as root).
    allow_root(&mut cmd);
    println!("running the data-parallel tests under mpirun -np 2");
    run(&mut cmd, "MPI tests")
}

fn setup_tch() -> Result<PathBuf> {
    let venv = venv_dir()?;
    if let Some((v, _)) = torch_in_venv(&venv) {
        if v == TORCH_VERSION {
            println!("tch: torch {v} is installed in {}", venv.display());
            return Ok(venv);
        }
        println!(
            "tch: {} has torch {v}, want {TORCH_VERSION}; reinstalling",
            venv.display()
        );
    }
    println!(
        "tch: installing torch=={TORCH_VERSION} from PyPI into {} (~4 GB with its nvidia-* wheels; LibTorch is inside)",
        venv.display()
    );
    std::fs::create_dir_all(venv.parent().expect("cache subfolder"))?;
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv (on Debian: apt-get install python3-venv)",
    )?;
    run(
        Command::new(venv.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("torch=={TORCH_VERSION}"),
        ]),
        &format!("pip install torch=={TORCH_VERSION}"),
    )?;
    match torch_in_venv(&venv) {
        Some((v, _)) if v == TORCH_VERSION => Ok(venv),
        other => bail!(
            "{}: torch did not import after installing ({other:?}); delete the folder and run again",
            venv.display()
        ),
    }
}

/// Installs what `backend` needs (idempotent).
pub fn setup(backend: &str) -> Result<()> {
    match backend {
        "wgpu" => setup_wgpu(),
        "tch" => {
            setup_tch()?;
            println!(
                "tch: to build and run with it, in your shell:\n  eval \"$(cargo xtask backend-env tch)\""
            );
            Ok(())
        }
        "flex" => {
            println!("flex needs nothing: it is the default backend");
            Ok(())
        }
        "mpi" => setup_mpi(),
        "cuda" => {
            println!(
                "cuda: needs an NVIDIA driver at run time only (CubeCL loads CUDA dynamically), \
                 but building it downloads LLVM (tracel-llvm-bundler), so it builds only with \
                 internet access; its tests run where GFNLM_TEST_DEVICES names cuda"
            );
            Ok(())
        }
        other => bail!(
            "unknown backend '{other}' (setup-backend knows: {})",
            SETUPS.join(", ")
        ),
    }
}

/// Environment variables that build and run code with `backend` compiled in.
pub fn env_vars(backend: &str) -> Result<Vec<(String, String)>> {
    match backend {
        "tch" => {
            let venv = venv_dir()?;
            let (version, lib) = torch_in_venv(&venv).with_context(|| {
                format!(
                    "no torch in {}: run `cargo xtask setup-backend tch` first",
                    venv.display()
                )
            })?;
            if version != TORCH_VERSION {
                bail!(
                    "{} has torch {version}, burn-tch needs {TORCH_VERSION}: run `cargo xtask setup-backend tch`",
                    venv.display()
                );
            }
            let path = format!(
                "{}:{}",
                venv.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let ld = match std::env::var("LD_LIBRARY_PATH") {
                Ok(old) if !old.is_empty() => format!("{}:{old}", lib.display()),
                _ => lib.display().to_string(),
            };
            Ok(vec![
                ("VIRTUAL_ENV".into(), venv.display().to_string()),
                ("PATH".into(), path),
                ("LIBTORCH_USE_PYTORCH".into(), "1".into()),
                ("LD_LIBRARY_PATH".into(), ld),
            ])
        }
        "wgpu" => {
            let mut v = vec![("CUBECL_AUTOTUNE_LEVEL".into(), "minimal".into())];
            // Mesa's Vulkan loader complains on every start without one (harmless, but noisy).
            if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
                let dir = std::env::temp_dir().join("gfnlm-xdg-runtime");
                std::fs::create_dir_all(&dir)?;
                v.push(("XDG_RUNTIME_DIR".into(), dir.display().to_string()));
            }
            Ok(v)
        }
        "flex" | "cuda" => Ok(vec![]),
        other => bail!(
            "unknown backend '{other}' (known: flex, {})",
            BACKENDS.join(", ")
        ),
    }
}

/// Prints `export` lines for `eval "$(cargo xtask backend-env tch)"`.
pub fn print_env(backend: &str) -> Result<()> {
    for (k, v) in env_vars(backend)? {
        println!("export {k}='{v}'");
    }
    Ok(())
}

/// Sets up `backends`, then runs the cross-backend tests with all of them compiled in
/// (default: wgpu and tch; `cuda` adds burn's CubeCL CUDA backend, which needs internet to build).
pub fn test(backends: &[String]) -> Result<()> {
    let backends: Vec<String> = if backends.is_empty() {
        vec!["wgpu".into(), "tch".into()]
    } else {
        backends.to_vec()
    };
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "test",
        "--release",
        "-p",
        "gfnlm-backend-tests",
        "--features",
        &backends.join(","),
    ]);
    for b in &backends {
        setup(b)?;
        for (k, v) in env_vars(b)? {
            cmd.env(k, v);
        }
    }
    println!(
        "running the cross-backend tests on flex, {}",
        backends.join(", ")
    );
    run(cmd.args(["--", "--nocapture"]), "cross-backend tests")
}
