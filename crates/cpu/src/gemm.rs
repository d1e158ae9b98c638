//! Safe wrapper over `matrixmultiply::sgemm` for strided f32 matrices.

/// A strided f32 matrix view: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

fn max_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// `c[m×n] = alpha · a[m×k] · b[k×n] + beta · c`, with `c` row-major, row stride `rsc`.
///
/// Panics only on an internal shape bug (out-of-bounds views), never on user input: callers size
/// every buffer from the validated shape.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(m: usize, k: usize, n: usize, alpha: f32, a: Mat, b: Mat, beta: f32, c: &mut [f32], rsc: usize) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for r in 0..m {
            for x in &mut c[r * rsc..r * rsc + n] {
                *x *= beta;
            }
        }
        return;
    }
    assert!(max_index(m, k, a.rs, a.cs) < a.data.len(), "gemm: A view out of bounds");
    assert!(max_index(k, n, b.rs, b.cs) < b.data.len(), "gemm: B view out of bounds");
    assert!(max_index(m, n, rsc, 1) < c.len(), "gemm: C view out of bounds");
    // SAFETY: the three asserts above prove every element the kernel touches lies inside its slice;
    // `c` is a unique borrow, so it does not alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            1,
        )
    }
}
