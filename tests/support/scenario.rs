//! Steps the provider and vault tests share.

use super::Operator;
use super::fakes;
use super::kube_util::*;
use kube::Client;
use rotor::api::{RotationPhase, SecretRotationStatus};

/// Operator flags for talking to fakes on 127.0.0.1 with short waits.
pub const FAST: &[&str] = &[
    "--allow-private-endpoints",
    "--http-backoff",
    "50ms",
    "--http-max-retries",
    "2",
    "--poll-interval",
    "100ms",
    "--update-timeout",
    "15s",
];

/// The value under `key` in Secret `secret`.
pub async fn value(client: &Client, ns: &str, secret: &str, key: &str) -> Option<String> {
    get_secret(client, ns, secret)
        .await
        .and_then(|s| secret_value(&s, key))
}

/// Sets a request annotation (`rotor.dev/rotate`, `rotor.dev/revoke`, ...).
pub async fn request(client: &Client, ns: &str, name: &str, annotation: &str, token: &str) {
    patch_rotation(
        client,
        ns,
        name,
        serde_json::json!({"metadata": {"annotations": {annotation: token}}}),
    )
    .await;
}

/// Waits for the `count`-th completed rotation.
pub async fn rotated(client: &Client, ns: &str, name: &str, count: u64) -> SecretRotationStatus {
    wait_status(client, ns, name, 60, &format!("rotation {count}"), |s| {
        s.rotation_count == count && s.rotation_status == RotationPhase::Success
    })
    .await
    .status
    .unwrap()
}

/// "Nothing rotated": waits until rotor has reconciled `generation` *and* is at rest —
/// `Success`, no rotation in flight — then asserts that no rotation was attempted since
/// `before` (same `lastRotationAttemptedAt`, count and slots). Waiting for
/// `observedGeneration` alone is not enough: a rotation's intent write sets it while the
/// count, slots and Secret are still unchanged.
pub async fn settled_without_rotation(
    client: &Client,
    ns: &str,
    name: &str,
    generation: Option<i64>,
    before: &SecretRotationStatus,
) -> SecretRotationStatus {
    let s = wait_status(client, ns, name, 90, "reconciled and at rest", |s| {
        s.observed_generation == generation
            && s.rotation_status == RotationPhase::Success
            && s.in_flight.is_none()
    })
    .await
    .status
    .unwrap();
    assert_eq!(
        s.last_rotation_attempted_at, before.last_rotation_attempted_at,
        "{name}: a rotation was attempted"
    );
    assert_eq!(
        s.rotation_count, before.rotation_count,
        "{name}: rotated again"
    );
    assert_eq!(s.slots, before.slots, "{name}: the slots changed");
    s
}

/// Waits until the resource is `Failed` (a refusal or a failed rotation); its status.
pub async fn failed(client: &Client, ns: &str, name: &str) -> SecretRotationStatus {
    wait_status(client, ns, name, 60, "failed", |s| {
        s.rotation_status == RotationPhase::Failed
    })
    .await
    .status
    .unwrap()
}

/// Asks for one rotation and waits until it is the `count`-th.
pub async fn rotate(
    client: &Client,
    ns: &str,
    name: &str,
    token: &str,
    count: u64,
) -> SecretRotationStatus {
    request(client, ns, name, "rotor.dev/rotate", token).await;
    rotated(client, ns, name, count).await
}

/// A Supabase fake, an operator for `ns` started with `flags`, and the Supabase sample
/// applied against the fake and rotated once: the first step of most Supabase
/// scenarios. Keep the returned operator alive for the test.
pub async fn supabase_rotated(
    client: &Client,
    ns: &str,
    flags: &[&str],
) -> (fakes::Fake<fakes::Supabase>, Operator, SecretRotationStatus) {
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let op = Operator::start_with(ns, flags);
    apply_supabase_sample(client, ns, &fake).await;
    let status = rotated(client, ns, "supabase-secret-key", 1).await;
    (fake, op, status)
}

