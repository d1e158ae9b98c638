//! The NVRTC fallback compiles every embedded kernel source (runs without a GPU; skipped when
//! libnvrtc cannot be loaded). The Hopper unit (`hopper_attention`: TMA, setmaxnreg) is
//! cubin-first and skipped here explicitly; whether NVRTC takes it is only reported.

use minference_cuda::kernels::{check_nvrtc_sources_except, HOPPER_UNIT, UNITS};

#[test]
fn embedded_sources_compile_with_nvrtc() {
    match check_nvrtc_sources_except(&[HOPPER_UNIT]) {
        Ok(None) => minference_test_support::skip("libnvrtc not found"),
        Ok(Some(units)) => {
            assert_eq!(units.len(), UNITS.len() - 1);
            for (unit, ptx_len) in units {
                assert!(ptx_len > 1000, "{unit}: PTX of {ptx_len} bytes");
            }
            let others: Vec<&str> = UNITS.iter().copied().filter(|u| *u != HOPPER_UNIT).collect();
            match check_nvrtc_sources_except(&others) {
                Ok(Some(h)) => println!("NVRTC compiles {HOPPER_UNIT} too ({} bytes of PTX)", h[0].1),
                Ok(None) => {}
                Err(e) => println!("skipped: {HOPPER_UNIT} is cubin-only (NVRTC: {e})"),
            }
        }
        Err(e) => panic!("{e}"),
    }
}
