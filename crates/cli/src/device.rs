//! `--device cpu|cuda[:N]|auto` parsing.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

pub fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(DeviceChoice::Auto),
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
        other => match other.strip_prefix("cuda:") {
            Some(n) => n.parse().map(DeviceChoice::Cuda).map_err(|_| format!("bad GPU ordinal in `{s}`")),
            None => Err(format!("unknown device `{s}` (expected cpu, cuda, cuda:N or auto)")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_devices() {
        assert_eq!(parse_device("cpu").unwrap(), DeviceChoice::Cpu);
        assert_eq!(parse_device("cuda:1").unwrap(), DeviceChoice::Cuda(1));
        assert_eq!(parse_device("CUDA").unwrap(), DeviceChoice::Cuda(0));
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
    }
}
