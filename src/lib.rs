//! rotor: a Kubernetes operator that rotates credentials with zero downtime.
//!
//! - [`api`]: the `SecretRotation` custom resource (the CRD schema's source).
//! - [`rotation`]: the pure core: the dual-phase state machine, the schedule and the
//!   provider contract.
//! - [`providers`]: where credentials come from, one module per provider.
//! - [`vault`]: envelope-encrypted storage of every issued credential, and the audit trail.
//! - [`controller`]: the Kubernetes shell: watch, reconcile, Secret, status, Events.
//! - [`notify`]: signed webhook notifications.
//! - [`metrics`], [`admin`], [`leader`]: the operator's plumbing (Prometheus metrics,
//!   the health and metrics server, leader election).

pub mod admin;
pub mod api;
pub mod controller;
pub mod kube_client;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod providers;
pub mod rotation;
pub mod vault;
