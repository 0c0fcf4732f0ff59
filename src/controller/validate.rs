//! Step one of every reconcile: turn the raw spec into a checked value. Later steps
//! never see raw user input, and every error names the field and how to fix it.

use crate::api::{
    ConsumersSpec, IntervalError, MAX_NAMED_WORKLOADS, SecretRotationSpec, Strategy, TimeSpan,
    WebhookSpec,
};
use crate::providers::{self, BuildContext};
use crate::rotation::{MIN_INTERVAL, RevocationPolicy, Schedule};
use crate::rotation::{Provider, ProviderError};
use std::time::Duration;

/// A spec that passed every check.
pub struct ValidSpec {
    pub provider: Box<dyn Provider>,
    pub strategy: Strategy,
    pub schedule: Schedule,
    /// (provider output, Secret key), in a stable order.
    pub mapping: Vec<(String, String)>,
    pub keep_previous: bool,
    /// The workloads to restart and follow (`None`: no consumers named).
    pub consumers: Option<ConsumersSpec>,
    /// When the previous credential may be revoked.
    pub revocation: RevocationPolicy,
    /// spec.maxAge.
    pub max_age: Option<Duration>,
    /// spec.notify.webhook (its URL passed the private-address rule).
    pub webhook: Option<WebhookSpec>,
}

/// What is wrong with a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("spec.schedule: {0}")]
    Interval(#[from] IntervalError),
    #[error("spec.schedule.rotationInterval {0} is shorter than the minimum of 10s")]
    IntervalTooShort(String),
    #[error(
        "spec.schedule.rotateAtUtc {hours}:{minutes:02} is not a time of day (hours 0-23, minutes 0-59)"
    )]
    TimeOfDay { hours: u8, minutes: u8 },
    #[error("spec.provider: {0}")]
    Provider(#[from] ProviderError),
    #[error("spec.strategy {strategy:?} is not supported by the {provider} provider")]
    Strategy {
        strategy: Strategy,
        provider: &'static str,
    },
    #[error(
        "spec.secretsMapping is empty: map at least one output of the {provider} provider ({outputs}) to a Secret key"
    )]
    EmptyMapping {
        provider: &'static str,
        outputs: String,
    },
    #[error(
        "spec.secretsMapping names output {output:?}, which the {provider} provider does not have (it has: {outputs})"
    )]
    UnknownOutput {
        output: String,
        provider: &'static str,
        outputs: String,
    },
    #[error(
        "spec.secretsMapping key {0:?} is not a valid Secret key (letters, digits, '-', '_' and '.', at most 253)"
    )]
    BadKey(String),
    #[error(
        "spec.secretsMapping writes Secret key {0:?} more than once (keepPrevious adds <KEY>_PREVIOUS)"
    )]
    DuplicateKey(String),
    #[error(
        "{field} points to namespace {namespace:?}: rotor reads Secrets only from the SecretRotation's own namespace"
    )]
    CrossNamespace { field: String, namespace: String },
    #[error("{0} is also the target Secret: rotor would overwrite the credential it needs")]
    RefIsTarget(String),
    #[error(
        "{field} {name:?} is not a valid Secret name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"
    )]
    BadName { field: &'static str, name: String },
    #[error(
        "spec.target.name {0:?} starts with {1:?}, which is reserved for rotor's escrow Secrets: choose another name"
    )]
    ReservedTarget(String, &'static str),
    #[error(
        "spec.target.template.labels sets {0:?}: labels under rotor.dev/ are rotor's own (they decide which Secrets rotor watches): remove it"
    )]
    ReservedLabel(String),
    #[error(
        "spec.notify.webhook.signingSecretRef names {0:?}, which {1}: a signing key is sent to the webhook's owner as signatures, so it must be a Secret of its own"
    )]
    SigningKeyShared(String, &'static str),
    #[error(
        "{field} key {key:?} is not a valid Secret key (letters, digits, '-', '_' and '.', not \".\" or \"..\", at most 253)"
    )]
    BadRefKey { field: &'static str, key: String },
    #[error(
        "spec.secretsMapping key {0:?} is too long with keepPrevious: {0}_PREVIOUS passes 253 characters"
    )]
    PreviousKeyTooLong(String),
    #[error(
        "{field} {text:?} is not a duration: use units w, d, h, m, s (for example 1h, 10m, 45d, 0s)"
    )]
    Span { field: &'static str, text: String },
    #[error("{field} must be longer than zero")]
    ZeroSpan { field: &'static str },
    #[error(
        "spec.consumers.workloads names {0} workloads; at most 32 (name more with spec.consumers.selector)"
    )]
    TooManyWorkloads(usize),
    #[error("spec.consumers.workloads names {0} twice")]
    DuplicateWorkload(String),
    #[error("spec.notify.webhook.url: {0}")]
    Webhook(String),
    #[error(
        "spec.target.template.type {wanted:?} differs from the type {existing:?} of the existing target Secret, and a Secret's type cannot change: keep {existing:?}, or delete the Secret so rotor recreates it"
    )]
    TypeChange { existing: String, wanted: String },
}

