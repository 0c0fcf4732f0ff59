//! What the `rotor` command prints: `status`, `plan`, `audit` and `version` as a table
//! (kubectl's look, no borders), JSON or YAML; shell completion; the kubectl plugin
//! name. A client of the operator's API: it reads status and the audit trail, runs
//! no part of the operator (no provider call, no metrics, no lease).

pub mod audit;
pub mod output;
pub mod plan;
pub mod status;
pub mod version;

pub use output::{Output, OutputArgs};

use std::ffi::OsStr;
use std::path::Path;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    #[error("{kind} {name:?} not found in namespace {namespace:?}")]
    NotFound {
        kind: &'static str,
        name: String,
        namespace: String,
    },
    #[error(
        "the SecretRotation CRD is not installed in this cluster ({0}); install it with `kubectl apply -f crds/`"
    )]
    CrdMissing(#[source] kube::Error),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("writing YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

impl Error {
    /// A failed request for SecretRotations: a 404 on a list means the API server does
    /// not serve the resource at all.
    pub fn listing(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(ref status) if status.code == 404 => Self::CrdMissing(e),
            e => Self::Kube(e),
        }
    }
}

/// Where a command looks: one namespace, or all of them (`-A`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Namespace(String),
    All,
}

impl Scope {
    /// The namespace, unless all.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Self::Namespace(ns) => Some(ns),
            Self::All => None,
        }
    }
}

/// The name kubectl runs a plugin by: `kubectl rotor` finds `kubectl-rotor` on PATH.
pub const KUBECTL_PLUGIN: &str = "kubectl-rotor";

/// Whether the program was started as the kubectl plugin (`argv[0]`'s file name is
/// `kubectl-rotor`, e.g. a symlink to rotor), so help and usage say `kubectl rotor`.
pub fn invoked_as_kubectl_plugin(argv0: Option<&OsStr>) -> bool {
    argv0
        .and_then(|a| Path::new(a).file_stem())
        .is_some_and(|stem| stem == KUBECTL_PLUGIN)
}

/// `command` named for how it was invoked: as the kubectl plugin, help and usage say
/// `kubectl rotor …`.
pub fn named_for(command: clap::Command, argv0: Option<&OsStr>) -> clap::Command {
    if invoked_as_kubectl_plugin(argv0) {
        command.name(KUBECTL_PLUGIN).bin_name("kubectl rotor")
    } else {
        command
    }
}

/// The completion script of `command` for `shell`, for the program `rotor`.
pub fn completion(shell: clap_complete::Shell, command: &mut clap::Command) -> String {
    let mut script = Vec::new();
    clap_complete::generate(shell, command, "rotor", &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_is_recognised_by_its_file_name_only() {
        for argv0 in [
            "kubectl-rotor",
            "/home/me/.local/bin/kubectl-rotor",
            "kubectl-rotor.exe",
        ] {
            assert!(
                invoked_as_kubectl_plugin(Some(OsStr::new(argv0))),
                "{argv0}"
            );
        }
        for argv0 in ["rotor", "/usr/bin/rotor", "kubectl-rotorx", "kubectl"] {
            assert!(
                !invoked_as_kubectl_plugin(Some(OsStr::new(argv0))),
                "{argv0}"
            );
        }
        assert!(!invoked_as_kubectl_plugin(None));
    }

    #[test]
    fn a_list_answered_404_means_the_crd_is_missing() {
        let answer = |code| {
            kube::Error::Api(
                kube::core::Status::failure(
                    "the server could not find the requested resource",
                    "NotFound",
                )
                .with_code(code)
                .boxed(),
            )
        };
        let missing = Error::listing(answer(404)).to_string();
        assert!(missing.contains("kubectl apply -f crds/"), "{missing}");
        assert!(matches!(Error::listing(answer(403)), Error::Kube(_)));
    }
}
