//! The waits a vendor asks for in headers (`Retry-After`, `X-RateLimit-Reset`), read
//! without ever panicking and capped at a year.

use reqwest::header::HeaderMap;
use std::time::Duration;

/// The longest wait a vendor's header is read as (anything longer is "forever").
pub(super) const WAIT_CEILING: Duration = Duration::from_secs(365 * 24 * 3600);

/// A wait a vendor asked for in a header.
#[derive(Debug, PartialEq)]
pub struct AskedWait {
    /// What rotor reads it as (at most a year; `inf` and `1e300` are a year).
    pub wait: Duration,
    /// The header as the vendor sent it, shortened and printable.
    pub said: String,
}

impl AskedWait {
    pub(super) fn describe(&self) -> String {
        let how_long = if self.wait >= WAIT_CEILING {
            "more than a year".to_string()
        } else {
            humantime::format_duration(Duration::from_secs(self.wait.as_secs())).to_string()
        };
        format!("{how_long} ({})", self.said)
    }
}

/// Seconds as a vendor wrote them, as a wait: never panics; NaN is no wait at all,
/// negative is none, anything beyond [`WAIT_CEILING`] (infinity included) is the ceiling.
fn seconds(secs: f64) -> Option<Duration> {
    if secs.is_nan() {
        return None;
    }
    if secs <= 0.0 {
        return Some(Duration::ZERO);
    }
    Some(
        Duration::try_from_secs_f64(secs.min(WAIT_CEILING.as_secs_f64()))
            .unwrap_or(WAIT_CEILING)
            .min(WAIT_CEILING),
    )
}

fn printable(name: &str, value: &str) -> String {
    let shown: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(40)
        .collect();
    format!("{name}: {shown}")
}

/// How long the server asked rotor to wait: `Retry-After` (seconds or an HTTP date)
/// or `X-RateLimit-Reset` (seconds to wait, or a unix time in seconds or ms).
pub fn requested_wait(headers: &HeaderMap) -> Option<AskedWait> {
    retry_after(headers).or_else(|| reset_wait(headers))
}

/// `Retry-After` (seconds, fractional seconds or an HTTP date) as a wait.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<AskedWait> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(v) = header("retry-after") {
        let wait = match v.parse::<f64>() {
            Ok(secs) => seconds(secs),
            Err(_) => chrono::DateTime::parse_from_rfc2822(v).ok().map(|at| {
                (at.with_timezone(&chrono::Utc) - vendor_now(headers))
                    .to_std()
                    .unwrap_or_default()
                    .min(WAIT_CEILING)
            }),
        };
        if let Some(wait) = wait {
            return Some(AskedWait {
                wait,
                said: printable("Retry-After", v),
            });
        }
    }
    None
}

/// The time now as the vendor's clock has it, for its absolute times: its `Date`
/// header when that is within a day of the local clock (a vendor whose clock is off
/// by minutes still means "in 30 s" by "now + 30 s"), else the local clock.
fn vendor_now(headers: &HeaderMap) -> chrono::DateTime<chrono::Utc> {
    let local = chrono::Utc::now();
    headers
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v.trim()).ok())
        .map(|d| d.with_timezone(&chrono::Utc))
        .filter(|d| (*d - local).abs() <= chrono::TimeDelta::days(1))
        .unwrap_or(local)
}

