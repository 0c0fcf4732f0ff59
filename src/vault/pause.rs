//! Test-only pause points of the vault (the controller's failpoints are a layer above,
//! out of the vault's reach). `ROTOR_TEST_VAULT_PAUSE=<point>` with
//! `ROTOR_TEST_HOLD=<file>` makes every pass through `<point>` — `vault_write` (between
//! reading a vault Secret and writing it) or `kek_write` (`keys rotate`, between
//! reading `rotor-kek` and adding the new version) — wait while `<file>` exists. A
//! paused pass first creates `<file>.<point>.<pid>.<n>`, so a test knows it is there
//! and can act as a second writer. Unset (always, outside tests) it costs one
//! comparison.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a pause lasts at most when the test never lets go.
const MAX_PAUSE: Duration = Duration::from_secs(600);

fn configured() -> Option<&'static (String, PathBuf)> {
    static SPEC: OnceLock<Option<(String, PathBuf)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let point = std::env::var("ROTOR_TEST_VAULT_PAUSE").ok()?;
        let hold = std::env::var_os("ROTOR_TEST_HOLD")?;
        Some((point, hold.into()))
    })
    .as_ref()
}

/// Waits here while the hold file exists, when `point` is the configured one.
pub(super) async fn point(point: &str) {
    let Some((p, hold)) = configured() else {
        return;
    };
    if p != point || !hold.exists() {
        return;
    }
    static PASSES: AtomicU32 = AtomicU32::new(0);
    let n = PASSES.fetch_add(1, Ordering::SeqCst);
    let mut marker = hold.clone().into_os_string();
    marker.push(format!(".{point}.{}.{n}", std::process::id()));
    let _ = std::fs::write(&marker, b"paused");
    tracing::warn!(
        point,
        "vault pause point reached; going on once the hold file is gone"
    );
    let start = Instant::now();
    while hold.exists() && start.elapsed() < MAX_PAUSE {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
