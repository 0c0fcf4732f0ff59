//! Vendor fakes on 127.0.0.1 that follow the documented APIs: paths, auth headers,
//! status codes, 429 with rate-limit headers, 404 on deleting a gone key, the Convox
//! updating → running cycle. Each counts what it was asked, so tests assert on the
//! vendor's side.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failure knobs shared by the fakes. Each applies to every route of its fake, before
/// authentication (a vendor's edge answers 429 and 503 before it looks at a token).
#[derive(Default, Debug)]
pub struct Knobs {
    /// Answer the next N requests with 429.
    pub rate_limit_next: u32,
    /// Answer the next N requests with 503.
    pub unavailable_next: u32,
    /// The `Retry-After` header of those 429 and 503 answers, as sent (seconds, an
    /// HTTP date, or nonsense); `None` sends none (the 429 then carries
    /// `X-RateLimit-Reset: 1`).
    pub retry_after: Option<String>,
    /// Accept the next N requests and never answer them (the connection stays open):
    /// a vendor that stalls.
    pub stall_next: u32,
    /// Answer every create with a body that is not JSON.
    pub garbage: bool,
    /// Make reading a key back (the test call) fail.
    pub fail_test: bool,
    /// Answer every delete (revoke) with 500.
    pub fail_delete: bool,
    /// Every request the knobs saw, when, and what they did with it: `429`, `503`,
    /// `stall` or `pass`.
    pub seen: Vec<(Instant, &'static str)>,
}

/// What the knobs do with one request.
enum Injected {
    Answer(Response),
    Stall,
}

pub struct Fake<S> {
    pub url: String,
    pub state: Arc<Mutex<S>>,
    task: tokio::task::JoinHandle<()>,
}

impl<S> Fake<S> {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        self.state.lock().unwrap()
    }

    /// Stops answering (the vendor is down: connections are refused).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl<S> Drop for Fake<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S: Send + 'static>(router: Router, state: Arc<Mutex<S>>) -> Fake<S> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Fake { url, state, task }
}

fn random_token(prefix: &str) -> String {
    use rand::Rng;
    let tail: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let token = format!("{prefix}{tail}");
    super::remember_issued(&token);
    token
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

/// Applies the 429 / 503 / stall knobs; `None` lets the request through.
fn injected(knobs: &mut Knobs) -> Option<Injected> {
    let outcome = injected_now(knobs);
    let what = match &outcome {
        None => "pass",
        Some(Injected::Stall) => "stall",
        Some(Injected::Answer(r)) if r.status() == StatusCode::TOO_MANY_REQUESTS => "429",
        Some(Injected::Answer(_)) => "503",
    };
    knobs.seen.push((Instant::now(), what));
    outcome
}

fn injected_now(knobs: &mut Knobs) -> Option<Injected> {
    let asked = knobs.retry_after.clone();
    let retry_after = |r: &mut Response| {
        if let Some(v) = &asked {
            r.headers_mut()
                .insert("retry-after", v.parse().expect("a header value"));
        }
    };
    if knobs.stall_next > 0 {
        knobs.stall_next -= 1;
        return Some(Injected::Stall);
    }
    if knobs.rate_limit_next > 0 {
        knobs.rate_limit_next -= 1;
        let mut r = message(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
        retry_after(&mut r);
        if knobs.retry_after.is_none() {
            r.headers_mut()
                .insert("x-ratelimit-reset", "1".parse().unwrap());
        }
        return Some(Injected::Answer(r));
    }
    if knobs.unavailable_next > 0 {
        knobs.unavailable_next -= 1;
        let mut r = message(StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable");
        retry_after(&mut r);
        return Some(Injected::Answer(r));
    }
    None
}

/// A fake's state as the knob layer sees it.
pub trait Vendor: Send + 'static {
    fn knobs(&mut self) -> &mut Knobs;
    /// Counts one request (whatever its answer).
    fn counted(&mut self);
}

/// The layer in front of every route of the Convex, Convox and key-API fakes: counts
/// the request and applies the knobs.
async fn knob_layer<S: Vendor>(
    State(st): State<Arc<Mutex<S>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let action = {
        let mut s = st.lock().unwrap();
        s.counted();
        injected(s.knobs())
    };
    match action {
        None => next.run(request).await,
        Some(Injected::Answer(r)) => r,
        Some(Injected::Stall) => std::future::pending().await,
    }
}

fn with_knobs<S: Vendor>(
    router: Router<Arc<Mutex<S>>>,
    state: &Arc<Mutex<S>>,
) -> Router<Arc<Mutex<S>>> {
    router.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        knob_layer::<S>,
    ))
}

