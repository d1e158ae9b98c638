//! Typed views of device buffers: a base address, the element type and a row-major shape, so that
//! the address of a row, a block of rows or an element comes from the element size of the buffer
//! (f32 residual, bf16 / f16 storage chosen at run time) instead of a byte count written by hand.
//! Buffers of other element types (token ids, f64 RoPE frequencies) are [`DeviceSlice`]s.

use cudarc::driver::{CudaSlice, DevicePtr};
use minference_core::DType;
use minference_cuda::tensor::elem_bytes;
use minference_cuda::{DeviceTensor, Gpu};

/// Device address of a slice (the engine orders everything on the Gpu's one stream).
pub(crate) fn dptr<T>(gpu: &Gpu, s: &CudaSlice<T>) -> u64 {
    let (p, _sync) = s.device_ptr(gpu.stream());
    p
}

/// `len` elements of `T` from device address `ptr`: a buffer whose element type has no `DType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSlice<T> {
    ptr: u64,
    len: usize,
    _elem: std::marker::PhantomData<T>,
}

impl<T> DeviceSlice<T> {
    pub fn new(ptr: u64, len: usize) -> Self {
        DeviceSlice { ptr, len, _elem: std::marker::PhantomData }
    }

    pub fn of(gpu: &Gpu, slice: &CudaSlice<T>) -> Self {
        Self::new(dptr(gpu, slice), slice.len())
    }

    pub fn ptr(self) -> u64 {
        self.ptr
    }

    pub fn len(self) -> usize {
        self.len
    }

    pub fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// `rows` rows of `row_stride` elements of `dtype` from device address `ptr`, of which the first
/// `width` are this view's (a block of columns of a wider matrix has `width < row_stride`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceView {
    ptr: u64,
    dtype: DType,
    rows: usize,
    row_stride: usize,
    width: usize,
}

impl DeviceView {
    /// Panics when `row_stride` is zero: every view here has rows of at least one element.
    pub fn new(ptr: u64, dtype: DType, rows: usize, row_stride: usize) -> Self {
        assert!(row_stride > 0, "a device view needs rows of at least one element");
        DeviceView { ptr, dtype, rows, row_stride, width: row_stride }
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

    /// Elements of each row that belong to the view.
    pub fn width(self) -> usize {
        self.width
    }

    /// Whether the rows are back to back (a kernel taking only a width needs this).
    pub fn is_contiguous(self) -> bool {
        self.width == self.row_stride
    }

    /// Elements from the first to the end of the last row.
    pub fn span(self) -> usize {
        self.rows * self.row_stride
    }

    /// The same contiguous elements as rows of `row_stride` (a head of `[n, D]` as `n` rows).
    pub fn as_rows_of(self, row_stride: usize) -> Self {
        assert!(self.is_contiguous(), "only back-to-back rows can be re-cut: {self:?}");
        Self::covering(self.ptr, self.dtype, self.span(), row_stride)
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
        assert!(row < self.rows && col < self.width, "element ({row}, {col}) outside {self:?}");
        self.offset_ptr(row * self.row_stride + col)
    }

    /// Rows `start..start + count`, same stride.
    pub fn rows(self, start: usize, count: usize) -> Self {
        assert!(start + count <= self.rows, "rows {start}..{} of a view of {} rows", start + count, self.rows);
        DeviceView { ptr: self.row_ptr(start), rows: count, ..self }
    }

    /// The same rows starting `col` elements further on (a block of columns of a wider matrix).
    pub fn cols_from(self, col: usize) -> Self {
        assert!(col < self.width, "column {col} of rows of {}", self.width);
        DeviceView { ptr: self.offset_ptr(col), width: self.width - col, ..self }
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
    fn a_column_block_keeps_the_stride_and_narrows_the_width() {
        let v = DeviceView::new(1 << 20, DType::Bf16, 10, 576);
        let block = v.cols_from(64 * 3);
        assert_eq!((block.width(), block.row_stride(), block.rows_len()), (576 - 192, 576, 10));
        assert!(v.is_contiguous() && !block.is_contiguous());
        assert_eq!(block.cols_from(64).elem_ptr(2, 0), v.elem_ptr(2, 256));
    }

    #[test]
    fn one_head_re_cut_as_rows_of_the_head_dim() {
        // Head 2 of `[4, 100, 64]` as 100 rows of 64.
        let layer = DeviceView::new(0, DType::F16, 4, 100 * 64);
        let head = layer.rows(2, 1).as_rows_of(64);
        assert_eq!((head.rows_len(), head.row_stride(), head.ptr()), (100, 64, layer.row_ptr(2)));
        assert_eq!(head.row_ptr(100), layer.row_ptr(3));
    }

    #[test]
    #[should_panic(expected = "only back-to-back rows")]
    fn a_column_block_cannot_be_re_cut() {
        DeviceView::new(0, DType::F32, 4, 8).cols_from(2).as_rows_of(2);
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
