//! NCCL, loaded at run time: the few entry points tensor parallelism needs (unique id,
//! communicator init, bf16 sum all-reduce, abort, destroy).
//!
//! Why not cudarc's `nccl` module: its loader looks for `libnccl.so` / `libnccl.so.<CUDA major>`,
//! while NCCL ships as `libnccl.so.2` — usually inside the `nvidia-nccl` Python wheel, off the
//! linker's path. We locate that file ourselves (see [`library_candidates`]) and bind the six C
//! functions with `libloading`.

use crate::error::{Result, TpError};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `ncclUniqueId`: 128 opaque bytes made by one rank and given to all.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct UniqueId {
    internal: [c_char; 128],
}

#[cfg(test)]
impl UniqueId {
    /// An id no communicator was made from (tests of the controller with stand-in workers).
    pub(crate) fn zeroed() -> Self {
        UniqueId { internal: [0; 128] }
    }
}

type RawComm = *mut c_void;
type NcclResult = c_int;
const NCCL_SUCCESS: NcclResult = 0;
/// `ncclFloat16`, `ncclBfloat16` and `ncclSum` in `nccl.h` (stable since NCCL 2.10).
const NCCL_FLOAT16: c_int = 6;
const NCCL_BFLOAT16: c_int = 9;
const NCCL_SUM: c_int = 0;

/// The 16-bit element types the engine sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Bf16,
    F16,
}

struct Api {
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> NcclResult,
    comm_init_rank: unsafe extern "C" fn(*mut RawComm, c_int, UniqueId, c_int) -> NcclResult,
    all_reduce:
        unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, RawComm, *mut c_void) -> NcclResult,
    comm_abort: unsafe extern "C" fn(RawComm) -> NcclResult,
    comm_destroy: unsafe extern "C" fn(RawComm) -> NcclResult,
    error_string: unsafe extern "C" fn(NcclResult) -> *const c_char,
    get_version: unsafe extern "C" fn(*mut c_int) -> NcclResult,
    _lib: libloading::Library,
}

/// Where `libnccl.so.2` may be: `$MINFERENCE_NCCL_LIB`, the linker's path, then the NCCL wheel's
/// folder in the Python installations we know of (PyTorch installs it there).
fn library_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("MINFERENCE_NCCL_LIB") {
        out.push(PathBuf::from(p));
    }
    out.push(PathBuf::from("libnccl.so.2"));
    out.push(PathBuf::from("libnccl.so"));
    let mut roots: Vec<PathBuf> = ["/usr/local/lib", "/usr/lib", "/opt/conda/lib"].iter().map(PathBuf::from).collect();
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home).join(".local/lib"));
    }
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().starts_with("python3") {
                continue;
            }
            for pkgs in ["site-packages", "dist-packages"] {
                out.push(e.path().join(pkgs).join("nvidia/nccl/lib/libnccl.so.2"));
            }
        }
    }
    // The interpreter that holds PyTorch knows where its wheel put NCCL.
    if let Ok(o) = std::process::Command::new("python3")
        .args(["-c", "import nvidia.nccl,os;print(os.path.join(list(nvidia.nccl.__path__)[0],'lib','libnccl.so.2'))"])
        .output()
    {
        if o.status.success() {
            out.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        }
    }
    out
}

fn load_api() -> std::result::Result<Api, String> {
    let mut tried = Vec::new();
    for path in library_candidates() {
        // SAFETY: loading NCCL runs its (trusted) initialisers only.
        let lib = match unsafe { libloading::Library::new(&path) } {
            Ok(l) => l,
            Err(_) => {
                tried.push(path.display().to_string());
                continue;
            }
        };
        // SAFETY: the signatures match nccl.h (NCCL 2.x).
        unsafe {
            let sym = |name: &[u8]| -> std::result::Result<*const c_void, String> {
                lib.get::<*const c_void>(name).map(|s| *s).map_err(|e| format!("{}: {e}", path.display()))
            };
            let api = Api {
                get_unique_id: fn_ptr(sym(b"ncclGetUniqueId")?),
                comm_init_rank: fn_ptr(sym(b"ncclCommInitRank")?),
                all_reduce: fn_ptr(sym(b"ncclAllReduce")?),
                comm_abort: fn_ptr(sym(b"ncclCommAbort")?),
                comm_destroy: fn_ptr(sym(b"ncclCommDestroy")?),
                error_string: fn_ptr(sym(b"ncclGetErrorString")?),
                get_version: fn_ptr(sym(b"ncclGetVersion")?),
                _lib: lib,
            };
            return Ok(api);
        }
    }
    Err(format!("libnccl.so.2 not found (set MINFERENCE_NCCL_LIB to its path; tried {})", tried.join(", ")))
}

fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(load_api).as_ref().map_err(|e| TpError::Nccl(e.clone()))
}

