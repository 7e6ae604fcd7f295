//! Durations as Kubernetes users write them: Go's `time.ParseDuration` grammar (`30s`, `5m`,
//! `1h`, `1m30s`, `1.5h`, `250ms`), which Argo Rollouts and Flux use, or a plain integer
//! number of seconds. No crate implements exactly that grammar (humantime also takes
//! `2 months` and refuses `1.5h`), and a near miss would misread user manifests.

use std::fmt;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a duration ({}); write it as 30s, 5m, 1h, 1m30s or a whole number of seconds",
            self.input, self.reason
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses `30s`, `5m`, `1h30m`, `1.5h`, `100ms` or bare integer seconds (`45`).
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let fail = |reason| {
        Err(DurationError {
            input: input.to_owned(),
            reason,
        })
    };
    let text = input.trim();
    if text.is_empty() {
        return fail("it is empty");
    }
    if text.starts_with('-') {
        return fail("it is negative");
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // The same ceiling as with units (Go's largest duration, about 292 years), so a time
        // plus any duration stays a valid time.
        return match text.parse::<u64>() {
            Ok(seconds) if u128::from(seconds) * 1_000_000_000 <= i64::MAX as u128 => {
                Ok(Duration::from_secs(seconds))
            }
            _ => fail("it is too large"),
        };
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return fail("each part must start with a number");
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return fail("a number needs a unit (ms, s, m or h)"),
            _ => return fail("the unit must be one of ns, us, ms, s, m, h"),
        };
        // Integer arithmetic, as Go does, so that every whole number of nanoseconds is exact.
        let Some(part) = scaled(whole, fraction, nanos_per_unit) else {
            return fail("it is too large");
        };
        total = total.saturating_add(part);
        rest = after;
    }
    // The largest duration Go can represent; beyond it a user surely made a typo.
    if total > i64::MAX as u128 {
        return fail("it is too large");
    }
    Ok(Duration::from_nanos(total as u64))
}

/// `whole.fraction` units in nanoseconds, truncated; None when it overflows.
fn scaled(whole: &str, fraction: &str, nanos_per_unit: u128) -> Option<u128> {
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(nanos_per_unit)?;
    // Digits past the 20th add less than a nanosecond (a unit is at most 3.6e12 ns), and
    // dropping them keeps the product inside u128.
    let fraction = &fraction[..fraction.len().min(20)];
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().ok()?;
        nanos = nanos
            .checked_add(digits.checked_mul(nanos_per_unit)? / 10u128.pow(fraction.len() as u32))?;
    }
    Some(nanos)
}

/// A point in time as Argo's range queries write it in expr: `now()`, or `now()` plus or
/// minus `duration("5m")`. The offset from now, in signed seconds (negative: the past).
pub fn parse_relative_time(input: &str) -> Result<i64, String> {
    let refuse = || {
        Err(format!(
            "{input:?} is not a time weir reads: write now(), or now() - duration(\"5m\") (Argo's expr forms)"
        ))
    };
    let text: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(rest) = text.strip_prefix("now()") else {
        return refuse();
    };
    if rest.is_empty() {
        return Ok(0);
    }
    let (sign, rest) = match rest.split_at_checked(1) {
        Some(("-", rest)) => (-1, rest),
        Some(("+", rest)) => (1, rest),
        _ => return refuse(),
    };
    let Some(quoted) = rest
        .strip_prefix("duration(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.strip_prefix('"').or_else(|| r.strip_prefix('\'')))
        .and_then(|r| r.strip_suffix('"').or_else(|| r.strip_suffix('\'')))
    else {
        return refuse();
    };
    let offset = parse(quoted).map_err(|e| format!("{input:?}: {e}"))?;
    let seconds = i64::try_from(offset.as_secs()).map_err(|_| format!("{input:?} is too far"))?;
    Ok(sign * seconds)
}

/// Parses a field that takes integer seconds or a duration string (`pause.duration`).
pub fn parse_int_or_string(value: &IntOrString) -> Result<Duration, DurationError> {
    match value {
        IntOrString::Int(seconds) => {
            u64::try_from(*seconds)
                .map(Duration::from_secs)
                .map_err(|_| DurationError {
                    input: seconds.to_string(),
                    reason: "it is negative",
                })
        }
        IntOrString::String(text) => parse(text),
    }
}

