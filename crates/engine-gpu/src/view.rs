//! Typed views of device buffers: a base address, the element type and a row-major shape, so that
//! the address of a row, a block of rows or an element comes from the element size of the buffer
//! (f32 residual, bf16 / f16 storage chosen at run time) instead of a byte count written by hand.

use crate::ops::dptr;
use cudarc::driver::CudaSlice;
use minference_core::DType;
use minference_cuda::tensor::elem_bytes;
use minference_cuda::{DeviceTensor, Gpu};

/// `rows` rows of `row_stride` elements of `dtype` from device address `ptr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceView {
    ptr: u64,
    dtype: DType,
    rows: usize,
    row_stride: usize,
}

impl DeviceView {
    /// Panics when `row_stride` is zero: every view here has rows of at least one element.
    pub fn new(ptr: u64, dtype: DType, rows: usize, row_stride: usize) -> Self {
        assert!(row_stride > 0, "a device view needs rows of at least one element");
        DeviceView { ptr, dtype, rows, row_stride }
    }

    /// The whole of `slice` as rows of `row_stride` elements of `dtype` (its length is a multiple
    /// of `row_stride`, and `T` has the size of `dtype`: 16-bit storage is held as `u16`).
    pub fn of_slice<T>(gpu: &Gpu, slice: &CudaSlice<T>, dtype: DType, row_stride: usize) -> Self {
        assert_eq!(std::mem::size_of::<T>(), elem_bytes(dtype), "buffer element and view dtype differ in size");
        Self::covering(dptr(gpu, slice), dtype, slice.len(), row_stride)
    }

    /// The whole of `tensor` as rows of `row_stride` elements of its own dtype.
    pub fn of_tensor(gpu: &Gpu, tensor: &DeviceTensor, row_stride: usize) -> Self {
        Self::covering(tensor.device_ptr(gpu), tensor.dtype, tensor.len, row_stride)
    }

    fn covering(ptr: u64, dtype: DType, len: usize, row_stride: usize) -> Self {
        assert!(row_stride > 0 && len.is_multiple_of(row_stride), "{len} elements are not rows of {row_stride}");
        Self::new(ptr, dtype, len / row_stride, row_stride)
    }

    /// The first element's address.
    pub fn ptr(self) -> u64 {
        self.ptr
    }

    pub fn dtype(self) -> DType {
        self.dtype
    }

    pub fn rows_len(self) -> usize {
        self.rows
    }

    /// Elements from one row's start to the next one's (the leading dimension of a GEMM operand).
    pub fn row_stride(self) -> usize {
        self.row_stride
    }

    /// Address and leading dimension, the pair a GEMM operand is passed as.
    pub fn ld(self) -> (u64, usize) {
        (self.ptr, self.row_stride)
    }

    /// Address of row `i` (`i == rows` is the end address, as a slice's end index).
    pub fn row_ptr(self, i: usize) -> u64 {
        assert!(i <= self.rows, "row {i} of a view of {} rows", self.rows);
        self.offset_ptr(i * self.row_stride)
    }

    /// Address of element `col` of row `row`.
    pub fn elem_ptr(self, row: usize, col: usize) -> u64 {
        assert!(row < self.rows && col < self.row_stride, "element ({row}, {col}) outside {self:?}");
        self.offset_ptr(row * self.row_stride + col)
    }

    /// Rows `start..start + count`, same stride.
    pub fn rows(self, start: usize, count: usize) -> Self {
        assert!(start + count <= self.rows, "rows {start}..{} of a view of {} rows", start + count, self.rows);
        DeviceView { ptr: self.row_ptr(start), rows: count, ..self }
    }

    /// The same rows starting `col` elements further on (a block of columns of a wider matrix).
    pub fn cols_from(self, col: usize) -> Self {
        assert!(col < self.row_stride, "column {col} of rows of {}", self.row_stride);
        DeviceView { ptr: self.offset_ptr(col), ..self }
    }

    fn offset_ptr(self, elems: usize) -> u64 {
        self.ptr + (elems * elem_bytes(self.dtype)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::Bf16];

    fn size(dtype: DType) -> u64 {
        match dtype {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
        }
    }

    proptest! {
        #[test]
        fn row_and_element_addresses_step_by_the_element_size(
            base in (0u64..1 << 40).prop_map(|b| b * 256),
            d in 0usize..3,
            rows in 1usize..5000,
            stride in 1usize..5000,
            pick in any::<(usize, usize)>(),
        ) {
            let dtype = DTYPES[d];
            let v = DeviceView::new(base, dtype, rows, stride);
            let (r, c) = (pick.0 % rows, pick.1 % stride);
            prop_assert_eq!(v.row_ptr(r), base + (r * stride) as u64 * size(dtype));
            prop_assert_eq!(v.elem_ptr(r, c), base + (r * stride + c) as u64 * size(dtype));
            prop_assert_eq!(v.row_ptr(rows) - v.ptr(), (rows * stride) as u64 * size(dtype));
        }

        #[test]
        fn sub_views_compose(
            d in 0usize..3,
            rows in 1usize..2000,
            stride in 1usize..2000,
            pick in any::<(usize, usize, usize, usize)>(),
        ) {
            let v = DeviceView::new(1 << 20, DTYPES[d], rows, stride);
            let start = pick.0 % rows;
            let count = pick.1 % (rows - start + 1);
            let sub = v.rows(start, count);
            prop_assert_eq!(sub.rows_len(), count);
            prop_assert_eq!(sub.row_stride(), stride);
            prop_assert_eq!(sub.ptr(), v.row_ptr(start));
            if count > 0 {
                let (r, c) = (pick.2 % count, pick.3 % stride);
                prop_assert_eq!(sub.elem_ptr(r, c), v.elem_ptr(start + r, c));
                prop_assert_eq!(sub.cols_from(c).row_ptr(r), v.elem_ptr(start + r, c));
            }
        }
    }

    #[test]
    fn a_whole_buffer_is_its_length_in_rows() {
        let v = DeviceView::covering(4096, DType::Bf16, 3 * 576, 576);
        assert_eq!((v.rows_len(), v.row_stride(), v.row_ptr(3)), (3, 576, 4096 + 3 * 576 * 2));
    }

    #[test]
    #[should_panic(expected = "are not rows of")]
    fn a_buffer_that_is_not_whole_rows_panics() {
        DeviceView::covering(0, DType::F32, 10, 4);
    }

    #[test]
    fn the_hand_written_offsets_it_replaces() {
        // The f32 residual row of token c0, a 16-bit KV head of n tokens, the decode partials.
        let (h, c0, n, d) = (576, 8192, 1000, 64);
        assert_eq!(DeviceView::new(0, DType::F32, c0 + 1, h).row_ptr(c0), (c0 * h * 4) as u64);
        for dtype in [DType::Bf16, DType::F16] {
            assert_eq!(DeviceView::new(0, dtype, 3, n * d).row_ptr(2), (2 * n * d * 2) as u64);
        }
        assert_eq!(DeviceView::new(0, DType::F32, 3, 7).row_ptr(2), 8 * 7);
    }

    #[test]
    #[should_panic(expected = "rows 3..5 of a view of 4 rows")]
    fn rows_past_the_end_panic() {
        DeviceView::new(0, DType::Bf16, 4, 8).rows(3, 2);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn elements_past_the_row_panic() {
        DeviceView::new(0, DType::F32, 4, 8).elem_ptr(0, 8);
    }
}
