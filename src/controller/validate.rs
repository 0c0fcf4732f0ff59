//! Step one of every reconcile: turn the raw spec into a checked value. Later steps
//! never see raw user input, and every error names the field and how to fix it.

use crate::api::{IntervalError, SecretRotationSpec, Strategy};
use crate::providers::{self, BuildContext, Provider, ProviderError};
use crate::rotation::{MIN_INTERVAL, Schedule};

/// A spec that passed every check.
pub struct ValidSpec {
    pub provider: Box<dyn Provider>,
    pub strategy: Strategy,
    pub schedule: Schedule,
    /// (provider output, Secret key), in a stable order.
    pub mapping: Vec<(String, String)>,
    pub keep_previous: bool,
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
}

/// Checks a spec; `ctx` carries the resolved Secrets the provider reads.
pub fn validate(spec: &SecretRotationSpec, ctx: &BuildContext<'_>) -> Result<ValidSpec, SpecError> {
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
    })
}

/// The key holding the previous value of `key`.
pub fn previous_key(key: &str) -> String {
    format!("{key}_PREVIOUS")
}

fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
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
            (
                BASE.replace("length: 16", "length: 16, charset: klingon"),
                "charset \"klingon\" is unknown",
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
        ];
        for (yaml, want) in cases {
            let err = validate(&spec(&yaml)).err().expect(&yaml).to_string();
            assert!(err.contains(want), "{yaml}\n→ {err}");
        }
    }
}
