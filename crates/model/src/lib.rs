//! Model engine (placeholder; see issue 4).