fn check(api: &Api, what: &str, r: NcclResult) -> Result<()> {
    if r == NCCL_SUCCESS {
        return Ok(());
    }
    // SAFETY: NCCL returns a static string for every result code.
    let msg = unsafe { CStr::from_ptr((api.error_string)(r)) }.to_string_lossy().into_owned();
    Err(TpError::Nccl(format!("{what}: {msg} (code {r})")))
}

/// NCCL's version as `major.minor.patch`.
pub fn version() -> Result<String> {
    let api = api()?;
    let mut v: c_int = 0;
    // SAFETY: writes one int.
    check(api, "ncclGetVersion", unsafe { (api.get_version)(&mut v) })?;
    Ok(format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100))
}

pub fn unique_id() -> Result<UniqueId> {
    let api = api()?;
    let mut id = UniqueId { internal: [0; 128] };
    // SAFETY: writes the 128-byte id.
    check(api, "ncclGetUniqueId", unsafe { (api.get_unique_id)(&mut id) })?;
    Ok(id)
}

/// One rank's communicator. Collectives and [`abort`](Self::abort) may come from different
/// threads: the controller aborts a group whose rank failed, so that ranks waiting in a
/// collective return instead of hanging.
pub struct Communicator {
    /// `None` once aborted: later collectives fail instead of touching a freed communicator.
    raw: Mutex<Option<SendComm>>,
}

struct SendComm(RawComm);
// SAFETY: an NCCL communicator may be used from any thread; the mutex serialises our calls.
unsafe impl Send for SendComm {}

impl Communicator {
    /// Joins the group; blocks until all `world` ranks have called it with the same id. The
    /// calling thread must have the rank's CUDA context current.
    pub fn init(id: UniqueId, rank: usize, world: usize) -> Result<Communicator> {
        let api = api()?;
        let mut raw: RawComm = std::ptr::null_mut();
        // SAFETY: raw receives the communicator; id is passed by value as nccl.h declares.
        check(api, "ncclCommInitRank", unsafe { (api.comm_init_rank)(&mut raw, world as c_int, id, rank as c_int) })?;
        Ok(Communicator { raw: Mutex::new(Some(SendComm(raw))) })
    }

    /// In-place sum of `count` 16-bit values at device address `ptr`, enqueued on `stream`.
    ///
    /// # Safety
    /// `ptr` must hold `count` values of `dtype` on this rank's device and `stream` must be a live
    /// stream of that device.
    pub unsafe fn all_reduce_sum(&self, ptr: u64, count: usize, dtype: Half, stream: *mut c_void) -> Result<()> {
        let nccl_type = match dtype {
            Half::Bf16 => NCCL_BFLOAT16,
            Half::F16 => NCCL_FLOAT16,
        };
        let api = api()?;
        let guard = self.raw.lock().map_err(|_| TpError::Nccl("communicator lock poisoned".into()))?;
        let Some(comm) = guard.as_ref() else {
            return Err(TpError::Aborted);
        };
        let p = ptr as *mut c_void;
        // SAFETY: ptr holds count 16-bit values on this rank's device; stream belongs to it.
        check(api, "ncclAllReduce", unsafe { (api.all_reduce)(p, p, count, nccl_type, NCCL_SUM, comm.0, stream) })
    }

    /// Ends every pending and future collective of this communicator with an error.
    pub fn abort(&self) {
        let Ok(api) = api() else { return };
        // A collective being enqueued holds the lock only briefly; wait for it a little.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Ok(mut g) = self.raw.try_lock() {
                if let Some(c) = g.take() {
                    // SAFETY: c is a live communicator, taken out so nobody uses it again.
                    let _ = unsafe { (api.comm_abort)(c.0) };
                }
                return;
            }
            if Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        let Ok(api) = api() else { return };
        if let Ok(mut g) = self.raw.lock() {
            if let Some(c) = g.take() {
                // SAFETY: the last owner frees the communicator once.
                let _ = unsafe { (api.comm_destroy)(c.0) };
            }
        }
    }
}

/// Reinterprets a symbol's address as the function pointer type `F` of its C declaration.
///
/// # Safety
/// `F` must be the `extern "C" fn` type of the symbol at `p`.
unsafe fn fn_ptr<F: Copy>(p: *const c_void) -> F {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*const c_void>());
    // SAFETY: same size (checked); the caller guarantees the type.
    unsafe { std::mem::transmute_copy(&p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_override_path_is_tried_first() {
        // Only reads the variable; other tests of this binary do not touch it.
        let candidates = library_candidates();
        let first = candidates.first().map(|p| p.display().to_string()).unwrap_or_default();
        match std::env::var_os("MINFERENCE_NCCL_LIB") {
            Some(p) => assert_eq!(first, PathBuf::from(p).display().to_string()),
            None => assert_eq!(first, "libnccl.so.2"),
        }
    }

    #[test]
    fn a_missing_nccl_is_a_clear_error_and_a_present_one_has_a_version() {
        match version() {
            Ok(v) => assert_eq!(v.split('.').count(), 3, "{v}"),
            Err(e) => assert!(e.to_string().contains("libnccl.so.2 not found"), "{e}"),
        }
    }
}
