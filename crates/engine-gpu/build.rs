//! Compiles `kernels/model_ops.cu` to an sm_90a cubin with nvcc and embeds it, plus the source for
//! the NVRTC fallback when no nvcc is found (same discovery order as crates/cuda/build.rs:
//! `$NVCC`, `PATH`, `/usr/local/cuda/bin`, the pip wheel `<site-packages>/nvidia/cu13/bin/nvcc`).
//! `MINFERENCE_REQUIRE_CUBINS=1` turns a missing nvcc or a failed compile into a build error.

use minference_cuda_build::{find_nvcc, warn_or_fail};
use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = manifest.join("kernels/model_ops.cu");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=MINFERENCE_REQUIRE_CUBINS");
    let require = env::var("MINFERENCE_REQUIRE_CUBINS").map(|v| v == "1").unwrap_or(false);

    // One cubin per storage precision of the engine (bf16 default, f16 on request).
    let nvcc = find_nvcc();
    if nvcc.is_none() {
        warn_or_fail(require, "nvcc not found: the GPU engine will compile its kernels with NVRTC at run time");
    }
    let mut generated = format!("pub const SOURCE: &str = include_str!({:?});\n", source.display().to_string());
    for (name, defines) in [("BF16", &[][..]), ("F16", &["-DMODEL_OPS_F16"][..])] {
        let cubin = out_dir.join(format!("model_ops_{}.cubin", name.to_lowercase()));
        let mut built = false;
        if let Some(nvcc) = &nvcc {
            let result = Command::new(nvcc)
                .args(["-gencode=arch=compute_90a,code=sm_90a", "-cubin", "-O3", "-lineinfo", "-std=c++17"])
                .args(defines)
                .arg("-o")
                .arg(&cubin)
                .arg(&source)
                .output();
            match result {
                Ok(o) if o.status.success() => built = true,
                Ok(o) => warn_or_fail(require, &format!("nvcc failed:\n{}", String::from_utf8_lossy(&o.stderr))),
                Err(e) => warn_or_fail(require, &format!("could not run {}: {e}", nvcc.display())),
            }
        }
        generated.push_str(&format!(
            "pub const CUBIN_{name}: Option<&[u8]> = {};\n",
            if built { format!("Some(include_bytes!({:?}))", cubin.display().to_string()) } else { "None".to_string() }
        ));
    }
    fs::write(out_dir.join("model_ops.rs"), generated).expect("write model_ops.rs");
}
