//! A SecretRotation as the watch sees it: read whatever the API server holds, even an
//! object whose spec no longer parses (stored before a schema change, or admitted by
//! an older CRD). Deserializing a [`Guarded`] never fails on the object's content, so
//! one unreadable object cannot fail a watch and blind rotor to every other resource
//! in scope; it is reconciled into a `Failed`/`InvalidSpec` status instead.

use super::status::{self, Reason};
use super::{Context, Error};
use crate::api::{SecretRotation, SecretRotationStatus, Strategy};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::sync::Arc;

/// A watched SecretRotation, as the watch cache keeps it: the few metadata fields the
/// controller's bookkeeping reads (name, namespace, resourceVersion, generation,
/// deletionTimestamp; not the uid, which kube-runtime would copy into its store's key,
/// see [`Guarded::uid`]), a hash of what wakes a reconcile, and the object itself as the
/// JSON the API server sent (without managedFields), LZ4-compressed against a
/// dictionary of a typical object, and parsed again by the reconcile that needs it.
/// Held typed, a SecretRotation cost about 8 KiB of heap (every string, map and
/// timestamp its own allocation, the metadata twice) against about 2 KiB of JSON and
/// a few hundred bytes compressed: at 20,000 resources the typed cache was most of
/// rotor's memory.
#[derive(Clone, Debug)]
pub struct Guarded {
    pub metadata: ObjectMeta,
    /// uid, generation, deletionTimestamp, annotations, labels and finalizers, hashed:
    /// a change of any wakes a reconcile (rotor's own status writes change none).
    pub trigger: u64,
    body: Body,
}

#[derive(Clone, Debug)]
enum Body {
    /// JSON that parses as a SecretRotation, compressed (see [`DICTIONARY`]) and padded
    /// (see [`pad`]).
    Readable {
        packed: Arc<[u8]>,
        /// The allocation size the next version at rest is given when it fits (see
        /// [`Guarded::keep_size`]): this one's own when it is at rest, else the one it
        /// was handed.
        keep: u32,
        /// No rotation in flight.
        at_rest: bool,
    },
    Unreadable(Arc<Unreadable>),
}

/// An object whose spec cannot be read.
#[derive(Clone, Debug)]
pub struct Unreadable {
    /// Where and why deserializing failed (a field path and serde's message).
    pub error: String,
    /// Its status, when that part still parses (rotor wrote it).
    pub status: Option<SecretRotationStatus>,
    /// The object parsed when it arrived; only the cache's copy failed to parse again
    /// (a fault of rotor's, never of the spec): read it from the API server instead.
    pub cache: bool,
    /// Its uid (the object's metadata parsed).
    pub uid: Option<String>,
}

impl Guarded {
    /// Gives this version of an object the allocation size of the last version at rest
    /// before it, handed on by `old` (the version it replaces in the cache), when its
    /// body fits there with at most [`KEEP_SLACK`] bytes to spare. So a body keeps its
    /// size class through a rotation — the intent written in flight, a second slot
    /// smaller than the room kept for it (see [`pad`]), a message a few bytes shorter —
    /// instead of moving and leaving a hole. Only a size at rest is handed on: a
    /// rotation in flight that needs a bigger one takes it for that moment only.
    pub fn keep_size(&mut self, old: Option<&Self>) {
        let Body::Readable {
            packed,
            keep,
            at_rest,
        } = &mut self.body
        else {
            return;
        };
        let handed = match old.map(|o| &o.body) {
            Some(Body::Readable { keep, .. }) => *keep as usize,
            _ => 0,
        };
        if packed.len() < handed && handed - packed.len() <= KEEP_SLACK {
            *packed = padded(unpad(packed), handed);
        }
        *keep = lasting(*at_rest, packed.len(), handed);
    }

