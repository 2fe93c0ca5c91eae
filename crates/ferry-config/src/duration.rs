//! Durations written the way people write them: `90s`, `20m`, `1h30m`, `500ms`.

use std::time::Duration;

/// Parses a duration; the error says what was wrong with it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_up_to(text, 7)
}

/// [`parse_duration`] with a limit of `max_days` days (a report's window may span
/// months; a job's timeout may not).
pub fn parse_duration_up_to(text: &str, max_days: u64) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("a duration cannot be empty".into());
    }
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!(
                "`{t}` is not a duration: expected a number at `{rest}`"
            ));
        }
        let (num, after) = rest.split_at(digits);
        let unit_len = after
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .count();
        let (unit, after) = after.split_at(unit_len);
        let n: u128 = num
            .parse()
            .map_err(|_| format!("`{t}` is not a duration: the number is too large"))?;
        let millis = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(if max_days > 7 {
                    format!("`{t}` needs a unit: `{num}d`, `{num}h`, `{num}m` or `{num}s`")
                } else {
                    format!("`{t}` needs a unit: `{num}s`, `{num}m` or `{num}h`")
                });
            }
            other => return Err(format!("`{other}` is not a unit of time in `{t}`")),
        };
        total = total.saturating_add(n.saturating_mul(millis));
        rest = after.trim_start();
    }
    if total == 0 {
        return Err("a duration must be longer than zero".into());
    }
    let total = u64::try_from(total).map_err(|_| format!("`{t}` is too long"))?;
    if total > max_days.saturating_mul(86_400_000) {
        return Err(format!("`{t}` is longer than the limit of {max_days} days"));
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration compactly (`1h30m`, `45s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let cases = [
            ("90s", 90_000),
            ("20m", 1_200_000),
            ("1h30m", 5_400_000),
            ("1h 30m", 5_400_000),
            ("500ms", 500),
            ("2d", 172_800_000),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_bad_forms() {
        for text in [
            "",
            "10",
            "m",
            "10x",
            "0s",
            "1.5h",
            "99999999999999999999999h",
            "8d",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
    }
}
