//! Test-only crash points. `ROTOR_TEST_CRASH_AT=<point>@<rotation>` makes the operator
//! stop dead at that point of that rotation — it logs `failpoint reached` and hangs
//! until the test SIGKILLs it — so tests can prove that every step resumes. Unset
//! (always, outside tests) it costs one comparison.

use std::sync::OnceLock;

fn configured() -> Option<&'static (String, u64)> {
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let raw = std::env::var("ROTOR_TEST_CRASH_AT").ok()?;
        let (point, sequence) = raw.split_once('@')?;
        Some((point.to_string(), sequence.parse().ok()?))
    })
    .as_ref()
}

/// Stops here forever when this point of this rotation is the configured one.
pub async fn reached(point: &str, sequence: u64) {
    if let Some((p, s)) = configured()
        && p == point
        && *s == sequence
    {
        tracing::warn!(point, sequence, "failpoint reached; waiting to be killed");
        std::future::pending::<()>().await;
    }
}
