//! The NVRTC fallback compiles every embedded kernel source (runs without a GPU; skipped when
//! libnvrtc cannot be loaded).

#[test]
fn embedded_sources_compile_with_nvrtc() {
    match minference_cuda::kernels::check_nvrtc_sources() {
        Ok(None) => minference_test_support::skip("libnvrtc not found"),
        Ok(Some(units)) => {
            assert_eq!(units.len(), minference_cuda::kernels::UNITS.len());
            for (unit, ptx_len) in units {
                assert!(ptx_len > 1000, "{unit}: PTX of {ptx_len} bytes");
            }
        }
        Err(e) => panic!("{e}"),
    }
}
