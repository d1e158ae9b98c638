//! The device's default memory pool, which every stream-ordered allocation draws from, set to keep
//! what it has mapped. With the driver's default release threshold (0) the pool gives its memory
//! back at every stream synchronisation, so each layer's buffers (estimation scores, the index,
//! the planner's chunks: hundreds of MB at 128K) were mapped afresh on every call.

use crate::error::{DriverContext, Result};
use cudarc::driver::sys::{self, CUmemPool_attribute, CUmemoryPool};

/// The default pool of one device.
pub(crate) struct RetainingPool {
    pool: CUmemoryPool,
}

// SAFETY: a CUmemoryPool is a driver handle usable from any thread.
unsafe impl Send for RetainingPool {}
unsafe impl Sync for RetainingPool {}

impl RetainingPool {
    /// Takes device `ordinal`'s default pool and lifts its release threshold, so that freed
    /// memory stays mapped for the next allocation.
    pub(crate) fn retain(ordinal: usize) -> Result<RetainingPool> {
        let dev = cudarc::driver::result::device::get(ordinal as i32).ctx("cuDeviceGet")?;
        let mut pool: CUmemoryPool = std::ptr::null_mut();
        // SAFETY: out-pointer to a handle; the device ordinal was checked by the caller.
        unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, dev) }.result().ctx("cuDeviceGetDefaultMemPool")?;
        let mut keep_all = u64::MAX;
        // SAFETY: the release threshold attribute takes a cuuint64_t.
        unsafe {
            sys::cuMemPoolSetAttribute(
                pool,
                CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut keep_all as *mut u64).cast(),
            )
        }
        .result()
        .ctx("setting the memory pool's release threshold")?;
        Ok(RetainingPool { pool })
    }

    fn attribute(&self, attr: CUmemPool_attribute) -> Result<u64> {
        let mut v = 0u64;
        // SAFETY: the reserved / used attributes are cuuint64_t.
        unsafe { sys::cuMemPoolGetAttribute(self.pool, attr, (&mut v as *mut u64).cast()) }
            .result()
            .ctx("reading the memory pool's size")?;
        Ok(v)
    }

    /// Bytes the pool holds mapped but no allocation uses: free for the next stream-ordered
    /// allocation, though `cuMemGetInfo` counts them as used.
    pub(crate) fn idle_bytes(&self) -> Result<usize> {
        let reserved = self.attribute(CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?;
        let used = self.attribute(CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?;
        Ok(reserved.saturating_sub(used) as usize)
    }

    /// Gives every idle byte back to the device (before an allocation is declared out of memory:
    /// the pool's idle memory may be fragmented, or wanted outside the pool).
    pub(crate) fn trim(&self) -> Result<()> {
        // SAFETY: a valid pool handle; trimming only releases memory no allocation holds.
        unsafe { sys::cuMemPoolTrimTo(self.pool, 0) }.result().ctx("trimming the memory pool")
    }
}
