//! `spec.schedule.rotationInterval`: whole days (the Infisical form, `30`) or a
//! duration string with day and week units on top of Go's (`30d`, `12h`, `1d12h`).

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

/// Pattern the API server enforces on the string form.
pub const INTERVAL_PATTERN: &str =
    r"^([0-9]+|([0-9]+w)?([0-9]+d)?([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))*)$";

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
}

impl RotationInterval {
    /// The interval as a duration.
    pub fn duration(&self) -> Result<Duration, IntervalError> {
        let d = match self {
            Self::Days(days) => Duration::from_secs(u64::from(*days) * 86_400),
            Self::Text(text) => parse_text(text)?,
        };
        if d.is_zero() {
            return Err(IntervalError::Zero);
        }
        Ok(d)
    }
}

fn parse_text(text: &str) -> Result<Duration, IntervalError> {
    let syntax = || IntervalError::Syntax(text.to_string());
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(syntax());
    }
    if let Ok(days) = trimmed.parse::<u32>() {
        return Ok(Duration::from_secs(u64::from(days) * 86_400));
    }
    // Go durations know no days or weeks; peel those off the front first.
    let mut rest = trimmed;
    let mut total = Duration::ZERO;
    for (unit, seconds) in [('w', 7 * 86_400u64), ('d', 86_400)] {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(unit) {
            let n: u64 = rest[..digits].parse().map_err(|_| syntax())?;
            total += Duration::from_secs(n.checked_mul(seconds).ok_or_else(syntax)?);
            rest = &rest[digits + 1..];
        }
    }
    if !rest.is_empty() {
        let go: kube::core::Duration = rest.parse().map_err(|_| syntax())?;
        if go.is_negative() {
            return Err(syntax());
        }
        total += Duration::from(go);
    }
    Ok(total)
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
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u32),
            Text(String),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Int(days) => Self::Days(days),
            Raw::Text(text) => Self::Text(text),
        })
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
            "minLength": 1,
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
    fn int_or_string_round_trips() {
        let v: RotationInterval = serde_json::from_str("30").unwrap();
        assert_eq!(v, RotationInterval::Days(30));
        let v: RotationInterval = serde_json::from_str("\"12h\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"12h\"");
    }
}
