//! Device discovery, module loading, allocations that report out-of-memory with sizes, launches
//! and timing events. One stream; every allocation and kernel is ordered on it.

use crate::error::{CudaError, DriverContext, Result};
use crate::kernels;
use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::sync::Arc;

/// A kernel argument passed by value: a device address, an `int`, a `long long`, an unsigned
/// 64-bit value, a `float`. One type for every launch of the workspace ([`Gpu::launch_function`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    P(u64),
    I(i32),
    L(i64),
    U(u64),
    F(f32),
}

/// One GPU with the MInference kernels loaded.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _modules: Vec<Arc<CudaModule>>,
    funcs: HashMap<String, CudaFunction>,
    name: String,
    smem_optin: usize,
    sms: usize,
    /// Why the Hopper warp-specialised kernel is not used (None: it is).
    hopper_off: Option<String>,
    switches: crate::attention::KernelSwitches,
    /// Bytes one Hopper launch's planned chunks may take (0: from free memory); tests lower it to
    /// make a layer split over several launches.
    plan_budget: std::sync::atomic::AtomicUsize,
    pool: crate::pool::RetainingPool,
}

/// `MINFERENCE_HOPPER`: `0` selects the previous kernels (A/B timing), `1` makes a Hopper kernel
/// that cannot be loaded an error of [`Gpu::open`]; unset: used when it loads. Read once per open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HopperMode {
    Off,
    Auto,
    Required,
}

impl HopperMode {
    fn from_env() -> HopperMode {
        match std::env::var("MINFERENCE_HOPPER").as_deref() {
            Ok("0") | Ok("off") => HopperMode::Off,
            Ok("1") | Ok("on") => HopperMode::Required,
            _ => HopperMode::Auto,
        }
    }
}

/// Every kernel entry point, by unit.
const ENTRIES: &[(&str, &[&str])] = &[
    (
        "attention",
        &[
            "attn_bf16_d64",
            "attn_bf16_d96",
            "attn_bf16_d128",
            "attn_f16_d64",
            "attn_f16_d96",
            "attn_f16_d128",
            "attn_bf16_d64_m128",
            "attn_bf16_d96_m128",
            "attn_bf16_d128_m128",
            "attn_f16_d64_m128",
            "attn_f16_d96_m128",
            "attn_f16_d128_m128",
            "attn_bf16_d64_m128w8",
            "attn_bf16_d96_m128w8",
            "attn_bf16_d128_m128w8",
            "attn_f16_d64_m128w8",
            "attn_f16_d96_m128w8",
            "attn_f16_d128_m128w8",
            "attn_bf16_d64_wg",
            "attn_bf16_d128_wg",
            "attn_f16_d64_wg",
            "attn_f16_d128_wg",
            "attn_bf16_d64_m128w8_wg",
            "attn_bf16_d128_m128w8_wg",
            "attn_f16_d64_m128w8_wg",
            "attn_f16_d128_m128w8_wg",
            "attn_bf16_d64_wgp",
            "attn_bf16_d128_wgp",
            "attn_f16_d64_wgp",
            "attn_f16_d128_wgp",
            "attn_bf16_d64_m128w8_wgp",
            "attn_bf16_d128_m128w8_wgp",
            "attn_f16_d64_m128w8_wgp",
            "attn_f16_d128_m128w8_wgp",
        ],
    ),
    ("attention_f32", &["attn_f32_d64", "attn_f32_d96", "attn_f32_d128"]),
    (
        "estimate",
        &[
            "vs_rowstats_bf16_d64",
            "vs_rowstats_bf16_d96",
            "vs_rowstats_bf16_d128",
            "vs_rowstats_f16_d64",
            "vs_rowstats_f16_d96",
            "vs_rowstats_f16_d128",
            "vs_rowstats_f32_d64",
            "vs_rowstats_f32_d96",
            "vs_rowstats_f32_d128",
            "vs_scores_bf16_d64",
            "vs_scores_bf16_d96",
            "vs_scores_bf16_d128",
            "vs_scores_f16_d64",
            "vs_scores_f16_d96",
            "vs_scores_f16_d128",
            "vs_scores_f32_d64",
            "vs_scores_f32_d96",
            "vs_scores_f32_d128",
            "vs_combine",
            "vs_slash_reduce",
            "vs_topk",
            "bs_pool_bf16",
            "bs_pool_f16",
            "bs_pool_f32",
            "bs_scores",
            "bs_select",
        ],
    ),
    ("adaptive", &["vs_adaptive"]),
    ("index", &["vs_breaks", "vs_convert", "bs_assemble", "scan_counts", "index_entries"]),
    ("fill", &["fill_normal"]),
    (
        "search_score",
        &[
            "search_row_lse_d64",
            "search_row_lse_d128",
            "search_dense_out_d64",
            "search_dense_out_d128",
            "search_score_d64",
            "search_score_d128",
        ],
    ),
];