/// Starts of every escrow Secret's name (`rotor-escrow-<resource>`, see
/// `crate::vault`), and of its name before the escrow (`rotor-vault-<resource>`).
const RESERVED_PREFIXES: [&str; 2] = ["rotor-escrow-", "rotor-vault-"];

/// The reserved prefix `name` starts with, if any.
fn reserved_prefix(name: &str) -> Option<&'static str> {
    RESERVED_PREFIXES.into_iter().find(|p| name.starts_with(p))
}

/// Checks the names a spec puts into API URL paths (the target Secret, every Secret
/// it reads) and the keys it writes. Pure and cheap: runs before any API call, so a
/// name such as `x?dryRun=All` never reaches a request.
pub fn check_names(spec: &SecretRotationSpec) -> Result<(), SpecError> {
    let target = &spec.target.name;
    if !is_dns1123_subdomain(target) {
        return Err(SpecError::BadName {
            field: "spec.target.name",
            name: target.clone(),
        });
    }
    if let Some(prefix) = reserved_prefix(target) {
        return Err(SpecError::ReservedTarget(target.clone(), prefix));
    }
    // A template label such as rotor.dev/escrow would take the target Secret out of
    // rotor's watch (its selector excludes escrows): its deletion would go unseen.
    let labels = spec.target.template.iter().flat_map(|t| t.labels.keys());
    if let Some(reserved) = labels.into_iter().find(|k| k.starts_with("rotor.dev/")) {
        return Err(SpecError::ReservedLabel(reserved.clone()));
    }
    for r in spec.provider.secret_refs() {
        if !is_dns1123_subdomain(&r.name) {
            return Err(SpecError::BadName {
                field: "a Secret reference in spec.provider",
                name: r.name.clone(),
            });
        }
        if !is_secret_key(&r.key) {
            return Err(SpecError::BadRefKey {
                field: "a Secret reference in spec.provider",
                key: r.key.clone(),
            });
        }
    }
    let webhook_ref = spec
        .notify
        .as_ref()
        .and_then(|n| n.webhook.as_ref())
        .map(|w| &w.signing_secret_ref);
    if let Some(r) = webhook_ref {
        if !is_dns1123_subdomain(&r.name) {
            return Err(SpecError::BadName {
                field: "spec.notify.webhook.signingSecretRef.name",
                name: r.name.clone(),
            });
        }
        if !is_secret_key(&r.key) {
            return Err(SpecError::BadRefKey {
                field: "spec.notify.webhook.signingSecretRef.key",
                key: r.key.clone(),
            });
        }
        // Anyone who reads the webhook sees HMACs under this key, and may guess it
        // offline: never a Secret that holds a credential rotor uses or keeps.
        if spec.provider.secret_refs().iter().any(|p| p.name == r.name) {
            return Err(SpecError::SigningKeyShared(
                r.name.clone(),
                "spec.provider also reads (a provider credential)",
            ));
        }
        if reserved_prefix(&r.name).is_some() {
            return Err(SpecError::SigningKeyShared(
                r.name.clone(),
                "is reserved for rotor's escrow Secrets",
            ));
        }
    }
    if let Some(c) = &spec.consumers {
        for w in &c.workloads {
            if !is_dns1123_subdomain(&w.name) {
                return Err(SpecError::BadName {
                    field: "spec.consumers.workloads[].name",
                    name: w.name.clone(),
                });
            }
        }
    }
    for key in spec.secrets_mapping.values() {
        if !is_secret_key(key) {
            return Err(SpecError::BadKey(key.clone()));
        }
        if spec.target.keep_previous && previous_key(key).len() > MAX_KEY_LEN {
            return Err(SpecError::PreviousKeyTooLong(key.clone()));
        }
    }
    Ok(())
}

