//! CUDA backend (placeholder; see issue 3).
