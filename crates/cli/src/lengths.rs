//! Parsing of token counts such as `8k`, `128K`, `1m`, `4096`.

/// Parses one length; `k` = 1024, `m` = 1024².
pub fn parse_length(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let (digits, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1024usize),
        Some('m') => (&t[..t.len() - 1], 1024 * 1024),
        _ => (&t[..], 1),
    };
    let n: usize = digits.parse().map_err(|_| format!("`{s}` is not a length (examples: 4096, 32k, 1m)"))?;
    let v = n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))?;
    if v == 0 {
        return Err("a length must be > 0".into());
    }
    Ok(v)
}

/// Parses a comma-separated list of lengths.
pub fn parse_lengths(s: &str) -> Result<Vec<usize>, String> {
    s.split(',').filter(|p| !p.trim().is_empty()).map(parse_length).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse_length("8k").unwrap(), 8192);
        assert_eq!(parse_length("1M").unwrap(), 1 << 20);
        assert_eq!(parse_length("100").unwrap(), 100);
        assert_eq!(parse_lengths("8k,32k").unwrap(), vec![8192, 32768]);
        assert!(parse_length("0").is_err());
        assert!(parse_length("abc").is_err());
        assert!(parse_length("99999999999999999999m").is_err());
    }
}