/// A Secret's type cannot change: `wanted` (spec.target.template.type, default
/// Opaque) must match the type of the existing target Secret, if there is one.
pub fn check_type_change(existing: Option<&str>, wanted: Option<&str>) -> Result<(), SpecError> {
    let normalize = |t: Option<&str>| match t {
        None | Some("") => "Opaque".to_string(),
        Some(t) => t.to_string(),
    };
    match existing {
        None => Ok(()),
        Some(existing) if normalize(Some(existing)) == normalize(wanted) => Ok(()),
        Some(existing) => Err(SpecError::TypeChange {
            existing: normalize(Some(existing)),
            wanted: normalize(wanted),
        }),
    }
}

/// Checks a spec; `ctx` carries the resolved Secrets the provider reads.
pub fn validate(spec: &SecretRotationSpec, ctx: &BuildContext<'_>) -> Result<ValidSpec, SpecError> {
    check_names(spec)?;
    let interval = spec.schedule.rotation_interval.duration()?;
    if interval < MIN_INTERVAL {
        return Err(SpecError::IntervalTooShort(
            spec.schedule.rotation_interval.to_string(),
        ));
    }
    let at_utc = match spec.schedule.rotate_at_utc {
        Some(t) if t.hours > 23 || t.minutes > 59 => {
            return Err(SpecError::TimeOfDay {
                hours: t.hours,
                minutes: t.minutes,
            });
        }
        Some(t) => Some((t.hours, t.minutes)),
        None => None,
    };
    let provider = providers::build(&spec.provider, ctx)?;
    let strategy = spec.strategy.unwrap_or_else(|| provider.default_strategy());
    if !provider.supports(strategy) {
        return Err(SpecError::Strategy {
            strategy,
            provider: provider.kind(),
        });
    }
    let outputs = provider.outputs().join(", ");
    if spec.secrets_mapping.is_empty() {
        return Err(SpecError::EmptyMapping {
            provider: provider.kind(),
            outputs,
        });
    }
    let mut keys = std::collections::BTreeSet::new();
    let mut mapping = Vec::new();
    for (output, key) in &spec.secrets_mapping {
        if !provider.outputs().contains(&output.as_str()) {
            return Err(SpecError::UnknownOutput {
                output: output.clone(),
                provider: provider.kind(),
                outputs,
            });
        }
        if !is_secret_key(key) {
            return Err(SpecError::BadKey(key.clone()));
        }
        let mut written = vec![key.clone()];
        if spec.target.keep_previous {
            written.push(previous_key(key));
        }
        for k in written {
            if !keys.insert(k.clone()) {
                return Err(SpecError::DuplicateKey(k));
            }
        }
        mapping.push((output.clone(), key.clone()));
    }
    let consumers = match &spec.consumers {
        Some(c) if c.is_set() => Some(check_consumers(c)?),
        _ => None,
    };
    let revocation = revocation_policy(spec)?;
    let max_age = match &spec.max_age {
        Some(span) => Some(nonzero_span("spec.maxAge", span)?),
        None => None,
    };
    let webhook = spec.notify.as_ref().and_then(|n| n.webhook.clone());
    if let Some(hook) = &webhook {
        if hook.signing_secret_ref.name == spec.target.name {
            return Err(SpecError::RefIsTarget(
                "spec.notify.webhook.signingSecretRef".into(),
            ));
        }
        ctx.http
            .check_url(&hook.url)
            .map_err(|e| SpecError::Webhook(e.to_string()))?;
    }
    Ok(ValidSpec {
        provider,
        strategy,
        schedule: Schedule {
            interval,
            at_utc,
            auto: spec.schedule.auto_rotation,
        },
        mapping,
        keep_previous: spec.target.keep_previous,
        consumers,
        revocation,
        max_age,
        webhook,
    })
}