// ---------------------------------------------------------------- Supabase

#[derive(Clone, Debug)]
pub struct SupabaseKey {
    pub id: String,
    pub name: String,
    pub key_type: String,
    pub api_key: String,
    pub deleted: bool,
}

/// The Management API's rate limit: `limit` requests per `window` per token (120 a
/// minute, documented), counted in fixed windows that start with the first request
/// after the previous one ended. Every answer carries `X-RateLimit-Limit`,
/// `X-RateLimit-Remaining` and `X-RateLimit-Reset` (whole seconds until the window
/// ends, rounded up) computed from the bucket; a request beyond the limit is answered
/// 429 with the same headers.
#[derive(Debug)]
pub struct RateLimit {
    pub limit: u32,
    pub window: Duration,
    started: Option<Instant>,
    used: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new(120, Duration::from_secs(60))
    }
}

impl RateLimit {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            started: None,
            used: 0,
        }
    }

    /// Takes one request from the bucket: whether it was within the limit, and the
    /// headers to send.
    fn take(&mut self) -> (bool, [(&'static str, String); 3]) {
        let now = Instant::now();
        let started = match self.started {
            Some(at) if now < at + self.window => at,
            _ => {
                self.used = 0;
                self.started = Some(now);
                now
            }
        };
        let within = self.used < self.limit;
        if within {
            self.used += 1;
        }
        let left = (started + self.window).saturating_duration_since(now);
        let reset = left.as_millis().div_ceil(1000).max(1);
        (
            within,
            [
                ("x-ratelimit-limit", self.limit.to_string()),
                (
                    "x-ratelimit-remaining",
                    (self.limit - self.used).to_string(),
                ),
                ("x-ratelimit-reset", reset.to_string()),
            ],
        )
    }
}

#[derive(Default, Debug)]
pub struct Supabase {
    pub admin_token: String,
    pub project_ref: String,
    pub keys: Vec<SupabaseKey>,
    pub creates: u32,
    pub deleted_ids: Vec<String>,
    pub deletes_of_gone: u32,
    pub requests: u32,
    /// Answered 429: by the knobs or by the rate limit.
    pub rate_limited: u32,
    /// Requests that arrived after the rate limit announced `remaining: 0` in the
    /// same window (each answered 429): a client that honours the headers sends none.
    pub over_limit: u32,
    pub rate: RateLimit,
    pub knobs: Knobs,
}

impl Supabase {
    pub fn live(&self) -> Vec<&SupabaseKey> {
        self.keys.iter().filter(|k| !k.deleted).collect()
    }

    pub fn key(&self, id: &str) -> Option<&SupabaseKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}

type Sb = State<Arc<Mutex<Supabase>>>;

/// The rate limit and the knobs, in front of every Supabase route; the rate-limit
/// headers go on every answer.
async fn supabase_layer(
    State(st): Sb,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (action, headers) = {
        let mut s = st.lock().unwrap();
        s.requests += 1;
        let (within, headers) = s.rate.take();
        let action = if !within {
            s.over_limit += 1;
            Some(Injected::Answer(message(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
            )))
        } else {
            injected(&mut s.knobs)
        };
        if matches!(action, Some(Injected::Answer(ref r)) if r.status() == StatusCode::TOO_MANY_REQUESTS)
        {
            s.rate_limited += 1;
        }
        (action, headers)
    };
    let mut response = match action {
        None => next.run(request).await,
        Some(Injected::Answer(r)) => r,
        Some(Injected::Stall) => std::future::pending().await,
    };
    for (name, value) in headers {
        // The knobs' own 429 says when to come back; the bucket's headers fill in.
        if !response.headers().contains_key(name) {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
    }
    response
}

fn supabase_gate(s: &mut Supabase, headers: &HeaderMap, project: &str) -> Option<Response> {
    if bearer(headers).as_deref() != Some(s.admin_token.as_str()) {
        return Some(message(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    if project != s.project_ref {
        return Some(message(StatusCode::NOT_FOUND, "Project not found"));
    }
    None
}

fn key_json(k: &SupabaseKey, reveal: bool) -> Value {
    let shown = if reveal {
        k.api_key.clone()
    } else {
        format!("{}••••", &k.api_key[..14])
    };
    json!({
        "api_key": shown, "id": k.id, "type": k.key_type, "prefix": &k.api_key[..14], "name": k.name,
        "description": "", "hash": "h", "inserted_at": "2026-11-23T00:00:00Z", "updated_at": "2026-11-23T00:00:00Z"
    })
}

async fn sb_create(
    State(st): Sb,
    Path(project): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Some(r) = supabase_gate(&mut s, &headers, &project) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return message(StatusCode::BAD_REQUEST, "invalid JSON");
    };
    let name = req["name"].as_str().unwrap_or_default().to_string();
    let key_type = req["type"].as_str().unwrap_or_default().to_string();
    let name_ok = (4..=64).contains(&name.len())
        && name.starts_with(|c: char| c == '_' || c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit());
    if !name_ok {
        return message(
            StatusCode::BAD_REQUEST,
            "name must match ^[a-z_][a-z0-9_]+$",
        );
    }
    if !["publishable", "secret"].contains(&key_type.as_str()) {
        return message(
            StatusCode::BAD_REQUEST,
            "type must be publishable or secret",
        );
    }
    if s.knobs.garbage {
        return (StatusCode::CREATED, "<html>oops</html>").into_response();
    }
    s.creates += 1;
    let key = SupabaseKey {
        id: format!("{:08x}-0000-4000-8000-{:012x}", s.creates, s.creates),
        name,
        api_key: random_token(if key_type == "secret" {
            "sb_secret_"
        } else {
            "sb_publishable_"
        }),
        key_type,
        deleted: false,
    };
    s.keys.push(key.clone());
    let reveal = q.get("reveal").is_some_and(|v| v == "true");
    (StatusCode::CREATED, Json(key_json(&key, reveal))).into_response()
}

async fn sb_list(State(st): Sb, Path(project): Path<String>, headers: HeaderMap) -> Response {
    let mut s = st.lock().unwrap();
    if let Some(r) = supabase_gate(&mut s, &headers, &project) {
        return r;
    }
    let keys: Vec<Value> = s.live().into_iter().map(|k| key_json(k, false)).collect();
    Json(keys).into_response()
}

async fn sb_get(
    State(st): Sb,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Some(r) = supabase_gate(&mut s, &headers, &project) {
        return r;
    }
    if s.knobs.fail_test {
        return message(StatusCode::NOT_FOUND, "API key not found");
    }
    match s.key(&id).filter(|k| !k.deleted) {
        Some(k) => Json(key_json(k, q.get("reveal").is_some_and(|v| v == "true"))).into_response(),
        None => message(StatusCode::NOT_FOUND, "API key not found"),
    }
}

async fn sb_delete(
    State(st): Sb,
    Path((project, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Some(r) = supabase_gate(&mut s, &headers, &project) {
        return r;
    }
    if s.knobs.fail_delete {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    }
    let Some(key) = s.keys.iter_mut().find(|k| k.id == id && !k.deleted) else {
        s.deletes_of_gone += 1;
        return message(StatusCode::NOT_FOUND, "API key not found");
    };
    key.deleted = true;
    let body = key_json(key, false);
    s.deleted_ids.push(id);
    Json(body).into_response()
}

pub async fn supabase(project_ref: &str) -> Fake<Supabase> {
    let state = Arc::new(Mutex::new(Supabase {
        admin_token: random_token("sbp_"),
        project_ref: project_ref.into(),
        ..Supabase::default()
    }));
    let router = Router::new()
        .route(
            "/v1/projects/{project}/api-keys",
            post(sb_create).get(sb_list),
        )
        .route(
            "/v1/projects/{project}/api-keys/{id}",
            get(sb_get).delete(sb_delete),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            supabase_layer,
        ))
        .with_state(state.clone());
    serve(router, state).await
}

// ---------------------------------------------------------------- Convex

/// One call the Convex fake answered (after the knobs), with the token it carried.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvexCall {
    /// `create`, `list` or `delete`.
    pub op: &'static str,
    /// The Bearer token sent ("" without one).
    pub token: String,
    /// The token name created or deleted.
    pub name: Option<String>,
    /// The token a create answered with.
    pub issued: Option<String>,
    pub status: u16,
}

#[derive(Default, Debug)]
pub struct Convex {
    pub admin_token: String,
    /// name → token
    pub tokens: HashMap<String, String>,
    pub creates: u32,
    pub deleted: Vec<String>,
    /// Lists made with a live token that is not the admin's (see `calls` for which).
    pub lists_by_new_token: u32,
    /// Every call, in order, with the token it used.
    pub calls: Vec<ConvexCall>,
    pub requests: u32,
    /// Create the next N tokens but never deliver the answer (the connection stays
    /// open): the caller cannot know the value, the name is taken.
    pub lose_create_answer_next: u32,
    pub knobs: Knobs,
}

impl Convex {
    /// The calls of one kind.
    pub fn calls_of(&self, op: &str) -> Vec<&ConvexCall> {
        self.calls.iter().filter(|c| c.op == op).collect()
    }

    /// Every `list` made with a token other than the admin's, paired with the create
    /// that issued that token (`None`: a token no create of this fake issued).
    pub fn test_calls(&self) -> Vec<(&ConvexCall, Option<&ConvexCall>)> {
        self.calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.op == "list" && c.token != self.admin_token)
            .map(|(at, c)| {
                let create = self.calls[..at]
                    .iter()
                    .rev()
                    .find(|k| k.op == "create" && k.issued.as_deref() == Some(c.token.as_str()));
                (c, create)
            })
            .collect()
    }
}

impl Vendor for Convex {
    fn knobs(&mut self) -> &mut Knobs {
        &mut self.knobs
    }
    fn counted(&mut self) {
        self.requests += 1;
    }
}

type Cx = State<Arc<Mutex<Convex>>>;

/// The caller's token if it is the admin's or a live one.
fn convex_auth(s: &Convex, headers: &HeaderMap) -> Option<String> {
    let token = bearer(headers)?;
    (token == s.admin_token || s.tokens.values().any(|t| *t == token)).then_some(token)
}

fn convex_call(
    s: &mut Convex,
    op: &'static str,
    headers: &HeaderMap,
    name: Option<&str>,
    issued: Option<&str>,
    response: Response,
) -> Response {
    s.calls.push(ConvexCall {
        op,
        token: bearer(headers).unwrap_or_default(),
        name: name.map(str::to_string),
        issued: issued.map(str::to_string),
        status: response.status().as_u16(),
    });
    response
}

async fn cx_create(State(st): Cx, headers: HeaderMap, Json(req): Json<Value>) -> Response {
    let (response, lost) = {
        let mut s = st.lock().unwrap();
        let response = cx_create_locked(&mut s, &headers, &req);
        let lost = response.status().is_success() && s.lose_create_answer_next > 0;
        if lost {
            s.lose_create_answer_next -= 1;
        }
        (response, lost)
    };
    if lost {
        return std::future::pending().await;
    }
    response
}

fn cx_create_locked(s: &mut Convex, headers: &HeaderMap, req: &Value) -> Response {
    let name = req["name"].as_str().unwrap_or_default().to_string();
    let name = Some(name.as_str()).filter(|n| !n.is_empty());
    if convex_auth(s, headers).is_none() {
        let r = message(StatusCode::UNAUTHORIZED, "invalid token");
        return convex_call(s, "create", headers, name, None, r);
    }
    let Some(name) = name else {
        let r = message(StatusCode::BAD_REQUEST, "name is required");
        return convex_call(s, "create", headers, None, None, r);
    };
    if s.tokens.contains_key(name) {
        let r = message(StatusCode::CONFLICT, "a token with this name exists");
        return convex_call(s, "create", headers, Some(name), None, r);
    }
    s.creates += 1;
    let token = random_token("cvx_pat_");
    s.tokens.insert(name.to_string(), token.clone());
    let r = Json(json!({ "accessToken": token })).into_response();
    convex_call(s, "create", headers, Some(name), Some(&token), r)
}

async fn cx_list(State(st): Cx, headers: HeaderMap) -> Response {
    let mut s = st.lock().unwrap();
    let Some(token) = convex_auth(&s, &headers) else {
        let r = message(StatusCode::UNAUTHORIZED, "invalid token");
        return convex_call(&mut s, "list", &headers, None, None, r);
    };
    if token != s.admin_token {
        s.lists_by_new_token += 1;
    }
    let mut names: Vec<&String> = s.tokens.keys().collect();
    names.sort();
    let r = Json(json!({ "tokens": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>() }))
        .into_response();
    convex_call(&mut s, "list", &headers, None, None, r)
}

async fn cx_delete(State(st): Cx, headers: HeaderMap, Json(req): Json<Value>) -> Response {
    let mut s = st.lock().unwrap();
    let id = req["id"].as_str().unwrap_or_default().to_string();
    if convex_auth(&s, &headers).is_none() {
        let r = message(StatusCode::UNAUTHORIZED, "invalid token");
        return convex_call(&mut s, "delete", &headers, Some(&id), None, r);
    }
    if s.tokens.remove(&id).is_none() {
        let r = message(StatusCode::NOT_FOUND, "token not found");
        return convex_call(&mut s, "delete", &headers, Some(&id), None, r);
    }
    s.deleted.push(id.clone());
    let r = Json(json!({})).into_response();
    convex_call(&mut s, "delete", &headers, Some(&id), None, r)
}

pub async fn convex() -> Fake<Convex> {
    let state = Arc::new(Mutex::new(Convex {
        admin_token: random_token("cvx_admin_"),
        ..Convex::default()
    }));
    let router = Router::new()
        .route("/v1/create_personal_access_token", post(cx_create))
        .route("/v1/list_personal_access_tokens", get(cx_list))
        .route("/v1/delete_personal_access_token", post(cx_delete));
    let router = with_knobs(router, &state).with_state(state.clone());
    serve(router, state).await
}

// ---------------------------------------------------------------- Convox

/// A Convox rack. After a `PUT /system` it updates for `update_takes`: `GET /system`
/// with the new key answers `{"status": "updating"}` until then, and `"running"` after;
/// the old key stops working at the PUT (401), as documented.
#[derive(Debug)]
pub struct Convox {
    pub password: String,
    /// Set by a PUT: the new password and when the update finishes.
    pub updating: Option<(String, Instant)>,
    pub update_takes: Duration,
    pub puts: u32,
    pub raw_put_bodies: Vec<String>,
    /// Requests refused during an update (the old key, or no key).
    pub refused_during_update: u32,
    /// `GET /system` answers `{"status": "updating"}` (to the new key, during an update).
    pub updating_answers: u32,
    pub requests: u32,
    pub knobs: Knobs,
}

impl Convox {
    /// Ends the running update now (the next request sees the rack running).
    pub fn finish_update(&mut self) {
        if let Some((_, until)) = &mut self.updating {
            *until = Instant::now();
        }
    }
}

impl Vendor for Convox {
    fn knobs(&mut self) -> &mut Knobs {
        &mut self.knobs
    }
    fn counted(&mut self) {
        self.requests += 1;
    }
}

type Cv = State<Arc<Mutex<Convox>>>;

fn basic_password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let v = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.1.to_string())
}

fn convox_tick(s: &mut Convox) {
    if let Some((new, until)) = s.updating.clone()
        && Instant::now() >= until
    {
        s.password = new;
        s.updating = None;
    }
}

async fn cv_get(State(st): Cv, headers: HeaderMap) -> Response {
    let mut s = st.lock().unwrap();
    convox_tick(&mut s);
    if let Some((new, _)) = &s.updating {
        // The old key stopped working at the PUT; the new one sees the update.
        if basic_password(&headers).as_deref() == Some(new.as_str()) {
            s.updating_answers += 1;
            return Json(json!({ "name": "rack", "status": "updating", "version": "20261101" }))
                .into_response();
        }
        s.refused_during_update += 1;
        return (StatusCode::UNAUTHORIZED, "invalid authentication").into_response();
    }
    if basic_password(&headers).as_deref() != Some(s.password.as_str()) {
        return (StatusCode::UNAUTHORIZED, "invalid authentication").into_response();
    }
    Json(json!({ "name": "rack", "status": "running", "version": "20261101" })).into_response()
}

async fn cv_put(State(st): Cv, headers: HeaderMap, body: String) -> Response {
    let mut s = st.lock().unwrap();
    convox_tick(&mut s);
    if s.updating.is_some() || basic_password(&headers).as_deref() != Some(s.password.as_str()) {
        return (StatusCode::UNAUTHORIZED, "invalid authentication").into_response();
    }
    s.raw_put_bodies.push(body.clone());
    let Some(encoded) = body.strip_prefix("parameters=Password%3D") else {
        return (
            StatusCode::BAD_REQUEST,
            "expected parameters=Password%3D...",
        )
            .into_response();
    };
    let new: String = url::form_urlencoded::parse(format!("p={encoded}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    if new.is_empty() || new.len() > 50 || !new.chars().all(|c| c.is_ascii_alphanumeric()) {
        return (
            StatusCode::BAD_REQUEST,
            "password must be 1-50 alphanumeric characters",
        )
            .into_response();
    }
    super::remember_issued(&new);
    s.puts += 1;
    let until = Instant::now() + s.update_takes;
    s.updating = Some((new, until));
    Json(json!({ "name": "rack", "status": "updating" })).into_response()
}

pub async fn convox(initial_password: &str) -> Fake<Convox> {
    let state = Arc::new(Mutex::new(Convox {
        password: initial_password.into(),
        updating: None,
        update_takes: Duration::from_millis(600),
        puts: 0,
        raw_put_bodies: Vec::new(),
        refused_during_update: 0,
        updating_answers: 0,
        requests: 0,
        knobs: Knobs::default(),
    }));
    let router = Router::new().route("/system", get(cv_get).put(cv_put));
    let router = with_knobs(router, &state).with_state(state.clone());
    serve(router, state).await
}

// ---------------------------------------------------------------- generic HTTP API (the guide's /admin/keys)

#[derive(Default, Debug)]
pub struct KeyApi {
    pub admin_token: String,
    /// id → (name, key)
    pub keys: HashMap<String, (String, String)>,
    pub creates: u32,
    pub deleted: Vec<String>,
    pub whoami_ok: u32,
    pub requests: u32,
    pub knobs: Knobs,
}

impl Vendor for KeyApi {
    fn knobs(&mut self) -> &mut Knobs {
        &mut self.knobs
    }
    fn counted(&mut self) {
        self.requests += 1;
    }
}

type Ka = State<Arc<Mutex<KeyApi>>>;

async fn ka_create(State(st): Ka, headers: HeaderMap, Json(req): Json<Value>) -> Response {
    let mut s = st.lock().unwrap();
    if bearer(&headers).as_deref() != Some(s.admin_token.as_str()) {
        return message(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if s.knobs.garbage {
        return (StatusCode::CREATED, "<html>oops</html>").into_response();
    }
    s.creates += 1;
    let id = format!("key_{}", s.creates);
    let key = random_token("gk_");
    let name = req["name"].as_str().unwrap_or_default().to_string();
    s.keys.insert(id.clone(), (name.clone(), key.clone()));
    (
        StatusCode::CREATED,
        Json(json!({ "data": { "id": id, "key": key, "name": name } })),
    )
        .into_response()
}

async fn ka_list(State(st): Ka, headers: HeaderMap) -> Response {
    let s = st.lock().unwrap();
    if bearer(&headers).as_deref() != Some(s.admin_token.as_str()) {
        return message(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut keys: Vec<Value> = s
        .keys
        .iter()
        .map(|(id, (name, _))| json!({"id": id, "name": name}))
        .collect();
    keys.sort_by_key(|k| k["id"].as_str().unwrap().to_string());
    Json(json!({ "keys": keys })).into_response()
}

async fn ka_delete(State(st): Ka, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let mut s = st.lock().unwrap();
    if bearer(&headers).as_deref() != Some(s.admin_token.as_str()) {
        return message(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if s.keys.remove(&id).is_none() {
        return message(StatusCode::NOT_FOUND, "no such key");
    }
    s.deleted.push(id);
    StatusCode::NO_CONTENT.into_response()
}

async fn ka_whoami(State(st): Ka, headers: HeaderMap) -> Response {
    let mut s = st.lock().unwrap();
    let token = bearer(&headers).unwrap_or_default();
    if s.keys.values().any(|(_, k)| *k == token) {
        s.whoami_ok += 1;
        Json(json!({ "ok": true })).into_response()
    } else {
        message(StatusCode::UNAUTHORIZED, "unknown key")
    }
}

pub async fn key_api() -> Fake<KeyApi> {
    let state = Arc::new(Mutex::new(KeyApi {
        admin_token: random_token("admin_"),
        ..KeyApi::default()
    }));
    let router = Router::new()
        .route("/admin/keys", post(ka_create).get(ka_list))
        .route("/admin/keys/{id}", axum::routing::delete(ka_delete))
        .route("/whoami", get(ka_whoami));
    let router = with_knobs(router, &state).with_state(state.clone());
    serve(router, state).await
}
