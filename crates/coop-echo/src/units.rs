//! The units an operator writes: sizes, durations and shares, in one way everywhere
//! (flags, fault specs, query parameters).

use std::time::Duration;

/// `"1024"`, `"64KiB"`, `"16MiB"`, `"1GiB"`: a number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => s.split_at(at),
        None => (s, ""),
    };
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "'{s}' is not a size (bytes, or with KiB, MiB or GiB)"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("'{s}' is not a size (bytes, or with KiB, MiB or GiB)"))
}

/// `250ms`, `2s`, `1.5s`, or bare seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (number, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(secs) = s.strip_suffix('s') {
        (secs, 1.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number.parse().ok()?;
    // Negative, not a number, or past what a `Duration` holds: no duration.
    Duration::try_from_secs_f64(value * scale).ok()
}

/// `5%`, `12.5%`: a share, as a fraction of one.
pub fn parse_share(s: &str) -> Option<f64> {
    let value: f64 = s.strip_suffix('%')?.parse().ok()?;
    (value.is_finite() && (0.0..=100.0).contains(&value)).then_some(value / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("12kb").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999").is_err());
    }

    #[test]
    fn durations_take_ms_and_s() {
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("infs"), None);
        // Finite, but past what a Duration holds: refused, not a panic.
        assert_eq!(parse_duration("1e300"), None);
        assert_eq!(parse_duration("1e300ms"), None);
    }

    #[test]
    fn shares_are_percentages() {
        assert_eq!(parse_share("5%"), Some(0.05));
        assert_eq!(parse_share("100%"), Some(1.0));
        assert_eq!(parse_share("0%"), Some(0.0));
        assert_eq!(parse_share("101%"), None);
        assert_eq!(parse_share("5"), None);
        assert_eq!(parse_share("-1%"), None);
        assert_eq!(parse_share("nan%"), None);
    }
}
