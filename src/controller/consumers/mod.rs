//! The consumers' steps after a rotation: restart the workloads that read the target
//! Secret, follow their rollout, and revoke the previous credential only when nothing
//! can still use it (see [`crate::rotation::revocation`] for the gates).
//!
//! 1. At the flip, [`Run::plan_consumers`] finds the consumers (named, selected,
//!    discovered), records them in `status.consumers` (phase Restarting) and registers
//!    the rotation's token for each, so rotations of one workload's Secrets within the
//!    restart delay are written as one restart;
//! 2. [`Run::follow_consumers`], on every later reconcile: writes the restart once the
//!    delay has passed (a workload already carrying the token is not restarted again:
//!    a retried step or a restarted operator never restarts twice), then follows the
//!    rollouts, says when one is stuck, and with `revocation.after: Rollout` revokes
//!    the previous credential once every gate is open;
//! 3. [`Run::rotation_hold`]: the same gates hold the next rotation, which would
//!    revoke that credential.

mod workload;

pub use workload::{reads_secret, rollout};

use super::Error;
use super::audit::Audit;
use super::reconcile::Run;
use super::secret::Target;
use super::status;
use super::validate::ValidSpec;
use crate::api::{
    ConsumerPhase, ConsumersStatus, MAX_CONSUMERS, MAX_RESTARTS, RevokeAfter, SecretRotationStatus,
    Strategy, WorkloadRef, WorkloadStatus,
};
use crate::notify::NotifyEvent;
use crate::rotation::{ConsumerState, Revocation, Usage, Verdict};
use crate::vault::SlotRef;
use chrono::{DateTime, TimeDelta, Utc};
use kube::ResourceExt;
use kube::runtime::events::EventType;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use tracing::{info, warn};
use workload::{Found, MAX_NEW_TOKENS, Workloads};

/// How often a stuck rollout is looked at.
const STUCK_POLL: TimeDelta = TimeDelta::seconds(30);

/// The token naming one rotation in `rotor.dev/restartedAt`: its number and the start
/// of the new credential's fingerprint (never a wall-clock second, so two rotations
/// never collide and a retry writes the same value).
pub fn token(sequence: u64, fingerprint: &str) -> String {
    let hex: String = fingerprint
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("{sequence}-{hex}")
}

/// Whether a `rotor.dev/restartedAt` value carries `token`.
pub fn carries(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t == token))
}

/// Restarts waiting to be written, per workload (`namespace/Kind/name`): the tokens of
/// every rotation that asked within the delay, and those a reconcile is writing now.
#[derive(Default)]
pub struct Restarts(Mutex<Book>);

#[derive(Default)]
struct Book {
    /// Tokens waiting, with when they were registered.
    waiting: HashMap<String, HashMap<String, std::time::Instant>>,
    /// Tokens being written, by workload, with when their write started (several
    /// writes of one workload may be under way: a single-phase rotation's at once).
    writing: HashMap<String, HashMap<String, std::time::Instant>>,
    /// Tokens writes that went through carried, by workload, with when they ended and
    /// the workload (uid, generation) the write made: a rotation whose look at the
    /// workload came before such a write landed must not write its token again alone
    /// (a second rollout, and the others' tokens gone): it looks again instead (see
    /// [`Restarts::take`]).
    written: HashMap<String, HashMap<String, Written>>,
}

/// A write that carried a token went through.
#[derive(Clone)]
struct Written {
    at: std::time::Instant,
    /// The workload that write restarted.
    made: Made,
}

/// Which workload a restart wrote, and the generation it made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Made {
    pub uid: Option<String>,
    pub generation: Option<i64>,
}

/// When a book entry was made.
trait Stamped {
    fn at(&self) -> std::time::Instant;
}

impl Stamped for std::time::Instant {
    fn at(&self) -> std::time::Instant {
        *self
    }
}

impl Stamped for Written {
    fn at(&self) -> std::time::Instant {
        self.at
    }
}

/// Drops the tokens older than `max`, and the workloads left with none.
fn prune<V: Stamped>(book: &mut HashMap<String, HashMap<String, V>>, max: std::time::Duration) {
    book.retain(|_, tokens| {
        tokens.retain(|_, v| v.at().elapsed() < max);
        !tokens.is_empty()
    });
}

/// What a rotation is to do about restarting one workload.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// Write this value: its own token and every other waiting for the workload.
    Write(String),
    /// Another reconcile is writing its token now, or wrote it after the rotation's
    /// look at the workload: look again (the next look sees it there).
    Writing,
}