impl Gpu {
    /// Opens GPU `ordinal`. Never panics: a missing driver, no device, a non-Hopper device or
    /// kernels that cannot be loaded all come back as errors ([`CudaError::NoGpu`] for the first three).
    pub fn open(ordinal: usize) -> Result<Gpu> {
        // SAFETY: only checks whether libcuda can be opened.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::NoGpu("the CUDA driver library (libcuda.so) is not installed".into()));
        }
        let init = std::panic::catch_unwind(cudarc::driver::result::init)
            .map_err(|_| CudaError::NoGpu("the CUDA driver library could not be loaded".into()))?;
        init.map_err(|e| CudaError::NoGpu(format!("cuInit failed: {e:?}")))?;
        let count = CudaContext::device_count().map_err(|e| CudaError::NoGpu(format!("cuDeviceGetCount: {e:?}")))?;
        if count <= 0 {
            return Err(CudaError::NoGpu("the driver reports no CUDA device".into()));
        }
        if ordinal >= count as usize {
            return Err(CudaError::NoGpu(format!("GPU {ordinal} requested but only {count} present")));
        }
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| CudaError::NoGpu("creating a CUDA context panicked".into()))?
            .map_err(|e| CudaError::NoGpu(format!("creating a CUDA context failed: {e:?}")))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx.compute_capability().ctx("compute capability")?;
        if (major, minor) != (9, 0) {
            return Err(CudaError::NoGpu(format!(
                "{name} has compute capability {major}.{minor}; these kernels are built for sm_90a (H100/H200)"
            )));
        }
        // SAFETY: one stream orders everything, so cudarc's per-buffer events are not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().ctx("creating a stream")?;
        let pool = crate::pool::RetainingPool::retain(ordinal)?;
        let smem_optin = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .ctx("shared memory limit")? as usize;
        let mut modules = Vec::new();
        let mut funcs = HashMap::new();
        for (unit, names) in ENTRIES {
            let module = kernels::load_unit(&ctx, unit)?;
            for &n in names.iter() {
                let f = module
                    .load_function(n)
                    .map_err(|e| CudaError::KernelLoad(format!("kernel `{n}` missing from `{unit}`: {e:?}")))?;
                let static_smem = f.shared_size_bytes().unwrap_or(0).max(0) as usize;
                let dynamic = smem_optin.saturating_sub(static_smem) as i32;
                f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamic)
                    .ctx(&format!("raising the shared memory limit of {n}"))?;
                funcs.insert(n.to_string(), f);
            }
            modules.push(module);
        }
        let sms = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .ctx("multiprocessor count")? as usize;
        let mode = HopperMode::from_env();
        let hopper_off = if mode == HopperMode::Off {
            Some("disabled by MINFERENCE_HOPPER=0".to_string())
        } else {
            match Self::load_hopper(&ctx, smem_optin) {
                Ok((module, fs)) => {
                    modules.push(module);
                    funcs.extend(fs);
                    None
                }
                Err(e) if mode == HopperMode::Required => return Err(e),
                Err(e) => Some(format!("the Hopper kernel could not be loaded: {e}")),
            }
        };
        let switches = crate::attention::KernelSwitches::from_env();
        Ok(Gpu {
            ctx,
            stream,
            _modules: modules,
            funcs,
            name,
            smem_optin,
            sms,
            hopper_off,
            switches,
            plan_budget: std::sync::atomic::AtomicUsize::new(0),
            pool,
        })
    }

    /// Loads `hopper_attention` (cubin-only in practice: a build without nvcc embeds its source for
    /// NVRTC, whose failure is reported here and leaves the previous kernels in use).
    #[allow(clippy::type_complexity)]
    fn load_hopper(
        ctx: &Arc<CudaContext>,
        smem_optin: usize,
    ) -> Result<(Arc<CudaModule>, Vec<(String, CudaFunction)>)> {
        let module = kernels::load_unit(ctx, kernels::HOPPER_UNIT).map_err(|e| {
            CudaError::KernelLoad(format!(
                "{e}{}",
                if kernels::has_cubin(kernels::HOPPER_UNIT) {
                    String::new()
                } else {
                    "; no sm_90a cubin of `hopper_attention` is embedded: build with nvcc available \
                     (MINFERENCE_REQUIRE_CUBINS=1 makes that mandatory)"
                        .to_string()
                }
            ))
        })?;
        let mut fs = Vec::new();
        for &n in crate::hopper::ENTRIES {
            let f = module
                .load_function(n)
                .map_err(|e| CudaError::KernelLoad(format!("kernel `{n}` missing from `hopper_attention`: {e:?}")))?;
            let static_smem = f.shared_size_bytes().unwrap_or(0).max(0) as usize;
            let dynamic = smem_optin.saturating_sub(static_smem) as i32;
            f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamic)
                .ctx(&format!("raising the shared memory limit of {n}"))?;
            fs.push((n.to_string(), f));
        }
        Ok((module, fs))
    }

    /// `Ok` when the Hopper warp-specialised kernel is loaded and enabled, else why not.
    pub fn hopper_status(&self) -> std::result::Result<(), String> {
        match &self.hopper_off {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }

    /// The kernel switches read from the environment when this GPU was opened.
    pub fn switches(&self) -> crate::attention::KernelSwitches {
        self.switches
    }

    /// Streaming multiprocessors (the persistent grid's CTA count).
    pub fn sm_count(&self) -> usize {
        self.sms
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    /// Largest dynamic shared memory a block may use.
    pub fn smem_limit(&self) -> usize {
        self.smem_optin
    }

    /// Caps the bytes of planned chunks one Hopper attention launch allocates (`None`: what is
    /// free). A layer whose sparse index plans more is run as several launches over groups of
    /// heads; tests set a small cap to exercise that split.
    pub fn set_plan_budget(&self, bytes: Option<usize>) {
        self.plan_budget.store(bytes.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn plan_budget(&self) -> Option<usize> {
        match self.plan_budget.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            b => Some(b),
        }
    }

    /// (free, total) device memory in bytes; free counts the memory pool's idle bytes, which the
    /// next allocation reuses.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        let (free, total) = self.ctx.mem_get_info().ctx("cuMemGetInfo")?;
        Ok((free + self.pool.idle_bytes()?, total))
    }

    /// Stream-ordered allocation; out of memory (after the pool's idle memory has been given
    /// back and the allocation retried) reports the bytes asked and free.
    pub fn alloc<T: DeviceRepr>(&self, n: usize) -> Result<CudaSlice<T>> {
        let bytes = n.max(1) * std::mem::size_of::<T>();
        // SAFETY: contents are written by a kernel or a copy before they are read.
        match unsafe { self.stream.alloc::<T>(n.max(1)) } {
            Ok(s) => Ok(s),
            Err(e) if is_oom(&e) => {
                // Buffers freed on the stream return to the pool once it has run to here.
                self.sync()?;
                self.pool.trim()?;
                // SAFETY: as above.
                unsafe { self.stream.alloc::<T>(n.max(1)) }.map_err(|e| self.oom_or(e, bytes))
            }
            Err(e) => Err(self.oom_or(e, bytes)),
        }
    }

    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        let mut s = self.alloc::<T>(n)?;
        self.stream.memset_zeros(&mut s).ctx("memset")?;
        Ok(s)
    }

    fn oom_or(&self, e: cudarc::driver::DriverError, bytes: usize) -> CudaError {
        if is_oom(&e) {
            let (free, total) = self.mem_info().unwrap_or((0, 0));
            CudaError::OutOfMemory { asked: bytes, free, total }
        } else {
            CudaError::Driver { context: format!("allocating {bytes} bytes"), message: format!("{e:?}") }
        }
    }

    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        let mut s = self.alloc::<T>(data.len())?;
        if !data.is_empty() {
            self.stream.memcpy_htod(data, &mut s).ctx("host-to-device copy")?;
        }
        Ok(s)
    }

    /// Copies the first `n` elements back (synchronises the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, s: &CudaSlice<T>, n: usize) -> Result<Vec<T>> {
        let mut out = vec![T::default(); n];
        if n > 0 {
            self.stream.memcpy_dtoh(&s.slice(0..n), &mut out).ctx("device-to-host copy")?;
        }
        self.sync()?;
        Ok(out)
    }

    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().ctx("stream synchronize")
    }

    /// A timing event (CU_EVENT_DEFAULT: the default flags disable timing).
    pub fn event(&self) -> Result<CudaEvent> {
        self.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).ctx("creating an event")
    }

    pub fn record(&self, e: &CudaEvent) -> Result<()> {
        e.record(&self.stream).ctx("recording an event")
    }

    pub(crate) fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        let (p, _sync) = s.device_ptr(&self.stream);
        p
    }

    pub(crate) fn func(&self, name: &str) -> Result<&CudaFunction> {
        self.funcs.get(name).ok_or_else(|| CudaError::KernelLoad(format!("kernel `{name}` not loaded")))
    }

    pub(crate) fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: usize,
        args: &[Arg],
    ) -> Result<()> {
        if smem > self.smem_optin {
            return Err(CudaError::Invalid(format!(
                "{name} needs {smem} bytes of shared memory, the device allows {}",
                self.smem_optin
            )));
        }
        let f = self.func(name)?;
        let cfg = LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: smem as u32 };
        // SAFETY: argument lists match the kernels' signatures in kernels/*.cu.
        unsafe { self.launch_function(f, name, cfg, args) }
    }

    /// Launches `f` (a kernel of this GPU's context, loaded here or by another crate's module) on
    /// the stream with `args` by value; an empty grid launches nothing. The one launcher of the
    /// workspace: the attention kernels and the model engine's kernels both come through here.
    ///
    /// # Safety
    /// `args` must be the kernel's parameter list (count, order and types), and every address in
    /// it must stay valid until the kernel has run (stream order).
    pub unsafe fn launch_function(&self, f: &CudaFunction, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        let (x, y, z) = cfg.grid_dim;
        if x == 0 || y == 0 || z == 0 {
            return Ok(());
        }
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::P(p) => b.arg(p),
                Arg::I(i) => b.arg(i),
                Arg::L(l) => b.arg(l),
                Arg::U(u) => b.arg(u),
                Arg::F(x) => b.arg(x),
            };
        }
        // SAFETY: the caller's contract (above).
        unsafe { b.launch(cfg) }.ctx(name)?;
        Ok(())
    }

    pub(crate) fn launch_attn(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: usize,
        p: &kernels::AttnParams,
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let f = self.func(name)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(p);
        let cfg = LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: smem as u32 };
        // SAFETY: AttnParams mirrors the kernel's parameter struct.
        unsafe { b.launch(cfg) }.ctx(name)?;
        Ok(())
    }
}

fn is_oom(e: &cudarc::driver::DriverError) -> bool {
    e.0 == cudarc::driver::sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY
}