    /// The object, typed; or why it cannot be read.
    pub fn object(&self) -> Result<Arc<SecretRotation>, Arc<Unreadable>> {
        match &self.body {
            Body::Readable { packed, .. } => {
                // It parsed when it arrived, and rotor compressed it: the same bytes
                // come back and parse again. Kept total all the same.
                let parsed =
                    lz4_flex::block::decompress_size_prepended_with_dict(unpad(packed), DICTIONARY)
                        .map_err(|e| format!("the cached object does not decompress: {e}"))
                        .and_then(|json| {
                            serde_path_to_error::deserialize::<_, SecretRotation>(
                                &mut serde_json::Deserializer::from_slice(&json),
                            )
                            .map_err(|e| format!("{}: {}", e.path(), e.inner()))
                        });
                parsed.map(Arc::new).map_err(|error| {
                    Arc::new(Unreadable {
                        error,
                        status: None,
                        cache: true,
                        uid: None,
                    })
                })
            }
            Body::Unreadable(u) => Err(u.clone()),
        }
    }

    /// The object's uid. Not among the cached metadata: kube-runtime's store copies
    /// the metadata's uid into its key, and the few who need it (a deletion, an Event
    /// about an object rotor cannot read) can afford to parse the object.
    pub fn uid(&self) -> Option<String> {
        match &self.body {
            Body::Readable { .. } => self.object().ok().and_then(|o| o.metadata.uid.clone()),
            Body::Unreadable(u) => u.uid.clone(),
        }
    }
}

/// A compressed body as the cache keeps it: its length (4 bytes), the bytes, zeros up
/// to an allocation (with the `Arc`'s 16-byte header) of a multiple of 128 bytes, with
/// at least `room` bytes to spare. A body that moves to another of jemalloc's size
/// classes leaves a hole among the long-lived objects of its old class, returned to no
/// one while the objects around it live; when a whole cohort of resources moves at once
/// (their second rotation), most pages of the old class are left holding a body or two:
/// 6.4 MiB of holes at 20,000 resources (jemalloc's statistics: the 512-byte class
/// 99.7 % used before, 25 % after), and the whole-run peak RSS 66 MiB instead of 62.
/// So a body keeps its allocation size across the changes it is known to go through:
/// rounded up (a status write adds a few dozen compressed bytes), with room for the
/// second slot while it has one (see [`SECOND_SLOT_ROOM`]), and never made smaller
/// for a few bytes (see [`Guarded::keep_size`]).
fn pad(packed: &[u8], room: usize) -> Arc<[u8]> {
    let total = (16 + 4 + packed.len() + room).next_multiple_of(128) - 16;
    padded(packed, total)
}

/// The size a body hands on (see [`Guarded::keep_size`]): its own, `size`, at rest;
/// else the one it was `handed`.
fn lasting(at_rest: bool, size: usize, handed: usize) -> u32 {
    u32::try_from(if at_rest { size } else { handed }).unwrap_or(0)
}

/// The most a body handed a bigger size may leave unused (two steps of [`pad`]'s
/// ladder): a tenant whose object shrank keeps at most this much more than it needs.
const KEEP_SLACK: usize = 256;

