//! CPU backend (placeholder; see issue 2).
