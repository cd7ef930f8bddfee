//! Durations from the API into the units PostgreSQL and Barman Cloud expect.

/// Converts a `walArchiveTimeout` (`30s`–`60m`) into a PostgreSQL `archive_timeout` setting:
/// `5m` → `5min` (PostgreSQL has no `m` unit for time), `30s` → `30s`.
pub fn archive_timeout(value: &str) -> Result<String, String> {
    let (number, unit) = split_number(value)
        .ok_or_else(|| "expected a number followed by s or m, e.g. 5m or 30s".to_string())?;
    let seconds = match unit {
        "s" => number,
        "m" => number.saturating_mul(60),
        _ => return Err(format!("unit {unit:?} is not s (seconds) or m (minutes)")),
    };
    if !(30..=3600).contains(&seconds) {
        return Err("must be between 30s and 60m".to_string());
    }
    Ok(match unit {
        "m" => format!("{number}min"),
        _ => format!("{number}s"),
    })
}

/// A duration the API takes as a number and one unit of `s`, `m` or `h`, in seconds; `None` for
/// anything else (the schema only admits valid values, so `None` means a value to report).
pub fn seconds(value: &str) -> Option<u64> {
    let (number, unit) = split_number(value)?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    Some(number.saturating_mul(factor))
}

/// A drill's `heartbeatInterval` in seconds, or `None` when it is `off`.
pub fn heartbeat_interval(value: &str) -> Result<Option<u64>, String> {
    if value.trim() == "off" {
        return Ok(None);
    }
    match seconds(value) {
        Some(s) if !value.ends_with('h') => Ok(Some(s)),
        _ => Err(format!(
            "heartbeatInterval {value:?} must be seconds (such as 30s), minutes (such as 1m) or off"
        )),
    }
}

/// Checks a retention period (`7d`, `4w`, `3m`) in the form the Barman Cloud `ObjectStore`'s
/// `retentionPolicy` takes, and returns it unchanged.
pub fn retention_policy(value: &str) -> Result<String, String> {
    match split_number(value) {
        Some((_, "d" | "w" | "m")) => Ok(value.to_string()),
        _ => Err(
            "expected a positive number followed by d (days), w (weeks) or m (months), e.g. 7d"
                .to_string(),
        ),
    }
}

/// A volume size as the API takes it (`15Gi`, `512Mi`, `1Ti`) in mebibytes.
pub fn mebibytes(size: &str) -> Option<u64> {
    let (number, unit) = split_number(size)?;
    let factor = match unit {
        "Mi" => 1,
        "Gi" => 1024,
        "Ti" => 1024 * 1024,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// The leading number of `value` and the rest: a positive number of at most nine digits without
/// a leading zero (so never 0), or `None`.
fn split_number(value: &str) -> Option<(u64, &str)> {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    // No digit at all fails the parse below.
    if digits > 9 || value.starts_with('0') {
        return None;
    }
    let (number, unit) = value.split_at(digits);
    Some((number.parse().ok()?, unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_seconds() {
        assert_eq!(seconds("45s"), Some(45));
        assert_eq!(seconds("5m"), Some(300));
        assert_eq!(seconds("2h"), Some(7200));
        assert_eq!(seconds("1d"), None);
        assert_eq!(seconds("0s"), None);
        assert_eq!(seconds("m"), None);
    }

    #[test]
    fn heartbeat_intervals_are_seconds_or_minutes_or_off() {
        assert_eq!(heartbeat_interval("30s"), Ok(Some(30)));
        assert_eq!(heartbeat_interval("1m"), Ok(Some(60)));
        assert_eq!(heartbeat_interval("off"), Ok(None));
        assert!(heartbeat_interval("1h").is_err());
        assert!(heartbeat_interval("0s").is_err());
    }

    #[test]
    fn sizes_in_mebibytes() {
        assert_eq!(mebibytes("512Mi"), Some(512));
        assert_eq!(mebibytes("15Gi"), Some(15 * 1024));
        assert_eq!(mebibytes("2Ti"), Some(2 * 1024 * 1024));
        assert_eq!(mebibytes("15G"), None);
        assert_eq!(mebibytes("Gi"), None);
        assert_eq!(mebibytes("999999999Mi"), Some(999_999_999));
        assert_eq!(mebibytes("1000000000Mi"), None, "ten digits");
    }

    #[test]
    fn archive_timeouts_use_postgresql_units() {
        assert_eq!(archive_timeout("5m").as_deref(), Ok("5min"));
        assert_eq!(archive_timeout("60m").as_deref(), Ok("60min"));
        assert_eq!(archive_timeout("30s").as_deref(), Ok("30s"));
        assert_eq!(archive_timeout("90s").as_deref(), Ok("90s"));
    }

    #[test]
    fn archive_timeouts_outside_the_bound_are_refused() {
        assert!(archive_timeout("29s").is_err());
        assert!(archive_timeout("61m").is_err());
        assert!(archive_timeout("5h").is_err());
        assert!(archive_timeout("m").is_err());
        assert!(archive_timeout("05m").is_err());
        assert!(archive_timeout("").is_err());
    }

    #[test]
    fn retention_passes_through_when_valid() {
        assert_eq!(retention_policy("7d").as_deref(), Ok("7d"));
        assert_eq!(retention_policy("4w").as_deref(), Ok("4w"));
        assert_eq!(retention_policy("3m").as_deref(), Ok("3m"));
        assert!(retention_policy("7").is_err());
        assert!(retention_policy("0d").is_err());
        assert!(retention_policy("7y").is_err());
    }
}