/// `packed` in `total` bytes (at least its own length and 4).
fn padded(packed: &[u8], total: usize) -> Arc<[u8]> {
    let total = total.max(4 + packed.len());
    let mut v = Vec::with_capacity(total);
    v.extend_from_slice(
        &u32::try_from(packed.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    v.extend_from_slice(packed);
    v.resize(total, 0);
    v.into()
}

/// Room for what a dual-phase resource's compressed body grows by at its second
/// rotation, when its status gains the second slot (its id, fingerprint and time, the
/// activation's old fingerprint, the longer messages): 38–74 bytes in the bench (a
/// first rotation by the operator at 444 bytes, the second by annotation at 482–518).
/// One step of the 128-byte ladder: every later rotation keeps the size.
const SECOND_SLOT_ROOM: usize = 128;

/// The compressed bytes of a body [`pad`] made (empty for anything else, which then
/// fails to decompress rather than panic).
fn unpad(padded: &[u8]) -> &[u8] {
    let len = padded
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    padded.get(4..4 + len).unwrap_or_default()
}

/// What a cached object is compressed against: the JSON of typical objects, so that
/// their keys, condition texts and timestamps are references into it.
const DICTIONARY: &[u8] = include_bytes!("cache-dictionary.json");

/// The trigger hash's key: random per process, so no tenant can make two versions of
/// its metadata that hash alike (and have a change of its own go unnoticed).
static TRIGGER_KEYS: std::sync::LazyLock<std::hash::RandomState> =
    std::sync::LazyLock::new(std::hash::RandomState::new);

/// The trigger hash of an object's metadata.
fn trigger(m: &ObjectMeta) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = TRIGGER_KEYS.build_hasher();
    // Another object of the same name (deleted and created again) always differs.
    m.uid.hash(&mut h);
    m.generation.hash(&mut h);
    m.deletion_timestamp.as_ref().map(|t| t.0).hash(&mut h);
    m.annotations.hash(&mut h);
    m.labels.hash(&mut h);
    m.finalizers.hash(&mut h);
    h.finish()
}

impl<'de> Deserialize<'de> for Guarded {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only malformed JSON fails here; the API server never sends that.
        let mut value = serde_json::Value::deserialize(d)?;
        // managedFields are most of an applied object's bytes and rotor never reads
        // them: not kept.
        if let Some(m) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.remove("managedFields");
        }
        let full = value
            .get("metadata")
            .and_then(|m| ObjectMeta::deserialize(m).ok())
            .unwrap_or_default();
        let body = match serde_path_to_error::deserialize::<_, SecretRotation>(&value) {
            Ok(sr) => {
                let at_rest = sr.status.as_ref().is_none_or(|s| s.in_flight.is_none());
                // At rest with one slot of a dual-phase rotation's two: the second is
                // coming.
                let room = sr.status.as_ref().map_or(0, |s| {
                    let one_of_two = s.slots.len() == 1 && s.strategy == Some(Strategy::DualPhase);
                    if one_of_two && at_rest {
                        SECOND_SLOT_ROOM
                    } else {
                        0
                    }
                });
                let packed = pad(
                    &lz4_flex::block::compress_prepend_size_with_dict(
                        &serde_json::to_vec(&value).unwrap_or_default(),
                        DICTIONARY,
                    ),
                    room,
                );
                Body::Readable {
                    keep: lasting(at_rest, packed.len(), 0),
                    packed,
                    at_rest,
                }
            }
            Err(e) => Body::Unreadable(Arc::new(Unreadable {
                error: format!("{}: {}", e.path(), e.inner()),
                status: value
                    .get("status")
                    .and_then(|s| SecretRotationStatus::deserialize(s).ok()),
                cache: false,
                uid: full.uid.clone(),
            })),
        };
        let trigger = trigger(&full);
        let metadata = ObjectMeta {
            name: full.name,
            namespace: full.namespace,
            resource_version: full.resource_version,
            generation: full.generation,
            deletion_timestamp: full.deletion_timestamp,
            ..ObjectMeta::default()
        };
        Ok(Self {
            metadata,
            trigger,
            body,
        })
    }
}

