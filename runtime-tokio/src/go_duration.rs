//! Go's `time.ParseDuration`, for the flag and option values etcd reads with it
//! (`--auth-token ...,ttl=5m`, durations in `--auto-compaction-retention`, ...).

use std::time::Duration;

/// Go's `time.ParseDuration` for non-negative values ("300ms", "1h30m", "1.5h", "0"),
/// with Go's error texts.
pub fn parse(s: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(invalid());
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .bytes()
            .take_while(|b| !b.is_ascii_digit() && *b != b'.')
            .count();
        let (unit, after) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(format!("time: unknown unit {other:?} in duration {s:?}")),
        };
        // Digits beyond what a u128 holds are nonsense for a duration anyway.
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        let frac: u128 = if frac_digits.is_empty() {
            0
        } else {
            frac_digits.parse().map_err(|_| invalid())?
        };
        let scale = 10u128.pow(u32::try_from(frac_digits.len()).map_err(|_| invalid())?);
        total_ns = int
            .checked_mul(unit_ns)
            .and_then(|n| n.checked_add(frac * unit_ns / scale))
            .and_then(|n| total_ns.checked_add(n))
            .filter(|n| *n <= u128::from(u64::MAX))
            .ok_or_else(invalid)?;
        rest = after;
    }
    let nanos = u64::try_from(total_ns).map_err(|_| invalid())?;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_parses_them() {
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2h0m0s"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1µs"), Ok(Duration::from_micros(1)));
        assert_eq!(parse(""), Err("time: invalid duration \"\"".to_owned()));
        assert_eq!(
            parse("-1s"),
            Err("time: invalid duration \"-1s\"".to_owned())
        );
        assert_eq!(
            parse("1.s.s"),
            Err("time: invalid duration \"1.s.s\"".to_owned())
        );
    }

    #[test]
    fn a_number_needs_a_unit_and_no_sign() {
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse("5").is_err());
        assert!(parse("-1s").is_err());
    }
}