/// Formats a duration in the shortest exact form `parse` reads back (`1h30m`, `45s`, `250ms`).
pub fn format(duration: Duration) -> String {
    let mut nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if nanos >= size {
            out.push_str(&format!("{}{}", nanos / size, unit));
            nanos %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_what_users_write() {
        let cases = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1m30s", 90_000),
            ("1.5h", 5_400_000),
            ("250ms", 250),
            ("45", 45_000),
            ("0", 0),
            ("0s", 0),
            (" 10s ", 10_000),
        ];
        for (text, millis) in cases {
            assert_eq!(parse(text), Ok(Duration::from_millis(millis)), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration_and_says_why() {
        for (text, reason) in [
            ("", "it is empty"),
            ("10", ""),
            ("10x", "the unit must be one of ns, us, ms, s, m, h"),
            ("1d", "the unit must be one of ns, us, ms, s, m, h"),
            ("s", "each part must start with a number"),
            ("-5s", "it is negative"),
            ("5 m", "the unit must be one of ns, us, ms, s, m, h"),
            ("1..5s", "each part must start with a number"),
            ("5m3", "a number needs a unit (ms, s, m or h)"),
            ("99999999999999999999", "it is too large"),
            ("9999999999999", "it is too large"),
            ("9223372036", ""),
            ("9999999999h", "it is too large"),
        ] {
            if reason.is_empty() {
                assert!(parse(text).is_ok());
                continue;
            }
            let error = parse(text).expect_err(text);
            assert_eq!(error.reason, reason, "{text}");
            assert!(error.to_string().contains("write it as 30s"), "{error}");
        }
    }

    #[test]
    fn integer_or_string() {
        assert_eq!(
            parse_int_or_string(&IntOrString::Int(30)),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(
            parse_int_or_string(&IntOrString::String("2m".into())),
            Ok(Duration::from_secs(120))
        );
        assert_eq!(
            parse_int_or_string(&IntOrString::Int(-1)).map_err(|e| e.reason),
            Err("it is negative")
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_is_the_identity(nanos in 0u64..(1u64 << 62)) {
            let duration = Duration::from_nanos(nanos);
            prop_assert_eq!(parse(&format(duration)), Ok(duration));
        }

        #[test]
        fn integer_seconds_read_as_seconds(seconds in 0u32..u32::MAX) {
            prop_assert_eq!(parse(&seconds.to_string()), Ok(Duration::from_secs(seconds.into())));
        }

        /// Whatever parses can be added to any time a cluster can have, bare seconds included.
        #[test]
        fn any_parsed_duration_fits_after_now(text in "[0-9]{1,20}(ns|us|ms|s|m|h)?") {
            if let Ok(duration) = parse(&text) {
                let delta = chrono::TimeDelta::from_std(duration);
                prop_assert!(delta.is_ok());
                let later = delta.ok().and_then(|d| chrono::Utc::now().checked_add_signed(d));
                prop_assert!(later.is_some(), "{} overflows a time", text);
            }
        }

        #[test]
        fn never_panics(text in "\\PC{0,12}") {
            let _ = parse(&text);
        }
    }

    #[test]
    fn argos_range_query_times_read_as_offsets_from_now() {
        assert_eq!(parse_relative_time("now()"), Ok(0));
        assert_eq!(parse_relative_time(r#"now() - duration("5m")"#), Ok(-300));
        assert_eq!(
            parse_relative_time(r#" now()-duration('1h30m') "#),
            Ok(-5400)
        );
        assert_eq!(parse_relative_time(r#"now() + duration("30s")"#), Ok(30));
        for refused in [
            "",
            "yesterday",
            "now() - 5m",
            r#"now() * duration("5m")"#,
            r#"now() - duration("5 parsecs")"#,
        ] {
            assert!(parse_relative_time(refused).is_err(), "{refused:?}");
        }
    }
}