impl Resource for Guarded {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        SecretRotation::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        SecretRotation::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        SecretRotation::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        SecretRotation::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The message a user sees on an object rotor cannot read.
pub fn unreadable_message(error: &str) -> String {
    // Bounded: a serde message quotes the offending value, which the schema bounds,
    // but an object admitted by an older CRD may hold anything.
    let error = crate::rotation::clipped(error, 512);
    format!(
        "invalid spec: rotor cannot read this SecretRotation ({error}); fix the field (kubectl edit) and rotor picks it up"
    )
}

/// Marks an object rotor cannot read (or whose names it refuses before any API call)
/// Failed/InvalidSpec with a merge patch of the status alone: it needs no typed spec,
/// and keeps what the status said about issued credentials. A Warning Event says the
/// same. An API server without CRD validation ratcheting (before Kubernetes 1.30)
/// refuses any write to an object whose stored spec fails the current schema; then
/// the Event (and the log) is all rotor can say.
pub async fn stop_invalid(
    ctx: &Context,
    obj: &Guarded,
    old: Option<&SecretRotationStatus>,
    message: String,
) -> Result<Action, Error> {
    let metadata = &obj.metadata;
    let ns = metadata.namespace.as_deref().ok_or(Error::NoNamespace)?;
    let name = metadata.name.as_deref().unwrap_or_default();
    let now = chrono::Utc::now();
    // The conditions the status says (or is about to say), for the gauges.
    let mut shown = old.cloned().unwrap_or_default();
    status::set_phase(
        &mut shown,
        Reason::InvalidSpec,
        message.clone(),
        metadata.generation,
        now,
    );
    let export = || status::export_conditions(&ctx.metrics, ns, name, &shown);
    let Some(patch) = invalid_status_patch(old, &message, metadata.generation, now) else {
        export();
        return Ok(Action::await_change());
    };
    let api: Api<Guarded> = Api::namespaced(ctx.client.clone(), ns);
    let written = api
        .patch_status(
            name,
            &PatchParams {
                field_manager: Some(crate::api::FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await;
    let note = match written {
        Ok(_) => {
            export();
            message
        }
        Err(kube::Error::Api(e)) if e.code == 422 => format!(
            "{message} (the status cannot be written: the stored object fails the CRD's current schema)"
        ),
        Err(e) => return Err(e.into()),
    };
    tracing::warn!(
        namespace = ns,
        name,
        reason = Reason::InvalidSpec.as_str(),
        message = %note,
        "SecretRotation stopped"
    );
    let event = Event {
        type_: EventType::Warning,
        reason: Reason::InvalidSpec.as_str().into(),
        note: Some(crate::rotation::clipped(
            &note,
            super::reconcile::EVENT_NOTE_LIMIT,
        )),
        action: "Validate".into(),
        secondary: None,
    };
    let mut regarding = obj.object_ref(&());
    regarding.uid = obj.uid();
    if let Err(e) = ctx.publish(&event, &regarding).await {
        tracing::warn!(error = %e, "publishing an Event failed");
    }
    Ok(Action::await_change())
}

/// The status merge patch that marks an object Failed/InvalidSpec; `None` when the
/// status already says so for this generation.
fn invalid_status_patch(
    old: Option<&SecretRotationStatus>,
    message: &str,
    generation: Option<i64>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<serde_json::Value> {
    let mut status = old.cloned().unwrap_or_default();
    if old.is_some()
        && status.last_rotation_message == message
        && status.observed_generation == generation
    {
        return None;
    }
    status.next_rotation_at = None;
    status::set_phase(
        &mut status,
        Reason::InvalidSpec,
        message.to_string(),
        generation,
        now,
    );
    // Without a status rotor can read, only what says "stopped" is written: a whole
    // default status would merge activeIndex 0, rotationCount 0, … over the slots and
    // counts the stored one still holds, and a later fix would trust them.
    Some(match old {
        None => serde_json::json!({ "status": {
            "rotationStatus": status.rotation_status,
            "lastRotationMessage": status.last_rotation_message,
            "observedGeneration": status.observed_generation,
            "nextRotationAt": null,
            "conditions": status.conditions,
        }}),
        Some(_) => serde_json::json!({ "status": status }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_padded_body_gives_back_its_bytes_and_keeps_its_size_class() {
        for n in [0, 1, 107, 108, 109, 411, 489, 5_000] {
            let packed: Vec<u8> = (0..n).map(|i| (i % 251) as u8 + 1).collect();
            let padded = pad(&packed, 0);
            assert_eq!(unpad(&padded), packed.as_slice(), "{n}");
            assert_eq!((16 + padded.len()) % 128, 0, "{n}");
        }
        // A few dozen bytes more (a status write) stay in the same allocation size.
        assert_eq!(pad(&[7; 420], 0).len(), pad(&[7; 489], 0).len());
        // Anything else is no body, never a panic.
        assert!(unpad(&[]).is_empty());
        assert!(unpad(&[255, 255, 255, 255, 1]).is_empty());
    }

    /// A resource of the bench after its second rotation (managedFields dropped).
    const TWO_SLOTS: &str = r#"{"apiVersion":"rotor.dev/v1alpha1","kind":"SecretRotation","metadata":{"annotations":{"rotor.dev/rotate":"bench-1796471679"},"creationTimestamp":"2026-12-05T11:50:51Z","generation":1,"name":"r0","namespace":"bench-cold","resourceVersion":"130246","uid":"9290eb51-a5a9-4fbf-9ed9-b2b09b7e7465"},"spec":{"deletionPolicy":"Retain","provider":{"random":{"charset":"alphanumeric","length":32}},"schedule":{"autoRotation":true,"rotationInterval":30},"secretsMapping":{"value":"TOKEN"},"target":{"keepPrevious":true,"name":"r0-secret"}},"status":{"activeIndex":1,"auditTail":[{"action":"issue","actor":"annotation","credential":"rotor-9290eb51-2","newFingerprint":"hmac-sha256:93595cf9","time":"2026-12-05T11:54:39.526Z"},{"action":"test","actor":"annotation","credential":"rotor-9290eb51-2","detail":"passed","newFingerprint":"hmac-sha256:93595cf9","time":"2026-12-05T11:54:39.526Z"},{"action":"activate","actor":"annotation","credential":"rotor-9290eb51-2","detail":"slot 1","newFingerprint":"hmac-sha256:93595cf9","oldFingerprint":"hmac-sha256:d21e2a78","time":"2026-12-05T11:54:39.538Z"}],"conditions":[{"lastTransitionTime":"2026-12-05T11:52:09Z","message":"rotated: slot 1 active (hmac-sha256:93595cf9), slot 0 kept valid until the next rotation","observedGeneration":1,"reason":"CredentialActive","status":"True","type":"Ready"},{"lastTransitionTime":"2026-12-05T11:54:39Z","message":"no rotation in progress","observedGeneration":1,"reason":"Idle","status":"False","type":"Progressing"},{"lastTransitionTime":"2026-12-05T11:52:09Z","message":"no failure","observedGeneration":1,"reason":"AsExpected","status":"False","type":"Degraded"}],"escrow":{"entries":2},"failedAttempts":0,"issuedBy":"random","lastHandledRotateToken":"bench-1796471679","lastRotatedAt":"2026-12-05T11:54:39Z","lastRotationAttemptedAt":"2026-12-05T11:54:39Z","lastRotationMessage":"rotated: slot 1 active (hmac-sha256:93595cf9), slot 0 kept valid until the next rotation","nextRotationAt":"2027-01-04T11:54:39Z","observedGeneration":1,"provider":"random","rotationCount":2,"rotationStatus":"Success","slots":[{"fingerprint":"hmac-sha256:d21e2a78","id":"rotor-9290eb51-1","index":0,"issuedAt":"2026-12-05T11:52:09Z","state":"previous"},{"fingerprint":"hmac-sha256:93595cf9","id":"rotor-9290eb51-2","index":1,"issuedAt":"2026-12-05T11:54:39Z","state":"active"}],"strategy":"dualPhase","targetSecret":"r0-secret"}}"#;

    /// The same resource as its first rotation left it: one slot.
    fn one_slot() -> serde_json::Value {
        let mut o: serde_json::Value = serde_json::from_str(TWO_SLOTS).unwrap();
        let s = &mut o["status"];
        let slots = s["slots"].as_array_mut().unwrap();
        slots.remove(0);
        slots[0]["index"] = 0.into();
        s["activeIndex"] = 0.into();
        s["rotationCount"] = 1.into();
        let message = "rotated: slot 0 active (hmac-sha256:93595cf9)";
        s["lastRotationMessage"] = message.into();
        s["conditions"][0]["message"] = message.into();
        let activate = &mut s["auditTail"][2];
        activate.as_object_mut().unwrap().remove("oldFingerprint");
        activate["detail"] = "slot 0".into();
        s["escrow"]["entries"] = 1.into();
        o
    }

    /// What the body takes of the heap (with the `Arc`'s header).
    fn allocation(g: &Guarded) -> usize {
        match &g.body {
            Body::Readable { packed, .. } => 16 + packed.len(),
            Body::Unreadable(_) => 0,
        }
    }

    #[test]
    fn a_body_keeps_its_size_class_through_its_second_slot() {
        let one: Guarded = serde_json::from_value(one_slot()).unwrap();
        let mut two: Guarded = serde_json::from_str(TWO_SLOTS).unwrap();
        // Needed as they are, the two versions are in different size classes: the
        // second rotation would move every body.
        let need = |g: &Guarded| {
            let Body::Readable { packed, .. } = &g.body else {
                panic!("readable")
            };
            pad(unpad(packed), 0).len() + 16
        };
        assert!(need(&one) < need(&two), "{} {}", need(&one), need(&two));
        // The one-slot body has room for its second slot.
        assert!(
            allocation(&one) >= need(&two),
            "{} {}",
            allocation(&one),
            need(&two)
        );
        // The second rotation: its intent in flight, then the two slots at rest —
        // one allocation size throughout.
        let mut intent = one_slot();
        intent["status"]["inFlight"] = serde_json::json!({"targetIndex": 1,
            "credentialName": "rotor-9290eb51-2", "trigger": "manual",
            "startedAt": "2026-12-05T11:54:39Z"});
        let mut intent: Guarded = serde_json::from_value(intent).unwrap();
        intent.keep_size(Some(&one));
        assert_eq!(allocation(&intent), allocation(&one));
        two.keep_size(Some(&intent));
        assert_eq!(allocation(&two), allocation(&one));
        assert_eq!(
            two.object().unwrap().status.as_ref().unwrap().slots.len(),
            2
        );
        // A single-phase resource has one slot for good: no room kept.
        let mut single = one_slot();
        single["status"]["strategy"] = "singlePhase".into();
        let single: Guarded = serde_json::from_value(single).unwrap();
        assert_eq!(allocation(&single), need(&single));
    }

    #[test]
    fn a_new_version_keeps_the_old_allocation_only_within_two_steps_of_its_need() {
        let small: Guarded = serde_json::from_value(object("\"12h\"")).unwrap();
        let big: Guarded = serde_json::from_str(TWO_SLOTS).unwrap();
        // A few bytes smaller: the old size is kept, the object reads the same.
        let smaller_json = || {
            let mut v = serde_json::from_str::<serde_json::Value>(TWO_SLOTS).unwrap();
            v["status"]["lastRotationMessage"] = "rotated".into();
            v["status"]["conditions"][0]["message"] = "rotated".into();
            v
        };
        let mut smaller: Guarded = serde_json::from_value(smaller_json()).unwrap();
        assert!(allocation(&smaller) < allocation(&big));
        smaller.keep_size(Some(&big));
        assert_eq!(allocation(&smaller), allocation(&big));
        let sr = smaller.object().unwrap();
        assert_eq!(sr.status.as_ref().unwrap().last_rotation_message, "rotated");
        // More than two steps below it: its own size.
        let mut tiny = small.clone();
        tiny.keep_size(Some(&big));
        assert_eq!(allocation(&tiny), allocation(&small));
        assert!(allocation(&small) + KEEP_SLACK < allocation(&big));
        // A version in flight that needs more takes it for that moment only, and
        // hands on the size at rest before it.
        let mut big_intent = serde_json::from_str::<serde_json::Value>(TWO_SLOTS).unwrap();
        big_intent["status"]["inFlight"] = serde_json::json!({"targetIndex": 0,
            "credentialName": "rotor-9290eb51-3", "trigger": "manual",
            "startedAt": "2026-12-05T11:58:39Z"});
        // A message that does not compress (letters from a small LCG).
        let mut x = 7u32;
        let noise: String = (0..300)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                char::from(b'a' + ((x >> 16) % 26) as u8)
            })
            .collect();
        big_intent["status"]["lastRotationMessage"] = noise.into();
        let mut big_intent: Guarded = serde_json::from_value(big_intent).unwrap();
        big_intent.keep_size(Some(&big));
        assert!(allocation(&big_intent) > allocation(&big));
        let mut after: Guarded = serde_json::from_value(smaller_json()).unwrap();
        after.keep_size(Some(&big_intent));
        assert_eq!(allocation(&after), allocation(&big));
        // Its own size at rest is what it hands on, not the moment's.
        let mut next: Guarded = serde_json::from_value(smaller_json()).unwrap();
        next.keep_size(Some(&after));
        assert_eq!(allocation(&next), allocation(&big));
        // Bigger than the old one, no old one, an unreadable one: unchanged.
        let mut grown = big.clone();
        grown.keep_size(Some(&small));
        assert_eq!(allocation(&grown), allocation(&big));
        grown.keep_size(None);
        assert_eq!(allocation(&grown), allocation(&big));
        let unreadable: Guarded = serde_json::from_value(object("4294967296")).unwrap();
        grown.keep_size(Some(&unreadable));
        assert_eq!(allocation(&grown), allocation(&big));
    }

    fn object(interval: &str) -> serde_json::Value {
        serde_json::from_str(&format!(
            r#"{{"apiVersion":"rotor.dev/v1alpha1","kind":"SecretRotation",
                "metadata":{{"name":"x","namespace":"ns","uid":"u"}},
                "spec":{{"provider":{{"random":{{}}}},"secretsMapping":{{"value":"V"}},
                         "target":{{"name":"t"}},"schedule":{{"rotationInterval":{interval}}}}},
                "status":{{"rotationCount":3}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn an_unreadable_object_keeps_its_metadata_status_and_the_reason() {
        let g: Guarded = serde_json::from_value(object("4294967296")).unwrap();
        assert_eq!(g.metadata.name.as_deref(), Some("x"));
        assert_eq!(g.uid().as_deref(), Some("u"));
        let e = g.object().unwrap_err();
        assert!(
            e.error
                .starts_with("spec.schedule.rotationInterval: 4294967296 is out of range"),
            "{}",
            e.error
        );
        assert_eq!(e.status.as_ref().unwrap().rotation_count, 3);
    }

    #[test]
    fn an_unknown_value_of_a_closed_set_names_the_field_and_the_allowed_values() {
        let cases = [
            (
                r#"{"random":{"charset":"klingon"}}"#,
                "spec.provider.random.charset: unknown variant `klingon`",
                "expected one of `alphanumeric`, `alphabetic`, `numeric`, `hex`, `base64url`, `printable`",
            ),
            (
                r#"{"supabase":{"projectRef":"abcdefghijklmnopqrst","keyType":"anon","credentialsRef":{"name":"s","key":"k"}}}"#,
                "spec.provider.supabase.keyType: unknown variant `anon`",
                "expected `secret` or `publishable`",
            ),
            (
                r#"{"postgres":{"host":"db","database":"app","sslMode":"prefer","credentialsRef":{"name":"s","key":"k"},"username":"app"}}"#,
                "spec.provider.postgres.sslMode: unknown variant `prefer`",
                "expected one of `disable`, `require`, `verify-full`",
            ),
            (
                r#"{"http":{"issue":{"url":"https://x.test/keys","method":"get"},"valuePath":"$.key"}}"#,
                "spec.provider.http.issue.method: unknown variant `get`",
                "expected one of `GET`, `POST`, `PUT`, `PATCH`, `DELETE`",
            ),
        ];
        for (provider, field, allowed) in cases {
            let mut value = object("\"12h\"");
            value["spec"]["provider"] = serde_json::from_str(provider).unwrap();
            let g: Guarded = serde_json::from_value(value).unwrap();
            let e = g.object().unwrap_err();
            assert!(e.error.starts_with(field), "{}", e.error);
            assert!(e.error.ends_with(allowed), "{}", e.error);
        }
    }

    #[test]
    fn an_unreadable_status_is_never_overwritten_with_defaults() {
        let now = chrono::Utc::now();
        let patch = invalid_status_patch(None, "invalid spec: x", Some(2), now).unwrap();
        let status = patch["status"].as_object().unwrap();
        let mut keys: Vec<&str> = status.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "conditions",
                "lastRotationMessage",
                "nextRotationAt",
                "observedGeneration",
                "rotationStatus"
            ]
        );
        // A readable status keeps its slots and counts, and is not written twice.
        let old = SecretRotationStatus {
            active_index: 1,
            rotation_count: 7,
            ..Default::default()
        };
        let patch = invalid_status_patch(Some(&old), "invalid spec: x", Some(2), now).unwrap();
        assert_eq!(patch["status"]["activeIndex"], 1);
        assert_eq!(patch["status"]["rotationCount"], 7);
        let written: SecretRotationStatus =
            serde_json::from_value(patch["status"].clone()).unwrap();
        assert_eq!(
            invalid_status_patch(Some(&written), "invalid spec: x", Some(2), now),
            None
        );
    }

    #[test]
    fn a_readable_object_parses_as_usual() {
        let g: Guarded = serde_json::from_value(object("\"12h\"")).unwrap();
        assert_eq!(g.object().unwrap().spec.target.name, "t");
    }

    #[test]
    fn the_cache_keeps_json_without_managed_fields_and_the_trigger_follows_what_wakes() {
        let mut value = object("\"12h\"");
        value["metadata"]["managedFields"] = serde_json::json!([{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]);
        value["metadata"]["annotations"] = serde_json::json!({"rotor.dev/rotate": "1"});
        let g: Guarded = serde_json::from_value(value.clone()).unwrap();
        let Body::Readable { packed, .. } = &g.body else {
            panic!("readable")
        };
        let json = lz4_flex::block::decompress_size_prepended_with_dict(unpad(packed), DICTIONARY)
            .unwrap();
        assert!(!String::from_utf8_lossy(&json).contains("managedFields"));
        assert!(
            packed.len() < json.len() / 2,
            "{} of {}",
            packed.len(),
            json.len()
        );
        // The cached metadata is the bookkeeping subset; the object keeps the rest.
        assert_eq!(g.metadata.annotations, None);
        assert_eq!(g.metadata.uid, None);
        assert_eq!(g.uid().as_deref(), Some("u"));
        let sr = g.object().unwrap();
        assert_eq!(
            sr.metadata.annotations.as_ref().unwrap()["rotor.dev/rotate"],
            "1"
        );
        assert_eq!(sr.metadata.uid.as_deref(), Some("u"));
        // A status write changes no trigger; an annotation, a label, a finalizer, the
        // generation and a deletion each do.
        let same = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = value.clone();
            f(&mut v);
            serde_json::from_value::<Guarded>(v).unwrap().trigger == g.trigger
        };
        assert!(same(&|v| v["status"]["rotationCount"] = 4.into()));
        assert!(same(&|v| v["metadata"]["resourceVersion"] = "9".into()));
        assert!(!same(
            &|v| v["metadata"]["annotations"]["rotor.dev/rotate"] = "2".into()
        ));
        assert!(!same(
            &|v| v["metadata"]["labels"] = serde_json::json!({"a": "b"})
        ));
        assert!(!same(
            &|v| v["metadata"]["finalizers"] = serde_json::json!(["rotor.dev/x"])
        ));
        assert!(!same(&|v| v["metadata"]["generation"] = 2.into()));
        assert!(!same(&|v| {
            v["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into()
        }));
    }
}