/// `X-RateLimit-Reset` as a wait: seconds to wait, or a unix time in seconds or ms
/// (counted from the vendor's `Date`). A unix time already past says nothing: it is
/// never read as a window of no length.
pub(super) fn reset_wait(headers: &HeaderMap) -> Option<AskedWait> {
    let raw = headers
        .get("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)?;
    let reset = raw.parse::<f64>().ok()?;
    let now_ms = vendor_now(headers).timestamp_millis() as f64;
    let secs = if reset > 1e12 {
        (reset - now_ms) / 1000.0
    } else if reset > 1e9 {
        reset - now_ms / 1000.0
    } else {
        reset
    };
    if reset > 1e9 && secs <= 0.0 {
        return None;
    }
    Some(AskedWait {
        wait: seconds(secs)?,
        said: printable("X-RateLimit-Reset", raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn wait_of(pairs: &[(&'static str, &str)]) -> Option<Duration> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        requested_wait(&h).map(|a| a.wait)
    }

    #[test]
    fn waits_from_headers() {
        assert_eq!(
            wait_of(&[("retry-after", "7")]),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            wait_of(&[("retry-after", "1.5")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            wait_of(&[("x-ratelimit-reset", "3")]),
            Some(Duration::from_secs(3))
        );
        let at = chrono::Utc::now().timestamp() + 5;
        let w = wait_of(&[("x-ratelimit-reset", &at.to_string())]).unwrap();
        assert!(
            w <= Duration::from_secs(5) && w >= Duration::from_secs(3),
            "{w:?}"
        );
        let at_ms = chrono::Utc::now().timestamp_millis() + 5000;
        let w = wait_of(&[("x-ratelimit-reset", &at_ms.to_string())]).unwrap();
        assert!(
            w <= Duration::from_secs(5) && w >= Duration::from_secs(3),
            "{w:?}"
        );
        let date = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let w = wait_of(&[("retry-after", &date)]).unwrap();
        assert!(
            w <= Duration::from_secs(30) && w >= Duration::from_secs(28),
            "{w:?}"
        );
        let past = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(wait_of(&[("retry-after", past)]), Some(Duration::ZERO));
        let far = "Fri, 31 Dec 9999 23:59:59 GMT";
        assert_eq!(wait_of(&[("retry-after", far)]), Some(WAIT_CEILING));
        assert_eq!(wait_of(&[]), None);
    }

    #[test]
    fn absolute_times_count_from_the_vendors_date() {
        let within = |w: Option<Duration>, secs: u64| {
            w.is_some_and(|w| {
                w <= Duration::from_secs(secs + 1) && w >= Duration::from_secs(secs - 2)
            })
        };
        // The vendor's clock is an hour behind: its reset "in 30 s" is 30 s away.
        let vendor = chrono::Utc::now() - chrono::Duration::hours(1);
        let date = vendor.to_rfc2822();
        let at = (vendor.timestamp() + 30).to_string();
        let w = wait_of(&[("date", &date), ("x-ratelimit-reset", &at)]);
        assert!(within(w, 30), "{w:?}");
        let at_ms = (vendor.timestamp_millis() + 30_000).to_string();
        let w = wait_of(&[("date", &date), ("x-ratelimit-reset", &at_ms)]);
        assert!(within(w, 30), "{w:?}");
        let retry = (vendor + chrono::Duration::seconds(30)).to_rfc2822();
        let w = wait_of(&[("date", &date), ("retry-after", &retry)]);
        assert!(within(w, 30), "{w:?}");
        // An hour ahead: not an hour and a half.
        let vendor = chrono::Utc::now() + chrono::Duration::hours(1);
        let at = (vendor.timestamp() + 30).to_string();
        let w = wait_of(&[("date", &vendor.to_rfc2822()), ("x-ratelimit-reset", &at)]);
        assert!(within(w, 30), "{w:?}");
        // A Date more than a day off is not believed: the local clock counts.
        let far = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc2822();
        let at = (chrono::Utc::now().timestamp() + 30).to_string();
        let w = wait_of(&[("date", &far), ("x-ratelimit-reset", &at)]);
        assert!(within(w, 30), "{w:?}");
        // A unix reset in the past is no window of no length: nothing is read.
        let past = (chrono::Utc::now().timestamp() - 600).to_string();
        assert_eq!(wait_of(&[("x-ratelimit-reset", &past)]), None);
        let past_ms = (chrono::Utc::now().timestamp_millis() - 600_000).to_string();
        assert_eq!(wait_of(&[("x-ratelimit-reset", &past_ms)]), None);
    }

    #[test]
    fn hostile_wait_headers_never_panic() {
        let ceiling = Some(WAIT_CEILING);
        for header in ["retry-after", "x-ratelimit-reset"] {
            for huge in [
                "1e300",
                "inf",
                "+inf",
                "Infinity",
                "1e20",
                "18446744073709551616",
            ] {
                assert_eq!(wait_of(&[(header, huge)]), ceiling, "{header}: {huge}");
            }
            for none in ["-5", "-inf", "0", "-1e300"] {
                assert_eq!(
                    wait_of(&[(header, none)]),
                    Some(Duration::ZERO),
                    "{header}: {none}"
                );
            }
            for ignored in ["NaN", "nan", "soon", ""] {
                assert_eq!(wait_of(&[(header, ignored)]), None, "{header}: {ignored}");
            }
        }
        // A NaN Retry-After does not hide a reset header.
        assert_eq!(
            wait_of(&[("retry-after", "NaN"), ("x-ratelimit-reset", "2")]),
            Some(Duration::from_secs(2))
        );
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1e300"));
        let asked = requested_wait(&h).unwrap();
        assert_eq!(
            asked.describe(),
            "more than a year (X-RateLimit-Reset: 1e300)"
        );
    }
}
