//! Build-script helpers for the crates that compile `kernels/*.cu` (minference-cuda,
//! minference-engine-gpu): one nvcc discovery order and one policy for missing/failed compiles.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Environment variable that turns a missing nvcc or a failed kernel compile into a build error
/// (CI sets it so that a kernel that does not compile fails the build).
pub const REQUIRE_CUBINS_ENV: &str = "MINFERENCE_REQUIRE_CUBINS";

/// Whether cubins are required for this build.
pub fn cubins_required() -> bool {
    env::var(REQUIRE_CUBINS_ENV).map(|v| v == "1").unwrap_or(false)
}

/// Finds nvcc: `$NVCC`, then `PATH`, then `/usr/local/cuda/bin`, then the pip wheel
/// `<site-packages>/nvidia/cu13/bin/nvcc` (how CI and the build machine get CUDA 13.0).
pub fn find_nvcc() -> Option<PathBuf> {
    if let Ok(p) = env::var("NVCC") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    if let Ok(path) = env::var("PATH") {
        for dir in env::split_paths(&path) {
            let c = dir.join("nvcc");
            if c.is_file() {
                return Some(c);
            }
        }
    }
    let local = PathBuf::from("/usr/local/cuda/bin/nvcc");
    if local.is_file() {
        return Some(local);
    }
    let out = Command::new("python3").args(["-c", "import nvidia; print(nvidia.__path__[0])"]).output().ok()?;
    let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let wheel = PathBuf::from(root).join("cu13/bin/nvcc");
    wheel.is_file().then_some(wheel)
}

/// A build error when cubins are required, else a cargo warning (the NVRTC fallback takes over).
pub fn warn_or_fail(require: bool, msg: &str) {
    if require {
        panic!("{REQUIRE_CUBINS_ENV}=1: {msg}");
    }
    for line in msg.lines().take(40) {
        println!("cargo:warning={line}");
    }
}