/// A sample whose previous credential may be revoked at once (`minValidity: 0s`):
/// these scenarios rotate seconds apart. The default's hold (10m) has its own test
/// (tests/consumers.rs).
pub fn revocable_at_once(sample: &str) -> String {
    assert!(
        sample.contains("\n  schedule:\n"),
        "a sample with a schedule"
    );
    sample.replacen(
        "\n  schedule:\n",
        "\n  revocation: {minValidity: 0s}\n  schedule:\n",
        1,
    )
}

/// The http sample (`config/samples/http.yaml`) pointed at the key-API `fake`, its
/// previous credential revocable at once.
pub fn http_sample(fake: &fakes::Fake<fakes::KeyApi>) -> String {
    revocable_at_once(&http_sample_as_shipped(fake))
}

/// The http sample pointed at `fake`, otherwise as shipped (default revocation).
pub fn http_sample_as_shipped(fake: &fakes::Fake<fakes::KeyApi>) -> String {
    let admin = fake.lock().admin_token.clone();
    sample("http.yaml")
        .replace("https://api.example.com", &fake.url)
        .replace("REPLACE_WITH_AN_ADMIN_TOKEN", &admin)
}

/// The http sample without its revoke request: a provider that cannot revoke.
pub fn http_sample_without_revoke(fake: &fakes::Fake<fakes::KeyApi>) -> String {
    let sample = http_sample(fake);
    let start = sample
        .find("      revoke:")
        .expect("the sample has a revoke request");
    let end = sample
        .find("      list:")
        .expect("the sample has a list request");
    format!("{}{}", &sample[..start], &sample[end..])
}

/// Applies the Supabase sample pointed at `fake`.
pub async fn apply_supabase_sample(client: &Client, ns: &str, fake: &fakes::Fake<fakes::Supabase>) {
    let admin = fake.lock().admin_token.clone();
    let manifest = revocable_at_once(&sample("supabase.yaml"))
        .replace("https://api.supabase.com", &fake.url)
        .replace("sbp_REPLACE_WITH_YOUR_PERSONAL_ACCESS_TOKEN", &admin);
    apply_yaml(client, ns, &manifest).await.unwrap();
}

/// A hold file for the test-only pause points (`ROTOR_TEST_HOLD`, with
/// `ROTOR_TEST_PAUSE_AT` for the controller's failpoints or `ROTOR_TEST_VAULT_PAUSE`
/// for the vault's): while it exists, a process that reaches its pause point waits
/// there. Removed when dropped, so a failing test never leaves a process held.
pub struct Hold(std::path::PathBuf);

impl Hold {
    /// A hold for `tag`, not armed yet.
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("rotor-hold-{tag}-{}-{n}", std::process::id()));
        let hold = Self(path);
        hold.release();
        hold.clear_markers();
        hold
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp dir")
    }

    /// From now on, a process reaching its pause point waits.
    pub fn arm(&self) {
        std::fs::write(&self.0, b"hold").unwrap();
    }

    /// Lets every waiting process go on.
    pub fn release(&self) {
        let _ = std::fs::remove_file(&self.0);
    }

    /// The marker files the vault's pause points leave (`<hold>.<point>.<pid>.<n>`).
    fn markers(&self, point: &str) -> Vec<std::path::PathBuf> {
        let prefix = format!("{}.{point}.", self.0.file_name().unwrap().to_string_lossy());
        std::fs::read_dir(self.0.parent().unwrap())
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn clear_markers(&self) {
        let prefix = format!("{}.", self.0.file_name().unwrap().to_string_lossy());
        if let Ok(dir) = std::fs::read_dir(self.0.parent().unwrap()) {
            for e in dir.filter_map(|e| e.ok()) {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Waits (bounded, 90 s) until `n` passes are paused at the vault's `point`.
    pub async fn wait_paused(&self, point: &str, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let paused = self.markers(point).len();
            if paused >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{paused} of {n} passes paused at {point} within 90s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
        self.clear_markers();
    }
}