/// A duration field: any span, zero allowed.
fn span(field: &'static str, span: &TimeSpan) -> Result<Duration, SpecError> {
    span.duration().map_err(|_| SpecError::Span {
        field,
        text: span.0.chars().take(32).collect(),
    })
}

fn nonzero_span(field: &'static str, s: &TimeSpan) -> Result<Duration, SpecError> {
    match span(field, s)? {
        d if d.is_zero() => Err(SpecError::ZeroSpan { field }),
        d => Ok(d),
    }
}

/// spec.revocation with its defaults.
fn revocation_policy(spec: &SecretRotationSpec) -> Result<RevocationPolicy, SpecError> {
    let mut policy = RevocationPolicy::default();
    if let Some(r) = &spec.revocation {
        policy.after = r.after;
        policy.on_timeout = r.on_timeout;
        if let Some(s) = &r.max_wait {
            policy.max_wait = nonzero_span("spec.revocation.maxWait", s)?;
        }
        if let Some(s) = &r.min_validity {
            policy.min_validity = span("spec.revocation.minValidity", s)?;
        }
    }
    Ok(policy)
}

/// spec.consumers: at most 32 named, none twice.
fn check_consumers(c: &ConsumersSpec) -> Result<ConsumersSpec, SpecError> {
    if c.workloads.len() > MAX_NAMED_WORKLOADS {
        return Err(SpecError::TooManyWorkloads(c.workloads.len()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for w in &c.workloads {
        if !seen.insert(w) {
            return Err(SpecError::DuplicateWorkload(format!(
                "{}/{}",
                w.kind.as_str(),
                w.name
            )));
        }
    }
    Ok(c.clone())
}

/// The key holding the previous value of `key`.
pub fn previous_key(key: &str) -> String {
    format!("{key}_PREVIOUS")
}

/// Longest Secret key and longest Secret name.
const MAX_KEY_LEN: usize = 253;

/// A valid key of a Secret's data, as the API server checks it.
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A DNS-1123 subdomain, which every Secret name must be (and which can carry no
/// `/`, `?`, `#` or `%` into a URL path).
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_KEY_LEN
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            match (b.first(), b.last()) {
                (Some(first), Some(last)) => {
                    first.is_ascii_alphanumeric()
                        && last.is_ascii_alphanumeric()
                        && b.iter()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                }
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{HttpClient, HttpSettings, Secrets};

    fn validate(spec: &SecretRotationSpec) -> Result<ValidSpec, SpecError> {
        let http = HttpClient::new(HttpSettings::default());
        let secrets = Secrets::default();
        super::validate(
            spec,
            &BuildContext {
                secrets: &secrets,
                http: &http,
                uid: "uid",
            },
        )
    }

    /// Parsed as the API server hands it over: JSON (serde_yaml would want YAML tags
    /// for the provider enum).
    fn spec(yaml: &str) -> SecretRotationSpec {
        let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        serde_json::from_value(value).unwrap()
    }

    const BASE: &str = "provider: {random: {length: 16}}\nsecretsMapping: {value: TOKEN}\ntarget: {name: t, keepPrevious: true}\n";

    #[test]
    fn a_good_spec_passes_with_defaults() {
        let v = validate(&spec(BASE)).unwrap();
        assert_eq!(v.strategy, Strategy::DualPhase);
        assert_eq!(
            v.schedule.interval,
            std::time::Duration::from_secs(30 * 86_400)
        );
        assert!(v.schedule.auto);
        assert_eq!(v.mapping, vec![("value".to_string(), "TOKEN".to_string())]);
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        let cases = [
            (
                format!("{BASE}schedule: {{rotationInterval: 0d}}"),
                "rotationInterval must be greater than zero",
            ),
            (
                format!("{BASE}schedule: {{rotationInterval: 5s}}"),
                "shorter than the minimum of 10s",
            ),
            (
                BASE.replace("value: TOKEN", "apiKey: TOKEN"),
                "names output \"apiKey\", which the random provider does not have (it has: value)",
            ),
            (BASE.replace("TOKEN", "BAD KEY"), "not a valid Secret key"),
            (
                BASE.replace("{value: TOKEN}", "{}"),
                "secretsMapping is empty",
            ),
            (
                format!("{BASE}strategy: singlePhase"),
                "not supported by the random provider",
            ),
            (
                BASE.replace("name: t,", "name: \"x?dryRun=All\","),
                "spec.target.name \"x?dryRun=All\" is not a valid Secret name",
            ),
            (
                BASE.replace("name: t,", "name: Upper,"),
                "is not a valid Secret name",
            ),
            (
                BASE.replace("name: t,", "name: rotor-escrow-x,"),
                "starts with \"rotor-escrow-\", which is reserved for rotor's escrow Secrets",
            ),
            (
                BASE.replace("name: t,", "name: rotor-vault-x,"),
                "starts with \"rotor-vault-\", which is reserved for rotor's escrow Secrets",
            ),
            (
                BASE.replace("name: t,", "name: t, template: {labels: {rotor.dev/escrow: \"true\"}},"),
                "sets \"rotor.dev/escrow\": labels under rotor.dev/ are rotor's own",
            ),
            (BASE.replace("TOKEN", "\".\""), "not a valid Secret key"),
            (BASE.replace("TOKEN", "\"..\""), "not a valid Secret key"),
            (BASE.replace("TOKEN", "a/b"), "not a valid Secret key"),
            (
                BASE.replace("TOKEN", &"K".repeat(245)),
                "_PREVIOUS passes 253 characters",
            ),
            (
                "provider: {supabase: {projectRef: abcdefghijklmnopqrst, credentialsRef: {name: \"a/../b\", key: k}}}\nsecretsMapping: {apiKey: K}\ntarget: {name: t}\n".to_string(),
                "a Secret reference in spec.provider \"a/../b\" is not a valid Secret name",
            ),
            (
                "provider: {supabase: {projectRef: abcdefghijklmnopqrst, credentialsRef: {name: admin, key: k}}}\nsecretsMapping: {apiKey: K}\ntarget: {name: t}\nnotify: {webhook: {url: \"https://hooks.example.com/x\", signingSecretRef: {name: admin, key: other}}}\n".to_string(),
                "signingSecretRef names \"admin\", which spec.provider also reads",
            ),
            (
                format!("{BASE}notify: {{webhook: {{url: \"https://hooks.example.com/x\", signingSecretRef: {{name: rotor-vault-db, key: k}}}}}}"),
                "reserved for rotor's escrow Secrets",
            ),
            (
                format!("{BASE}notify: {{webhook: {{url: \"https://hooks.example.com/x\", signingSecretRef: {{name: rotor-escrow-db, key: k}}}}}}"),
                "reserved for rotor's escrow Secrets",
            ),
            (
                "provider: {supabase: {projectRef: abcdefghijklmnopqrst, credentialsRef: {name: admin, key: \"..\"}}}\nsecretsMapping: {apiKey: K}\ntarget: {name: t}\n".to_string(),
                "key \"..\" is not a valid Secret key",
            ),
        ];
        for (yaml, want) in cases {
            let err = validate(&spec(&yaml)).err().expect(&yaml).to_string();
            assert!(err.contains(want), "{yaml}\n→ {err}");
        }
    }

    #[test]
    fn edge_names_and_keys() {
        assert!(validate(&spec(&BASE.replace("TOKEN", &"K".repeat(244)))).is_ok());
        assert!(
            validate(&spec(
                &BASE
                    .replace("TOKEN", &"K".repeat(253))
                    .replace("keepPrevious: true", "keepPrevious: false")
            ))
            .is_ok()
        );
        for good in ["a", "a.b-c", "0", &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(good), "{good}");
        }
        for bad in [
            "",
            "A",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a/b",
            "a?b",
            "a%2F",
            &"a".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn a_secret_type_cannot_change() {
        assert!(check_type_change(None, Some("kubernetes.io/basic-auth")).is_ok());
        assert!(check_type_change(Some("Opaque"), None).is_ok());
        assert!(check_type_change(Some(""), Some("Opaque")).is_ok());
        let err = check_type_change(Some("Opaque"), Some("kubernetes.io/basic-auth"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot change"), "{err}");
    }
}