/// A write that has not reported back within this is taken as abandoned.
const WRITE_ABANDONED: std::time::Duration = std::time::Duration::from_secs(60);
/// A token nobody wrote within this (its rotation's resource was deleted, the operator
/// lost leadership) is forgotten: the book stays bounded.
const WAITING_EXPIRES: std::time::Duration = std::time::Duration::from_secs(600);

impl Restarts {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn register(&self, workload: &str, token: &str) {
        let mut book = self.book();
        prune(&mut book.waiting, WAITING_EXPIRES);
        prune(&mut book.writing, WRITE_ABANDONED);
        prune(&mut book.written, WRITE_ABANDONED);
        book.waiting
            .entry(workload.to_string())
            .or_default()
            .insert(token.to_string(), std::time::Instant::now());
    }

    /// `token` will not be written for `workload` (it is gone, or its kind is not
    /// served): nobody else carries it either.
    pub fn forget(&self, workload: &str, token: &str) {
        let mut book = self.book();
        if let Some(tokens) = book.waiting.get_mut(workload) {
            tokens.remove(token);
            if tokens.is_empty() {
                book.waiting.remove(workload);
            }
        }
    }

    /// What to do for `mine` on `workload`, which the caller's look `seen` found
    /// without `mine`: write it with every other token waiting (at most
    /// [`MAX_NEW_TOKENS`], now being written); or nothing yet, while another reconcile
    /// writes it (it comes back to waiting if that write fails) or when a write that
    /// carried it went through after that look — the same object, a generation the
    /// look had not seen — so that the next look finds it there. A look that saw that
    /// write's generation or a later one without `mine` finds it taken off again (a
    /// rollback, a replace): pods from before the rotation's Secret may be running
    /// again, so it is written again.
    pub fn take(&self, workload: &str, mine: &str, seen: &Made) -> Take {
        let mut book = self.book();
        let fresh = |at: std::time::Instant| at.elapsed() < WRITE_ABANDONED;
        let writing = book
            .writing
            .get(workload)
            .and_then(|tokens| tokens.get(mine))
            .is_some_and(|at| fresh(*at));
        if writing {
            return Take::Writing;
        }
        let written = book
            .written
            .get(workload)
            .and_then(|tokens| tokens.get(mine))
            .filter(|w| fresh(w.at));
        if let Some(Written { made, .. }) = written {
            match (made.generation, seen.generation) {
                // Landed after the look. A look, not the write's reply, tells that
                // the workload carries the token: it may be taken off again since.
                (Some(made_generation), Some(seen_generation))
                    if made.uid.is_some()
                        && made.uid == seen.uid
                        && seen_generation < made_generation =>
                {
                    return Take::Writing;
                }
                // (A reply without a generation: the next look sees the token.)
                (None, _) => return Take::Writing,
                // Taken off again, or another object of that name: written again.
                _ => {}
            }
        }
        let waiting = book.waiting.entry(workload.to_string()).or_default();
        waiting.remove(mine);
        let mut others: Vec<String> = waiting
            .iter()
            .filter(|(_, at)| at.elapsed() < WAITING_EXPIRES)
            .map(|(t, _)| t.clone())
            .collect();
        others.sort();
        let mut tokens = BTreeSet::from([mine.to_string()]);
        for t in others.into_iter().take(MAX_NEW_TOKENS - 1) {
            waiting.remove(&t);
            tokens.insert(t);
        }
        if waiting.is_empty() {
            book.waiting.remove(workload);
        }
        let value = tokens.iter().cloned().collect::<Vec<_>>().join(",");
        let now = std::time::Instant::now();
        book.writing
            .entry(workload.to_string())
            .or_default()
            .extend(tokens.into_iter().map(|t| (t, now)));
        Take::Write(value)
    }

    /// The write of `value` for `workload` ended: its tokens are written, to the
    /// workload `made` (`Some`), or (it failed: `None`) wait again.
    pub fn written(&self, workload: &str, value: &str, made: Option<Made>) {
        let mut book = self.book();
        if let Some(writing) = book.writing.get_mut(workload) {
            for t in value.split(',') {
                writing.remove(t);
            }
            if writing.is_empty() {
                book.writing.remove(workload);
            }
        }
        let at = std::time::Instant::now();
        let tokens = value.split(',').map(str::to_string);
        match made {
            Some(made) => {
                prune(&mut book.written, WRITE_ABANDONED);
                let done = Written { at, made };
                book.written
                    .entry(workload.to_string())
                    .or_default()
                    .extend(tokens.map(|t| (t, done.clone())));
            }
            None => book
                .waiting
                .entry(workload.to_string())
                .or_default()
                .extend(tokens.map(|t| (t, at))),
        }
    }
}

