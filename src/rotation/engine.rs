//! The provider calls of one rotation, in their safe order.

use super::RotationPlan;
use super::{Credential, IssueRequest, Provider, ProviderError, Revocation, Stash};

/// Why a rotation did not produce a usable credential. In every case the active
/// credential is untouched.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("revoking the credential in the target slot failed: {0}")]
    RevokeOld(#[source] ProviderError),
    #[error("issuing a new credential failed: {0}")]
    Issue(#[source] ProviderError),
    #[error("the new credential failed its test and was revoked: {0}")]
    Test(#[source] ProviderError),
}

/// A step of a rotation that has just happened (for the audit trail and crash tests).
#[derive(Clone, Copy)]
pub enum Step<'a> {
    RevokedOld(&'a str),
    /// The provider cannot revoke: the old credential stays valid at the vendor.
    NotRevoked(&'a str),
    Issued(&'a Credential),
    Resumed(&'a Credential),
    Tested(&'a Credential),
    TestFailed(&'a Credential),
}

/// Told about every step as it happens.
#[async_trait::async_trait]
pub trait Observer: Send + Sync {
    async fn step(&self, step: Step<'_>);
}

/// An observer that ignores everything.
pub struct Silent;

#[async_trait::async_trait]
impl Observer for Silent {
    async fn step(&self, _: Step<'_>) {}
}

#[async_trait::async_trait]
impl<T: Observer + ?Sized> Observer for &T {
    async fn step(&self, step: Step<'_>) {
        (**self).step(step).await;
    }
}

/// Two observers, told in order: each concern (the audit trail, crash points) is its
/// own observer, so removing one never removes the other.
#[async_trait::async_trait]
impl<A: Observer, B: Observer> Observer for (A, B) {
    async fn step(&self, step: Step<'_>) {
        self.0.step(step).await;
        self.1.step(step).await;
    }
}

/// Revokes what the target slot still holds, issues a new credential named `name`
/// (kept in `stash` the moment it exists), and tests it. With `existing` — the
/// credential a dead rotation already issued and kept — nothing is revoked or issued
/// again: it is only tested. A credential that fails its test is revoked at once.
pub async fn execute<P: Provider + ?Sized>(
    provider: &P,
    plan: &RotationPlan,
    name: &str,
    stash: &dyn Stash,
    existing: Option<Credential>,
    observer: &dyn Observer,
) -> Result<Credential, RotationError> {
    let credential = match existing {
        Some(credential) => {
            observer.step(Step::Resumed(&credential)).await;
            credential
        }
        None => {
            if let Some(old) = &plan.revoke_before_issue {
                let outcome = provider
                    .revoke(old)
                    .await
                    .map_err(RotationError::RevokeOld)?;
                if outcome == Revocation::Unsupported {
                    observer.step(Step::NotRevoked(old)).await;
                } else {
                    observer.step(Step::RevokedOld(old)).await;
                }
            }
            let request = IssueRequest {
                name,
                slot: plan.target,
                stash,
            };
            let credential = provider
                .issue(&request)
                .await
                .map_err(RotationError::Issue)?;
            observer.step(Step::Issued(&credential)).await;
            credential
        }
    };
    if let Err(e) = provider.test(&credential).await {
        observer.step(Step::TestFailed(&credential)).await;
        if let Err(revoke) = provider.revoke(&credential.id).await {
            tracing::warn!(id = %credential.id, error = %revoke, "revoking the credential that failed its test failed; the orphan sweep will retry");
        }
        return Err(RotationError::Test(e));
    }
    observer.step(Step::Tested(&credential)).await;
    Ok(credential)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Strategy;
    use crate::rotation::{Slot, SlotPair};
    use async_trait::async_trait;
    use secrecy::SecretString;
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    /// A provider that remembers which credentials are live.
    #[derive(Default)]
    struct Fake {
        live: Mutex<BTreeSet<String>>,
        issued: Mutex<u32>,
        fail_test: bool,
        fail_issue: bool,
    }

    #[async_trait]
    impl Provider for Fake {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn outputs(&self) -> &'static [&'static str] {
            &["value"]
        }
        fn secret_output(&self) -> &'static str {
            "value"
        }
        async fn issue(&self, request: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
            let name = request.name;
            if self.fail_issue {
                return Err(ProviderError::Unavailable("down".into()));
            }
            *self.issued.lock().unwrap() += 1;
            self.live.lock().unwrap().insert(name.into());
            Ok(Credential::single(
                name,
                "value",
                SecretString::from(format!("v-{name}")),
            ))
        }
        async fn test(&self, c: &Credential) -> Result<(), ProviderError> {
            if self.fail_test || !self.live.lock().unwrap().contains(&c.id) {
                return Err(ProviderError::TestFailed("401".into()));
            }
            Ok(())
        }
        async fn revoke(&self, id: &str) -> Result<Revocation, ProviderError> {
            Ok(if self.live.lock().unwrap().remove(id) {
                Revocation::Revoked
            } else {
                Revocation::AlreadyGone
            })
        }
        async fn list_own(&self, prefix: &str) -> Result<Vec<String>, ProviderError> {
            Ok(self
                .live
                .lock()
                .unwrap()
                .iter()
                .filter(|i| i.starts_with(prefix))
                .cloned()
                .collect())
        }
    }

    async fn rotate(fake: &Fake, pair: &mut SlotPair, n: u32) -> Result<(), RotationError> {
        let plan = pair.plan(Strategy::DualPhase);
        let c = execute(
            fake,
            &plan,
            &format!("rotor-c{n}"),
            &crate::rotation::NoStash,
            None,
            &Silent,
        )
        .await?;
        pair.complete(
            &plan,
            Slot {
                id: c.id.clone(),
                fingerprint: c.fingerprint(),
                issued_at: chrono::Utc::now(),
                revoked_at: None,
            },
        );
        Ok(())
    }

    #[tokio::test]
    async fn at_most_two_credentials_live_and_both_slots_valid() {
        let fake = Fake::default();
        let mut pair = SlotPair::default();
        for n in 1..=6 {
            rotate(&fake, &mut pair, n).await.unwrap();
            let live = fake.list_own("rotor-").await.unwrap();
            assert!(live.len() <= 2, "{live:?}");
            assert!(live.contains(&pair.active_slot().unwrap().id));
            if n > 1 {
                assert!(live.contains(&pair.previous_slot().unwrap().id));
            }
        }
        assert_eq!(*fake.issued.lock().unwrap(), 6);
    }

    #[tokio::test]
    async fn failed_test_revokes_new_and_keeps_active() {
        let ok = Fake::default();
        let mut pair = SlotPair::default();
        rotate(&ok, &mut pair, 1).await.unwrap();
        let broken = Fake {
            fail_test: true,
            live: Mutex::new(ok.live.lock().unwrap().clone()),
            ..Fake::default()
        };
        let before = pair.clone();
        let err = rotate(&broken, &mut pair, 2).await.unwrap_err();
        assert!(matches!(err, RotationError::Test(_)));
        assert_eq!(pair, before);
        assert_eq!(
            broken.list_own("rotor-").await.unwrap(),
            vec!["rotor-c1".to_string()]
        );
    }

    #[tokio::test]
    async fn a_kept_credential_is_resumed_not_issued_again() {
        let fake = Fake::default();
        let mut pair = SlotPair::default();
        rotate(&fake, &mut pair, 1).await.unwrap();
        // A dead rotation issued rotor-c2 and kept it; the resumed one only tests it.
        let kept = fake
            .issue(&IssueRequest {
                name: "rotor-c2",
                slot: 1,
                stash: &crate::rotation::NoStash,
            })
            .await
            .unwrap();
        let plan = pair.plan(Strategy::DualPhase);
        let c = execute(
            &fake,
            &plan,
            "rotor-c2",
            &crate::rotation::NoStash,
            Some(kept),
            &Silent,
        )
        .await
        .unwrap();
        assert_eq!(c.id, "rotor-c2");
        assert_eq!(*fake.issued.lock().unwrap(), 2, "no second issue");
    }

    #[tokio::test]
    async fn failed_issue_changes_nothing() {
        let fake = Fake {
            fail_issue: true,
            ..Fake::default()
        };
        let mut pair = SlotPair::default();
        assert!(matches!(
            rotate(&fake, &mut pair, 1).await,
            Err(RotationError::Issue(_))
        ));
        assert_eq!(pair, SlotPair::default());
    }
}
