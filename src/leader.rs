//! Leader election on a coordination.k8s.io Lease (kube-lease-manager): with several
//! replicas exactly one reconciles; the others stand by and take over when the
//! holder stops renewing (at most the lease duration later).

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

/// Where and how the lease is held.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration_secs: u64,
    pub grace_secs: u64,
}

/// Waits until this replica holds the lease; the receiver then says whether it still does.
pub async fn acquire(
    client: Client,
    s: &LeaseSettings,
) -> Result<watch::Receiver<bool>, kube_lease_manager::LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, &s.name)
        .with_namespace(&s.namespace)
        .with_identity(&s.identity)
        .with_duration(s.duration_secs)
        .with_grace(s.grace_secs)
        .with_field_manager(format!("rotor-lease-{}", s.identity))
        .build()
        .await?;
    let (mut holding, task) = manager.watch().await;
    // The task runs as long as the receiver lives; it stays detached on purpose.
    drop(task);
    tracing::info!(lease = %s.name, namespace = %s.namespace, identity = %s.identity, "waiting for leadership");
    while !*holding.borrow_and_update() {
        if holding.changed().await.is_err() {
            break;
        }
    }
    tracing::info!(lease = %s.name, identity = %s.identity, "acquired leadership");
    Ok(holding)
}

/// Resolves when the lease is lost.
pub async fn lost(mut holding: watch::Receiver<bool>) {
    loop {
        if !*holding.borrow_and_update() {
            return;
        }
        if holding.changed().await.is_err() {
            return;
        }
    }
}
