//! Attention benchmark (filled in below).
