//! `spec.schedule.rotationInterval`: whole days (the Infisical form, `30`) or a
//! duration string with day and week units on top of Go's (`30d`, `12h`, `1d12h`).

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

/// Pattern the API server enforces on the string form.
pub const INTERVAL_PATTERN: &str =
    r"^([0-9]+|([0-9]+w)?([0-9]+d)?([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))*)$";

/// The longest interval rotor accepts: 3650 days (ten years), in either form.
pub const MAX_INTERVAL_DAYS: u32 = 3650;
/// [`MAX_INTERVAL_DAYS`] as a duration.
pub const MAX_INTERVAL: Duration = Duration::from_secs(MAX_INTERVAL_DAYS as u64 * 86_400);
/// Longest string form the API server admits.
pub const MAX_INTERVAL_LEN: u32 = 32;

/// A rotation interval as written by the user; parse it with [`RotationInterval::duration`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationInterval {
    /// Whole days.
    Days(u32),
    /// A duration string such as `30d`, `12h` or `1d12h`.
    Text(String),
}

/// Why an interval cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntervalError {
    #[error(
        "rotationInterval {0:?} is not a duration: use whole days (30) or units w, d, h, m, s (30d, 12h, 1d12h)"
    )]
    Syntax(String),
    #[error("rotationInterval must be greater than zero")]
    Zero,
    #[error("rotationInterval {0} is longer than the maximum of 3650 days (ten years)")]
    TooLong(String),
}

impl RotationInterval {
    /// The interval as a duration, at most [`MAX_INTERVAL`]. Never overflows: every
    /// sum and product is checked, whatever the user wrote.
    pub fn duration(&self) -> Result<Duration, IntervalError> {
        let d = match self {
            Self::Days(days) => days_to_duration(u64::from(*days))
                .ok_or_else(|| IntervalError::TooLong(format!("{days}")))?,
            Self::Text(text) => parse_text(text)?,
        };
        if d.is_zero() {
            return Err(IntervalError::Zero);
        }
        Ok(d)
    }
}

/// `days` days, or `None` above [`MAX_INTERVAL_DAYS`].
fn days_to_duration(days: u64) -> Option<Duration> {
    if days > u64::from(MAX_INTERVAL_DAYS) {
        return None;
    }
    Some(Duration::from_secs(days.checked_mul(86_400)?))
}

/// Longest run of digits in one number; anything longer is rejected before parsing.
const MAX_DIGITS: usize = 20;

/// A duration string (no bare days), zero allowed: for spans other than the interval.
pub(super) fn parse_span(text: &str) -> Result<Duration, IntervalError> {
    parse_text(text)
}

fn parse_text(text: &str) -> Result<Duration, IntervalError> {
    let syntax = || IntervalError::Syntax(truncated(text));
    let too_long = || IntervalError::TooLong(truncated(text));
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(syntax());
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        if trimmed.len() > MAX_DIGITS {
            return Err(too_long());
        }
        let days: u64 = trimmed.parse().map_err(|_| too_long())?;
        return days_to_duration(days).ok_or_else(too_long);
    }
    // Nanoseconds, summed with checked arithmetic; anything above the maximum stops.
    let max = MAX_INTERVAL.as_nanos();
    let mut total: u128 = 0;
    let mut rest = trimmed;
    // Go durations know no days or weeks; those may only come first (w before d).
    const UNITS: [&str; 9] = ["w", "d", "h", "m", "s", "ms", "us", "µs", "ns"];
    let mut allowed = UNITS.as_slice();
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if int_len == 0 || int_len > MAX_DIGITS {
            return Err(if int_len == 0 { syntax() } else { too_long() });
        }
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return Err(syntax());
                }
                f.split_at(n)
            }
            None => ("", after),
        };
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let position = allowed.iter().position(|u| *u == unit).ok_or_else(syntax)?;
        let unit_nanos: u128 = match unit {
            "w" => 7 * 86_400 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            _ => 1,
        };
        if !frac_part.is_empty() && matches!(unit, "w" | "d") {
            return Err(syntax());
        }
        // w and d once each, in that order, before the Go units; Go units in any order
        // and repeated, as Go (and the schema's pattern) allow.
        allowed = match unit {
            "w" | "d" => &allowed[position + 1..],
            _ => &UNITS[2..],
        };
        let whole: u128 = int_part.parse().map_err(|_| too_long())?;
        let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_long)?;
        if !frac_part.is_empty() {
            // Nine fractional digits are below a nanosecond of every unit but w and d.
            let digits = &frac_part[..frac_part.len().min(9)];
            let scale = 10u128.pow(u32::try_from(digits.len()).unwrap_or(9));
            let frac: u128 = digits.parse().map_err(|_| syntax())?;
            nanos = nanos
                .checked_add(frac.checked_mul(unit_nanos).ok_or_else(too_long)? / scale)
                .ok_or_else(too_long)?;
        }
        total = total.checked_add(nanos).ok_or_else(too_long)?;
        if total > max {
            return Err(too_long());
        }
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_long())?;
    let sub = u32::try_from(total % 1_000_000_000).map_err(|_| too_long())?;
    Ok(Duration::new(secs, sub))
}

