//! Events about a resource (events.k8s.io/v1), each its own object. kube-runtime's
//! `Recorder` names an Event `<regarding name>.<hex nanoseconds>` whatever the length:
//! for a SecretRotation whose name has more than 236 of the 253 characters a name may
//! have, the API server refused every Event about it, and rotor only logged that. Here
//! such a name is bounded as rotor bounds its other names (as much as fits, `-` and a
//! hash of the whole name); everything else is what the Recorder sends.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};

/// The longest object name the API server takes (a DNS subdomain).
const NAME_LIMIT: usize = 253;
/// The longest `reportingInstance` events.k8s.io/v1 takes.
const INSTANCE_LIMIT: usize = 128;

/// `<regarding>.<hex nanos>`; a regarding name too long for that to fit 253
/// characters is bounded as rotor bounds its other names
/// ([`crate::rotation::bounded_name`]: as much as fits, `-` and 10 hex digits of its
/// hash — two long names that share their start still name their Events apart).
pub fn event_name(regarding: &str, nanos: i128) -> String {
    let suffix = format!(".{:x}", nanos.unsigned_abs());
    let bounded = crate::rotation::bounded_name("", regarding, NAME_LIMIT - suffix.len());
    // (A valid name's cut never ends in `-` or `.`; anything else is kept valid too.)
    let prefix = bounded.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let prefix = if prefix.is_empty() { "event" } else { prefix };
    format!("{prefix}{suffix}")
}

/// The first `max` bytes of `text` at most, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The Event kube-runtime's Recorder would create (no series: rotor publishes only
/// on transitions, each Event its own note), with a name that fits.
pub fn event_object(reporter: &Reporter, ev: &Event, regarding: &ObjectReference) -> K8sEvent {
    let now = Timestamp::now();
    // An empty POD_NAME would cost every Event (the API server wants one).
    let instance = reporter
        .instance
        .as_deref()
        .filter(|i| !i.is_empty())
        .unwrap_or(&reporter.controller);
    K8sEvent {
        action: Some(ev.action.clone()),
        reason: Some(ev.reason.clone()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        note: ev.note.clone(),
        metadata: ObjectMeta {
            namespace: regarding.namespace.clone(),
            name: Some(event_name(
                regarding.name.as_deref().unwrap_or(&reporter.controller),
                now.as_nanosecond(),
            )),
            ..Default::default()
        },
        reporting_controller: Some(reporter.controller.clone()),
        // A pod name fits; a longer HOSTNAME would cost every Event.
        reporting_instance: Some(cut(instance, INSTANCE_LIMIT).to_string()),
        type_: Some(
            match ev.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        related: ev.secondary.clone(),
        ..Default::default()
    }
}

/// Creates the Event in the regarding object's namespace (`default` without one).
pub async fn publish(
    client: kube::Client,
    reporter: &Reporter,
    ev: &Event,
    regarding: &ObjectReference,
) -> Result<(), kube::Error> {
    let event = event_object(reporter, ev, regarding);
    let events: Api<K8sEvent> =
        Api::namespaced(client, regarding.namespace.as_deref().unwrap_or("default"));
    events.create(&PostParams::default(), &event).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS-1123 subdomain, as the API server checks an object's name.
    fn is_subdomain(name: &str) -> bool {
        name.len() <= 253
            && name.split('.').all(|label| {
                let b = label.as_bytes();
                !b.is_empty()
                    && b.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
            })
    }

    #[test]
    fn an_event_name_fits_whatever_the_resource_name() {
        let nanos = 1_796_471_679_123_456_789_i128;
        assert_eq!(event_name("web", nanos), "web.18ee59795b340315");
        for name in [
            "a".repeat(253),
            format!("{}-b", "a".repeat(234)),
            format!("{}.{}", "a".repeat(235), "b".repeat(17)),
            format!("{}-{}", "a".repeat(235), "b".repeat(17)),
            format!("{}.-", "a".repeat(240)),
            "-".repeat(253),
            String::new(),
        ] {
            let got = event_name(&name, nanos);
            assert!(is_subdomain(&got), "{name:?} → {got:?}");
            assert!(got.ends_with(".18ee59795b340315"), "{got}");
        }
        // Up to 236 characters the name is kept whole, as kube-runtime names it.
        let name = "n".repeat(236);
        assert_eq!(event_name(&name, nanos), format!("{name}.18ee59795b340315"));
        let cut = event_name(&"n".repeat(237), nanos);
        assert!(cut.len() <= 253, "{cut}");
        // Two long names that share their first 236 characters: apart.
        let (a, b) = (
            format!("{}-a", "n".repeat(240)),
            format!("{}-b", "n".repeat(240)),
        );
        assert_ne!(event_name(&a, nanos), event_name(&b, nanos));
        // A clock before 1970 still names Events apart.
        assert_ne!(event_name("web", -1), event_name("web", -2));
        // Not a valid name at all (the API server never returns one): still bounded.
        let odd = event_name(&"é".repeat(200), nanos);
        assert!(odd.len() <= 253, "{odd}");
    }

    #[test]
    fn the_event_is_the_one_the_recorder_sends() {
        let mut reporter = Reporter {
            controller: "rotor".into(),
            instance: Some("p".repeat(300)),
        };
        let ev = Event {
            type_: EventType::Warning,
            reason: "Stale".into(),
            note: Some("old".into()),
            action: "Check".into(),
            secondary: None,
        };
        let regarding = ObjectReference {
            name: Some("x".repeat(250)),
            namespace: Some("team".into()),
            ..Default::default()
        };
        let got = event_object(&reporter, &ev, &regarding);
        assert_eq!(got.metadata.namespace.as_deref(), Some("team"));
        assert!(is_subdomain(got.metadata.name.as_deref().unwrap()));
        assert_eq!(got.type_.as_deref(), Some("Warning"));
        assert_eq!(got.reason.as_deref(), Some("Stale"));
        assert_eq!(got.action.as_deref(), Some("Check"));
        assert_eq!(got.note.as_deref(), Some("old"));
        assert_eq!(got.reporting_controller.as_deref(), Some("rotor"));
        assert!(got.reporting_instance.unwrap().len() <= 128);
        assert_eq!(got.regarding, Some(regarding.clone()));
        assert!(got.event_time.is_some() && got.series.is_none());
        reporter.instance = Some(String::new());
        let got = event_object(&reporter, &ev, &regarding);
        assert_eq!(got.reporting_instance.as_deref(), Some("rotor"));
    }
}