/// A consumer that carries the rotation's token, as `seen`: followed to its rollout.
fn follow(w: &mut WorkloadStatus, seen: workload::Observed) {
    if w.generation.is_none() {
        w.generation = seen.generation;
    }
    w.rolled_out = seen.rolled_out;
    w.message = seen.message;
}

/// A consumer that is not there to restart or follow: it runs no pods, so holds no
/// credential.
fn gone(w: &mut WorkloadStatus, absent: Found) {
    w.rolled_out = true;
    w.message = match absent {
        Found::KindNotInstalled => {
            "the Rollout kind (Argo Rollouts) is not installed: skipped".into()
        }
        _ if w.restarts == 0 => "not found: nothing to restart".into(),
        _ => "deleted".into(),
    };
}

/// A Kubernetes error in a few words for status and Events: the API server's message
/// and code, not the whole response (bounded: a webhook's denial can be long).
fn said(e: &kube::Error) -> String {
    let text = match e {
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
    };
    crate::rotation::clipped(&text, 300)
}

fn label(w: &WorkloadRef) -> String {
    format!("{}/{}", w.kind.as_str(), w.name)
}

fn workload_ref(w: &WorkloadStatus) -> WorkloadRef {
    WorkloadRef {
        kind: w.kind,
        name: w.name.clone(),
    }
}

