//! Test-only crash points. `ROTOR_TEST_CRASH_AT=<point>@<rotation>` makes the operator
//! stop dead at that point of that rotation — it logs `failpoint reached` and hangs
//! until the test SIGKILLs it — so tests can prove that every step resumes. Unset
//! (always, outside tests) it costs one comparison. `ROTOR_TEST_PAUSE_AT=<point>@<rotation>`
//! with `ROTOR_TEST_HOLD=<file>` pauses there instead — logs `failpoint paused` and goes
//! on once `<file>` no longer exists — so a test can look at the world at exactly that
//! step (before the Event and the orphan sweep that follow a flip, say). `ROTOR_TEST_PANIC`
//! (below) makes a reconcile panic instead.

use std::sync::OnceLock;

fn spec(variable: &str) -> Option<(String, u64)> {
    let raw = std::env::var(variable).ok()?;
    let (point, sequence) = raw.split_once('@')?;
    Some((point.to_string(), sequence.parse().ok()?))
}

fn configured() -> Option<&'static (String, u64)> {
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    SPEC.get_or_init(|| spec("ROTOR_TEST_CRASH_AT")).as_ref()
}

fn paused() -> Option<&'static (String, u64, std::path::PathBuf)> {
    static SPEC: OnceLock<Option<(String, u64, std::path::PathBuf)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let (point, sequence) = spec("ROTOR_TEST_PAUSE_AT")?;
        let hold = std::env::var_os("ROTOR_TEST_HOLD")?;
        Some((point, sequence, hold.into()))
    })
    .as_ref()
}

/// How long a pause lasts at most when the test never lets go (bounded, like every
/// wait in the tests).
const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(600);

/// Stops here forever when this point of this rotation is the configured one.
pub async fn reached(point: &str, sequence: u64) {
    if let Some((p, s)) = configured()
        && p == point
        && *s == sequence
    {
        tracing::warn!(point, sequence, "failpoint reached; waiting to be killed");
        std::future::pending::<()>().await;
    }
    if let Some((p, s, hold)) = paused()
        && p == point
        && *s == sequence
    {
        tracing::warn!(
            point,
            sequence,
            "failpoint paused; going on once the hold file is gone"
        );
        let start = std::time::Instant::now();
        while hold.exists() && start.elapsed() < MAX_PAUSE {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tracing::warn!(point, sequence, "failpoint released");
    }
}

/// Test-only: with `ROTOR_TEST_RELIST=<file>`, resolves once `<file>` exists (and
/// removes it): the Secrets watch then ends and lists again, as after a 410. Unset
/// (always, outside tests), never.
pub async fn relist_requested() {
    let Some(file) = std::env::var_os("ROTOR_TEST_RELIST") else {
        return std::future::pending().await;
    };
    while std::fs::remove_file(&file).is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tracing::warn!("relisting the Secrets, as asked");
}

/// The crash points inside the provider calls, told by the rotation core as its steps
/// happen: after the target slot's old credential is revoked, and after the new one
/// passed its test. (The others stand between the controller's steps.)
pub struct Checkpoints {
    pub sequence: u64,
}

#[async_trait::async_trait]
impl crate::rotation::Observer for Checkpoints {
    async fn step(&self, step: crate::rotation::Step<'_>) {
        use crate::rotation::Step;
        match step {
            Step::RevokedOld(_) => reached("after_revoke_old", self.sequence).await,
            Step::Tested(_) => reached("after_test", self.sequence).await,
            _ => {}
        }
    }
}

/// `ROTOR_TEST_PANIC=<name>` makes every reconcile of the SecretRotation `<name>` panic,
/// so tests can prove that a panicking reconcile takes neither the process nor the
/// other resources with it.
pub fn panic_if_configured(name: &str) {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    let configured = NAME.get_or_init(|| std::env::var("ROTOR_TEST_PANIC").ok());
    if configured.as_deref() == Some(name) {
        panic!("failpoint: a reconcile panicked");
    }
}
