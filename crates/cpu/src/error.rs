use minference_core::{CoreError, DType};
use thiserror::Error;

/// Errors of the CPU backend. Every invalid input maps to one of these; nothing panics.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CpuError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("{tensor} has {actual} elements, shape needs {expected}")]
    Length { tensor: &'static str, expected: usize, actual: usize },
    #[error("dtype mismatch: q is {q:?}, k is {k:?}, v is {v:?}")]
    DTypeMismatch { q: DType, k: DType, v: DType },
    #[error("{patterns} patterns for {heads} heads")]
    PatternCount { patterns: usize, heads: usize },
    #[error("non-finite value (NaN or Inf) in {0}")]
    NonFinite(&'static str),
    #[error("invalid sparse index: {0}")]
    InvalidIndex(String),
    #[error("VS and BS heads need a sparse index")]
    MissingIndex,
    #[error("cannot start the thread pool: {0}")]
    ThreadPool(String),
}

pub type CpuResult<T> = std::result::Result<T, CpuError>;