/// The user's text for an error message, cut to what the schema admits.
fn truncated(text: &str) -> String {
    text.chars().take(MAX_INTERVAL_LEN as usize).collect()
}

impl FromStr for RotationInterval {
    type Err = IntervalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let interval = Self::Text(s.to_string());
        interval.duration()?;
        Ok(interval)
    }
}

impl fmt::Display for RotationInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Days(d) => write!(f, "{d}d"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

impl Default for RotationInterval {
    fn default() -> Self {
        Self::Days(30)
    }
}

impl Serialize for RotationInterval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Days(d) => s.serialize_u32(*d),
            Self::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for RotationInterval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RotationInterval;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("whole days (an integer) or a duration string")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u32::try_from(v).map(RotationInterval::Days).map_err(|_| {
                    E::custom(format!(
                        "{v} is out of range: whole days, 1 to {MAX_INTERVAL_DAYS}"
                    ))
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "{v} is negative: whole days, 1 to {MAX_INTERVAL_DAYS}"
                    ))),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "{v} is not whole days: write an integer or a duration string"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RotationInterval::Text(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(RotationInterval::Text(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for RotationInterval {
    fn schema_name() -> Cow<'static, str> {
        "RotationInterval".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // `pattern` applies to strings only and `minimum` to numbers only, so both can
        // sit at the top; kube's schema rewriter would strip the types from anyOf arms.
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "nullable": false,
            "minimum": 1,
            "maximum": MAX_INTERVAL_DAYS,
            "minLength": 1,
            "maxLength": MAX_INTERVAL_LEN,
            "pattern": INTERVAL_PATTERN
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Duration, IntervalError> {
        RotationInterval::Text(s.into()).duration()
    }

    #[test]
    fn accepts_days_weeks_and_go_units() {
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse("2w").unwrap(), Duration::from_secs(14 * 86_400));
        assert_eq!(parse("1d12h").unwrap(), Duration::from_secs(36 * 3_600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse("7").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(
            RotationInterval::Days(3).duration().unwrap(),
            Duration::from_secs(3 * 86_400)
        );
    }

    #[test]
    fn rejects_zero_and_garbage() {
        assert_eq!(parse("0d"), Err(IntervalError::Zero));
        assert_eq!(
            RotationInterval::Days(0).duration(),
            Err(IntervalError::Zero)
        );
        for bad in ["", "d", "30x", "thirty days", "-1h", "1d-2h"] {
            assert!(matches!(parse(bad), Err(IntervalError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn huge_values_are_too_long_never_an_overflow() {
        for huge in [
            "30000000000000w200000000000000d",
            "18446744073709551615w",
            "99999999999999999999h",
            "999999999999999999999999s",
            "3651d",
            "3650d1ns",
            "521w4d",
            "4294967296",
            "9999999999999999999999999",
            "2562047h",
            "1.99999999999999999999999999999w",
        ] {
            assert!(
                matches!(
                    parse(huge),
                    Err(IntervalError::TooLong(_)) | Err(IntervalError::Syntax(_))
                ),
                "{huge}: {:?}",
                parse(huge)
            );
        }
        assert!(matches!(parse("3651d"), Err(IntervalError::TooLong(_))));
        assert!(matches!(
            parse("30000000000000w200000000000000d"),
            Err(IntervalError::TooLong(_))
        ));
        assert_eq!(parse("3650d").unwrap(), MAX_INTERVAL);
        assert_eq!(parse("3650").unwrap(), MAX_INTERVAL);
        assert_eq!(parse("521w3d").unwrap(), MAX_INTERVAL);
        assert!(matches!(
            RotationInterval::Days(u32::MAX).duration(),
            Err(IntervalError::TooLong(_))
        ));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse("1500ms").unwrap(), Duration::from_millis(1_500));
        assert_eq!(parse("2µs").unwrap(), Duration::from_micros(2));
    }

    #[test]
    fn integers_beyond_u32_fail_with_a_clear_message() {
        let err = serde_json::from_str::<RotationInterval>("4294967296")
            .unwrap_err()
            .to_string();
        assert!(err.contains("4294967296 is out of range"), "{err}");
        assert!(serde_json::from_str::<RotationInterval>("-1").is_err());
        assert!(serde_json::from_str::<RotationInterval>("1.5").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "[0-9wdhmsnuµ.]{0,64}") {
            let _ = parse(&s);
        }

        /// Any run of Go units the schema's pattern admits, in any order and repeated,
        /// after optional weeks and days: the sum, computed here unit by unit.
        #[test]
        fn go_units_sum_in_any_order(
            weeks in proptest::option::of(0u64..5),
            days in proptest::option::of(0u64..30),
            parts in proptest::collection::vec((0u64..1000, 0usize..7), 1..12),
        ) {
            const GO: [(&str, u128); 7] = [
                ("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000),
                ("ms", 1_000_000), ("us", 1_000), ("µs", 1_000), ("ns", 1),
            ];
            let mut text = String::new();
            let mut want: u128 = 0;
            if let Some(w) = weeks {
                text.push_str(&format!("{w}w"));
                want += u128::from(w) * 7 * 86_400 * 1_000_000_000;
            }
            if let Some(d) = days {
                text.push_str(&format!("{d}d"));
                want += u128::from(d) * 86_400 * 1_000_000_000;
            }
            for (n, unit) in &parts {
                text.push_str(&format!("{n}{}", GO[*unit].0));
                want += u128::from(*n) * GO[*unit].1;
            }
            match parse(&text) {
                Ok(d) => proptest::prop_assert_eq!(d.as_nanos(), want, "{}", text),
                Err(e) => {
                    proptest::prop_assert_eq!(e, IntervalError::Zero, "{}", text);
                    proptest::prop_assert_eq!(want, 0, "{} refused though it sums to {}ns", text, want);
                }
            }
        }
    }

    #[test]
    fn go_units_may_repeat_and_follow_days() {
        // Five and more Go units once panicked (the allowed-unit list was sliced short).
        assert_eq!(parse("1h1m1s1us1ns").unwrap(), Duration::new(3_661, 1_001));
        assert_eq!(parse("1ns1ns1ns1ns1ns").unwrap(), Duration::from_nanos(5));
        assert_eq!(parse("1d12h30m").unwrap(), Duration::from_secs(131_400));
        assert_eq!(
            parse("1w1h30m15s").unwrap(),
            Duration::from_secs(7 * 86_400 + 5_415)
        );
        assert!(matches!(parse("1h1d"), Err(IntervalError::Syntax(_))));
    }

    #[test]
    fn int_or_string_round_trips() {
        let v: RotationInterval = serde_json::from_str("30").unwrap();
        assert_eq!(v, RotationInterval::Days(30));
        let v: RotationInterval = serde_json::from_str("\"12h\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"12h\"");
    }
}
