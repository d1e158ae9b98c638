//! Benchmarks behind `minference bench` that belong to no library's API. The CPU attention
//! benchmark lives here so that `minference-cpu` exports only the backend; the GPU benchmarks
//! still live next to the code they time (`minference_cuda::bench`, `minference_engine_gpu::bench`).

pub mod cpu_attention;

pub use cpu_attention::{process_cpu_seconds, run_cpu_bench, sgemm_rate, CpuBenchConfig};
