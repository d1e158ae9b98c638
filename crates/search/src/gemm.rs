//! Bounds-checked wrapper over `matrixmultiply::sgemm` for strided f32 views.

/// Strided f32 matrix view: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// `c[m×n] = a[m×k] · b[k×n] + beta · c` with `c` row-major (row stride `rsc`).
///
/// The asserts guard internal sizing bugs only: every caller sizes its buffers from validated
/// shapes, so user input cannot reach them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(m: usize, k: usize, n: usize, a: View, b: View, beta: f32, c: &mut [f32], rsc: usize) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for r in 0..m {
            c[r * rsc..r * rsc + n].iter_mut().for_each(|x| *x *= beta);
        }
        return;
    }
    assert!(last_index(m, k, a.rs, a.cs) < a.data.len(), "gemm: A out of bounds");
    assert!(last_index(k, n, b.rs, b.cs) < b.data.len(), "gemm: B out of bounds");
    assert!(last_index(m, n, rsc, 1) < c.len(), "gemm: C out of bounds");
    // SAFETY: the asserts prove every touched element lies inside its slice, and `c` is a unique
    // borrow that cannot alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
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