fn at(from: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| from.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn earliest(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl Run {
    fn workloads(&self) -> Workloads {
        Workloads::new(
            self.ctx.client.clone(),
            &self.sr.namespace().unwrap_or_default(),
        )
    }

    fn book_key(&self, w: &WorkloadRef) -> String {
        format!("{}/{}", self.sr.namespace().unwrap_or_default(), label(w))
    }

    /// Step 1 (at the flip): the consumers of rotation `sequence`; restarted now when
    /// `at_once` (they hold a credential that stopped working), else recorded as
    /// Restarting for [`Run::follow_consumers`]. `None` when the spec names none.
    pub(super) async fn start_consumers(
        &self,
        spec: &ValidSpec,
        sequence: u64,
        fingerprint: &str,
        at_once: bool,
    ) -> Option<ConsumersStatus> {
        let mut c = self.plan_consumers(spec, sequence, fingerprint).await?;
        if at_once {
            self.advance(spec, &mut c, true).await;
        }
        Some(c)
    }

    async fn plan_consumers(
        &self,
        spec: &ValidSpec,
        sequence: u64,
        fingerprint: &str,
    ) -> Option<ConsumersStatus> {
        let wanted = spec.consumers.as_ref()?;
        let token = token(sequence, fingerprint);
        let mut found: BTreeSet<WorkloadRef> = wanted.workloads.iter().cloned().collect();
        let mut notes = Vec::new();
        let mut incomplete = Vec::new();
        let workloads = self.workloads();
        if let Some(selector) = &wanted.selector {
            match kube::core::Selector::try_from(selector.clone()) {
                Ok(s) if !s.selects_all() => {
                    match workloads
                        .find(Some(&s.to_string()), None, MAX_CONSUMERS)
                        .await
                    {
                        Ok(list) => {
                            found.extend(list.found);
                            incomplete.extend(list.cut);
                        }
                        Err(e) => {
                            incomplete.push(format!("listing by selector failed: {}", said(&e)))
                        }
                    }
                }
                Ok(_) => notes.push(
                    "spec.consumers.selector is empty and would select every workload: ignored"
                        .into(),
                ),
                Err(e) => notes.push(format!("spec.consumers.selector: {e}")),
            }
        }
        if wanted.discover {
            match workloads
                .find(None, Some(&self.sr.spec.target.name), MAX_CONSUMERS)
                .await
            {
                Ok(list) => {
                    found.extend(list.found);
                    incomplete.extend(list.cut);
                }
                Err(e) => incomplete.push(format!("discovering consumers failed: {}", said(&e))),
            }
        }
        let total = found.len();
        let list: Vec<WorkloadRef> = found.into_iter().take(MAX_CONSUMERS).collect();
        if total > list.len() {
            incomplete.push(format!("{total} consumers match"));
        }
        let incomplete = (!incomplete.is_empty()).then(|| {
            format!(
                "{}: only the first {} found are restarted and followed",
                incomplete.join("; "),
                list.len()
            )
        });
        notes.extend(incomplete.clone());
        for w in &list {
            self.ctx.restarts.register(&self.book_key(w), &token);
        }
        if !notes.is_empty() {
            let note = notes.join("; ");
            warn!(name = %self.sr.name_any(), %note, "consumers");
            self.publish(EventType::Warning, "ConsumersIncomplete", "Restart", note)
                .await;
        }
        Some(ConsumersStatus {
            rotation: sequence,
            token,
            since: self.now,
            phase: ConsumerPhase::Restarting,
            workloads: list
                .into_iter()
                .map(|w| WorkloadStatus {
                    kind: w.kind,
                    name: w.name,
                    generation: None,
                    restarts: 0,
                    rolled_out: false,
                    message: "restart pending".into(),
                })
                .collect(),
            usage: None,
            stuck_since: None,
            incomplete,
        })
    }

    /// Step 2, on every reconcile after a rotation with consumers: restart, follow,
    /// say when stuck, and (`after: Rollout`) revoke the previous credential. Changes
    /// `status` in place; returns when to look again.
    pub(super) async fn follow_consumers(
        &self,
        spec: &ValidSpec,
        target: &Target,
        status: &mut SecretRotationStatus,
    ) -> Result<Followed, Error> {
        let mut wake = None;
        let mut message = None;
        if let Some(mut c) = status.consumers.take() {
            // A rotation whose consumers are not this resource's any more (the spec
            // dropped them) is no longer followed.
            if spec.consumers.is_some() {
                let at_once = spec.strategy == Strategy::SinglePhase;
                wake = self.advance(spec, &mut c, at_once).await;
                status.consumers = Some(c);
            }
        }
        if spec.revocation.after == RevokeAfter::Rollout
            && spec.strategy == Strategy::DualPhase
            && status.in_flight.is_none()
            && status.pending_revocations.is_empty()
        {
            match self.previous_verdict(spec, status).await {
                Some(Verdict::Revoke { forced }) => {
                    message = self.revoke_previous(spec, target, status, forced).await?;
                }
                Some(Verdict::Wait {
                    until,
                    stuck,
                    why,
                    poll,
                }) => {
                    wake = earliest(wake, self.look_again(until, stuck, poll));
                    message = Some(format!("its revocation waits: {why}"));
                }
                None => {}
            }
        }
        Ok(Followed { wake, message })
    }

    /// When to look at a waiting revocation again: at `until`, or sooner while what it
    /// waits for can change by itself.
    fn look_again(&self, until: DateTime<Utc>, stuck: bool, poll: bool) -> DateTime<Utc> {
        match (poll, stuck) {
            (false, _) => until,
            // Past maxWait: `until` is behind; every 30 s, never a hot loop.
            (true, true) => self.now + STUCK_POLL,
            (true, false) => until.min(self.now + self.poll()),
        }
    }

    fn poll(&self) -> TimeDelta {
        TimeDelta::from_std(self.ctx.settings.consumer_poll_interval)
            .unwrap_or(TimeDelta::seconds(5))
    }

    /// Restarts (once the delay has passed), then follows the rollouts; past
    /// `revocation.maxWait` says the consumers are stuck — also when a restart could
    /// not be written (it is retried on every look, stuck or not).
    async fn advance(
        &self,
        spec: &ValidSpec,
        c: &mut ConsumersStatus,
        at_once: bool,
    ) -> Option<DateTime<Utc>> {
        if c.phase == ConsumerPhase::RolledOut {
            return None;
        }
        if c.phase == ConsumerPhase::Restarting {
            let delay = if at_once {
                std::time::Duration::ZERO
            } else {
                self.ctx.settings.consumer_restart_delay
            };
            let due = at(c.since, delay);
            if self.now < due {
                return Some(due);
            }
        }
        let written = self.restart_and_follow(c).await;
        if written && c.phase == ConsumerPhase::Restarting {
            c.phase = ConsumerPhase::RollingOut;
        }
        // With consumers rotor does not follow, "every consumer rolled out" is never
        // known: the rotation stays RollingOut until maxWait says it is stuck.
        if written && c.workloads.iter().all(|w| w.rolled_out) && c.incomplete.is_none() {
            c.phase = ConsumerPhase::RolledOut;
            info!(name = %self.sr.name_any(), rotation = c.rotation, "consumers rolled out");
            self.publish(
                EventType::Normal,
                "ConsumersRolledOut",
                "Rollout",
                format!(
                    "every consumer of rotation {} runs the new credential: {}",
                    c.rotation,
                    names(&c.workloads)
                ),
            )
            .await;
            return None;
        }
        let deadline = at(c.since, spec.revocation.max_wait);
        if self.now >= deadline && c.stuck_since.is_none() {
            c.phase = ConsumerPhase::Stuck;
            c.stuck_since = Some(self.now);
            let pending: Vec<&WorkloadStatus> =
                c.workloads.iter().filter(|w| !w.rolled_out).collect();
            let mut what = pending
                .iter()
                .take(5)
                .map(|w| format!("{}/{} ({})", w.kind.as_str(), w.name, w.message))
                .collect::<Vec<_>>();
            if let Some(why) = &c.incomplete {
                what.push(format!("consumers not followed ({why})"));
            }
            let what = what.join(", ");
            let keep = match spec.revocation.on_timeout {
                crate::api::OnTimeout::Keep => {
                    "the previous credential stays valid and the next rotation waits"
                }
                crate::api::OnTimeout::Revoke => {
                    "onTimeout: Revoke: the previous credential is revoked anyway"
                }
            };
            let message = format!(
                "consumers did not roll out within revocation.maxWait ({}): {what}; {keep}",
                humantime::format_duration(spec.revocation.max_wait)
            );
            warn!(name = %self.sr.name_any(), %message, "consumer rollout stuck");
            self.publish(
                EventType::Warning,
                "ConsumerRolloutStuck",
                "Rollout",
                message.clone(),
            )
            .await;
            self.notify(spec, NotifyEvent::ConsumerRolloutStuck, message, None)
                .await;
        }
        let poll = if c.phase == ConsumerPhase::Stuck {
            STUCK_POLL
        } else {
            self.poll()
        };
        Some(if self.now < deadline {
            (self.now + poll).min(deadline)
        } else {
            self.now + poll
        })
    }

    /// Looks at every consumer not rolled out yet. One that does not carry this
    /// rotation's token is restarted: the first time, or again when its pod template
    /// lost the token before it rolled out (a `kubectl rollout undo` during the
    /// rollout brings back pods from before the rotation's Secret) — at most
    /// [`MAX_RESTARTS`] writes. One that carries it is followed to its rollout.
    /// Returns whether every restart it needed was written (else it is retried).
    async fn restart_and_follow(&self, c: &mut ConsumersStatus) -> bool {
        let workloads = self.workloads();
        let mut all = true;
        let mut restarted = Vec::new();
        for w in c.workloads.iter_mut().filter(|w| !w.rolled_out) {
            let r = workload_ref(w);
            let key = self.book_key(&r);
            let seen = match workloads.observe(&r, w.generation).await {
                Ok(Found::Workload(seen)) => seen,
                Ok(absent) => {
                    gone(w, absent);
                    self.ctx.restarts.forget(&key, &c.token);
                    continue;
                }
                Err(e) => {
                    all = false;
                    w.message = format!("reading it failed: {}", said(&e));
                    continue;
                }
            };
            if carries(seen.restarted_with.as_deref(), &c.token) {
                // Restarted for this rotation: by this one, by another rotation's
                // coalesced write, or before an operator restart.
                follow(w, seen);
                continue;
            }
            if w.restarts >= MAX_RESTARTS {
                w.rolled_out = false;
                w.message = format!(
                    "its pod template lost this rotation's {} token again after {} restarts \
                     (rolled back?): not restarted again, so pods from before the rotation \
                     may be running",
                    crate::api::RESTARTED_AT_ANNOTATION,
                    w.restarts
                );
                continue;
            }
            let looked = Made {
                uid: seen.uid,
                generation: seen.generation,
            };
            let tokens = match self.ctx.restarts.take(&key, &c.token, &looked) {
                Take::Write(tokens) => tokens,
                Take::Writing => {
                    // Another rotation is writing this one's token right now, or wrote
                    // it after this look: the next look sees it on the workload.
                    all = false;
                    w.message = "restarted with another rotation's write; checking".into();
                    continue;
                }
            };
            let written = workloads.restart(&r, &tokens, c.rotation).await;
            let made = match &written {
                Ok(Found::Workload(seen) | Found::Carried(seen)) => Some(Made {
                    uid: seen.uid.clone(),
                    generation: seen.generation,
                }),
                _ => None,
            };
            self.ctx.restarts.written(&key, &tokens, made);
            match written {
                // Another write carried it since the look: followed, not counted.
                Ok(Found::Carried(seen)) => follow(w, seen),
                Ok(Found::Workload(seen)) => {
                    let again = w.restarts > 0;
                    w.restarts += 1;
                    w.generation = seen.generation;
                    w.rolled_out = false;
                    w.message = if again {
                        "restarted again: its pod template had lost this rotation's token (rolled back?)".into()
                    } else {
                        "restarted".into()
                    };
                    crate::metrics::Metrics::result(
                        &self.ctx.metrics.consumer_restarts,
                        "restarted",
                    );
                    restarted.push(if again {
                        format!("{} (again: it had lost the token)", label(&r))
                    } else {
                        label(&r)
                    });
                }
                Ok(absent) => {
                    gone(w, absent);
                    self.ctx.restarts.forget(&key, &c.token);
                }
                Err(e) => {
                    all = false;
                    crate::metrics::Metrics::result(&self.ctx.metrics.consumer_restarts, "failed");
                    w.message = format!("restart failed: {}", said(&e));
                    warn!(name = %self.sr.name_any(), workload = %label(&r), error = %e, "restarting a consumer failed");
                }
            }
        }
        if !restarted.is_empty() {
            self.publish(
                EventType::Normal,
                "ConsumersRestarted",
                "Restart",
                format!(
                    "restarted for rotation {} ({}={}): {}",
                    c.rotation,
                    crate::api::RESTARTED_AT_ANNOTATION,
                    c.token,
                    restarted.join(", ")
                ),
            )
            .await;
        }
        all
    }

    /// The gates on revoking the live credential in the inactive slot: `None` when
    /// there is none.
    async fn previous_verdict(
        &self,
        spec: &ValidSpec,
        status: &mut SecretRotationStatus,
    ) -> Option<Verdict> {
        let pair = status::slot_pair(status);
        let previous = pair.previous_slot()?.clone();
        let since = status.last_rotated_at.unwrap_or(self.now);
        let consumers = match (&spec.consumers, &status.consumers) {
            (Some(_), Some(c)) if c.rotation == status.rotation_count => {
                let mut waiting: Vec<String> = c
                    .workloads
                    .iter()
                    .filter(|w| !w.rolled_out && c.phase != ConsumerPhase::RolledOut)
                    .map(|w| format!("{}/{}", w.kind.as_str(), w.name))
                    .collect();
                // Consumers rotor does not follow may still use it: never "rolled out".
                if let Some(why) = &c.incomplete {
                    waiting.push(format!("consumers not followed ({why})"));
                }
                if waiting.is_empty() {
                    ConsumerState::RolledOut
                } else {
                    ConsumerState::Waiting(waiting)
                }
            }
            _ => ConsumerState::None,
        };
        let policy = &spec.revocation;
        let first = crate::rotation::revocation::judge(
            policy,
            since,
            self.now,
            &consumers,
            Ok(&Usage::Unknown),
        );
        // Only a credential every other gate would let go is worth a provider call.
        if first != (Verdict::Revoke { forced: None }) {
            return Some(first);
        }
        // A provider that cannot answer may be one whose credential is in use: the
        // revocation waits as for one in use (until maxWait, then onTimeout).
        let usage = spec
            .provider
            .in_use(&previous.id, since)
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &usage {
            warn!(name = %self.sr.name_any(), error = %e, "asking the provider whether the previous credential is in use failed; the revocation waits");
        }
        let said = match &usage {
            Ok(Usage::Unknown) => None,
            Ok(u) => Some(u.to_string()),
            Err(e) => Some(format!("unanswered: {e}")),
        };
        if let Some(c) = status.consumers.as_mut() {
            c.usage = said;
        }
        Some(crate::rotation::revocation::judge(
            policy,
            since,
            self.now,
            &consumers,
            usage.as_ref().map_err(String::as_str),
        ))
    }

    /// Step 3: what holds back a rotation that would revoke the previous credential;
    /// `None` when nothing does. An emergency is never held, nor a rotation already
    /// under way.
    pub(super) async fn rotation_hold(
        &self,
        spec: &ValidSpec,
        trigger: crate::rotation::Trigger,
    ) -> Option<(String, DateTime<Utc>, bool)> {
        use crate::rotation::Trigger as T;
        if matches!(trigger, T::Emergency | T::Resume | T::Initial)
            || spec.strategy != Strategy::DualPhase
            || self.old.in_flight.is_some()
        {
            return None;
        }
        let mut status = self.old.clone();
        match self.previous_verdict(spec, &mut status).await? {
            Verdict::Revoke { forced: Some(why) } => {
                // The rotation revokes it anyway: say so before it does.
                let message = format!("the rotation revokes the previous credential anyway: {why}");
                warn!(name = %self.sr.name_any(), %message);
                self.publish(EventType::Warning, "ForcedRevocation", "Rotate", message)
                    .await;
                None
            }
            Verdict::Revoke { forced: None } => None,
            Verdict::Wait {
                why,
                until,
                stuck,
                poll,
            } => Some((why, self.look_again(until, stuck, poll), stuck)),
        }
    }

    /// Revokes the previous credential before the next rotation: first out of the
    /// target Secret (`_PREVIOUS`), then at the provider, then marked revoked in the
    /// vault and in status; `PreviousRevoked` says so. Returns what status says.
    async fn revoke_previous(
        &self,
        spec: &ValidSpec,
        target: &Target,
        status: &mut SecretRotationStatus,
        forced: Option<String>,
    ) -> Result<Option<String>, Error> {
        let mut pair = status::slot_pair(status);
        let (Some(active_index), Some(active), Some(previous)) = (
            pair.active,
            pair.active_slot().cloned(),
            pair.previous_slot().cloned(),
        ) else {
            return Ok(None);
        };
        // Never revoke what the Secret still hands out. A Secret that does not hold
        // the active credential is restored first (the next settle), then revoked.
        if !self
            .drop_previous_keys(spec, target, active_index, &active.fingerprint)
            .await?
        {
            return Ok(None);
        }
        let outcome = match spec.provider.revoke(&previous.id).await {
            Ok(o) => o,
            Err(e) => {
                let message = format!(
                    "revoking the previous credential {} ({}) failed: {e}; retrying",
                    previous.id, previous.fingerprint
                );
                warn!(name = %self.sr.name_any(), %message);
                if self.old.last_rotation_message != message {
                    self.publish(EventType::Warning, "RevokeFailed", "Revoke", message)
                        .await;
                }
                return Ok(None);
            }
        };
        if let Some(slot) = pair.slots[usize::from(1 - active_index)].as_mut() {
            slot.revoked_at = Some(self.now);
        }
        status::set_slots(status, &pair);
        let this = SlotRef {
            id: previous.id.clone(),
            fingerprint: previous.fingerprint.clone(),
        };
        if let Ok(vault) = self.vault().await {
            if let Err(e) = vault.mark_revoked(&[this], self.retention()).await {
                warn!(error = %e, "marking the revoked escrow entry failed");
            }
            let detail = Some(match &forced {
                Some(why) => why.clone(),
                None => "every gate open (revocation.after: Rollout)".into(),
            });
            Audit::operator(&vault)
                .record(
                    "revoke",
                    Some(&previous.id),
                    Some(previous.fingerprint.clone()),
                    None,
                    detail,
                )
                .await;
        }
        let why = match &forced {
            Some(why) => format!("revoked anyway: {why}"),
            None => match &status.consumers {
                Some(c) if c.phase == ConsumerPhase::RolledOut => {
                    "every consumer has rolled out".to_string()
                }
                _ => "revocation.minValidity has passed".to_string(),
            },
        };
        let unsupported = if outcome == Revocation::Unsupported {
            " (the provider cannot revoke: it stays valid at the vendor, but rotor no longer hands it out)"
        } else {
            ""
        };
        let message = format!(
            "previous credential {} ({}) revoked: {why}{unsupported}",
            previous.id, previous.fingerprint
        );
        info!(name = %self.sr.name_any(), credential = %previous.id, fingerprint = %previous.fingerprint, "previous credential revoked");
        crate::metrics::Metrics::result(
            &self.ctx.metrics.early_revocations,
            if forced.is_some() {
                "timeout"
            } else {
                "rollout"
            },
        );
        let type_ = if forced.is_some() {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.publish(type_, "PreviousRevoked", "Revoke", message.clone())
            .await;
        self.notify(
            spec,
            NotifyEvent::PreviousRevoked,
            message.clone(),
            Some(previous.fingerprint.clone()),
        )
        .await;
        Ok(Some(message))
    }
}

/// What following the consumers found: when to look again, and what status says
/// after a revocation.
pub(super) struct Followed {
    pub wake: Option<DateTime<Utc>>,
    pub message: Option<String>,
}

fn names(workloads: &[WorkloadStatus]) -> String {
    let shown: Vec<String> = workloads
        .iter()
        .take(10)
        .map(|w| format!("{}/{}", w.kind.as_str(), w.name))
        .collect();
    let more = workloads.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else if shown.is_empty() {
        "none".into()
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_the_rotation_not_the_second() {
        assert_eq!(token(7, "sha256:9f2c1a0bdead"), "7-9f2c1a0b");
        assert_eq!(token(7, "hmac:41aa07de"), "7-41aa07de");
        assert_ne!(token(7, "sha256:9f2c1a0b"), token(8, "sha256:9f2c1a0b"));
        assert!(carries(Some("3-aaaa,7-9f2c1a0b"), "7-9f2c1a0b"));
        assert!(!carries(Some("17-9f2c1a0b"), "7-9f2c1a0b"));
        assert!(!carries(None, "7-9f2c1a0b"));
    }

    /// The value a rotation is to write (panics on anything else).
    fn write(take: Take) -> String {
        match take {
            Take::Write(value) => value,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    /// A look at (or a write of) workload `uid` at `generation`.
    fn at(uid: &str, generation: i64) -> Made {
        Made {
            uid: Some(uid.into()),
            generation: Some(generation),
        }
    }

    #[test]
    fn restarts_within_the_delay_are_written_once() {
        let book = Restarts::default();
        let look = at("u-web", 3);
        book.register("shop/Deployment/web", "3-aaaa");
        book.register("shop/Deployment/web", "5-bbbb");
        book.register("shop/Deployment/api", "3-aaaa");
        // The first rotation to write takes every waiting token of the workload.
        let value = write(book.take("shop/Deployment/web", "3-aaaa", &look));
        assert_eq!(value, "3-aaaa,5-bbbb");
        // While that write is under way, the other rotation does not write its own.
        assert_eq!(
            book.take("shop/Deployment/web", "5-bbbb", &look),
            Take::Writing
        );
        // The write failed: both wait again, and the next writer takes both.
        book.written("shop/Deployment/web", &value, None);
        let again = write(book.take("shop/Deployment/web", "5-bbbb", &look));
        assert_eq!(again, "3-aaaa,5-bbbb");
        book.written("shop/Deployment/web", &again, Some(at("u-web", 4)));
        // Just written: a rotation that looked at the workload before that write
        // landed does not write its token again alone (a second rollout that would
        // drop the other's token): it looks again, and then sees its token there.
        assert_eq!(
            book.take("shop/Deployment/web", "3-aaaa", &look),
            Take::Writing
        );
        // A look that saw that write's generation, or a later one, without the token
        // found it taken off again (a rollback may run pods from before the Secret):
        // written again. So is another object of that name.
        for seen in [at("u-web", 4), at("u-web", 5), at("u-new", 1)] {
            assert_eq!(
                write(book.take("shop/Deployment/web", "3-aaaa", &seen)),
                "3-aaaa"
            );
            book.written("shop/Deployment/web", "3-aaaa", None);
            book.forget("shop/Deployment/web", "3-aaaa");
        }
        // A third rotation writing meanwhile (a single-phase one: no delay) hides
        // neither the first write under way nor, once it ends, what it carried.
        let db = at("u-db", 7);
        book.register("shop/Deployment/db", "1-aaaa");
        book.register("shop/Deployment/db", "1-bbbb");
        let first = write(book.take("shop/Deployment/db", "1-aaaa", &db));
        assert_eq!(first, "1-aaaa,1-bbbb");
        let third = write(book.take("shop/Deployment/db", "2-cccc", &db));
        assert_eq!(third, "2-cccc");
        book.written("shop/Deployment/db", &third, Some(at("u-db", 8)));
        assert_eq!(
            book.take("shop/Deployment/db", "1-bbbb", &db),
            Take::Writing
        );
        book.written("shop/Deployment/db", &first, Some(at("u-db", 9)));
        assert_eq!(
            book.take("shop/Deployment/db", "1-bbbb", &db),
            Take::Writing
        );
        assert_eq!(
            book.take("shop/Deployment/db", "2-cccc", &db),
            Take::Writing
        );
        // A reply without a generation: the rotation looks again (and then sees its
        // token on the workload) instead of following an unknown generation.
        let x = at("u-x", 1);
        book.register("shop/Deployment/x", "1-aaaa");
        let written = write(book.take("shop/Deployment/x", "2-bbbb", &x));
        let unknown = Made {
            uid: Some("u-x".into()),
            generation: None,
        };
        book.written("shop/Deployment/x", &written, Some(unknown));
        assert_eq!(book.take("shop/Deployment/x", "1-aaaa", &x), Take::Writing);
        // Written: a later rotation writes alone.
        assert_eq!(
            write(book.take("shop/Deployment/web", "7-cccc", &look)),
            "7-cccc"
        );
        // Bounded: never more than MAX_TOKENS in one value.
        for i in 0..40 {
            book.register("shop/Deployment/many", &format!("{i}-x"));
        }
        let value = write(book.take("shop/Deployment/many", "0-x", &look));
        // A token that will never be written is forgotten, not carried by the next.
        book.register("shop/Rollout/gone", "1-aaaa");
        book.forget("shop/Rollout/gone", "1-aaaa");
        assert_eq!(
            write(book.take("shop/Rollout/gone", "2-bbbb", &look)),
            "2-bbbb"
        );
        assert_eq!(value.split(',').count(), MAX_NEW_TOKENS);
        assert!(carries(Some(&value), "0-x"));
    }
}
