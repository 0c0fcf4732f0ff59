//! `provider.http`: any HTTP API that issues and revokes keys, configured per
//! operation (URL, method, headers with values from Secrets, body template) with
//! JSONPath (RFC 9535) expressions that pull the key and its id from responses.
//! Placeholders: `{{name}}` (issue), `{{id}}` and `{{key}}` (test, revoke).

use super::{BuildContext, HttpClient};
use crate::api::{HttpMethod, HttpRequestSpec, HttpSpec};
use crate::rotation::{Credential, IssueRequest, Provider, ProviderError, Revocation, Usage};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json_path::JsonPath;

const OUTPUT: &str = "apiKey";

pub struct HttpProvider {
    http: HttpClient,
    issue: Operation,
    test: Option<Operation>,
    revoke: Option<Operation>,
    list: Option<(Operation, JsonPath, Option<JsonPath>)>,
    key_path: JsonPath,
    id_path: Option<JsonPath>,
    usage: Option<UsageCheck>,
}

/// `http.usage`: the request and where its answer says how much a key is used.
struct UsageCheck {
    request: Operation,
    count_path: Option<(String, JsonPath)>,
    last_used_path: Option<(String, JsonPath)>,
}

/// What one path of the usage answer says: in use, unused, or nothing readable. A path
/// that selects several values (`$.keys[*].sessions`) says in use when any of them
/// does (counts add up, the latest use wins): a value rotor cannot read is an error
/// only when none of the others says in use.
fn usage_at(
    path: &(String, JsonPath),
    body: &serde_json::Value,
    read: impl Fn(&serde_json::Value) -> Option<Usage>,
    field: &str,
) -> Result<Usage, ProviderError> {
    let found = path.1.query(body).all();
    if found.is_empty() {
        return Err(ProviderError::BadResponse(format!(
            "the usage answer has nothing at http.usage.{field} {:?}",
            path.0
        )));
    }
    let mut unreadable = false;
    let mut usage = Usage::Unused;
    for value in found {
        match read(value) {
            Some(u) => usage = merge(usage, u),
            None => unreadable = true,
        }
    }
    if unreadable && usage == Usage::Unused {
        return Err(ProviderError::BadResponse(format!(
            "the usage answer at http.usage.{field} {:?} is not what it should be (a count: a whole number from 0 to {}; a last use: an RFC 3339 time or unix seconds)",
            path.0,
            u64::MAX
        )));
    }
    Ok(usage)
}

/// Two answers about one key as one: in use when either says so, counts added,
/// the later last use kept.
fn merge(a: Usage, b: Usage) -> Usage {
    match (a, b) {
        (
            Usage::InUse {
                count: c1,
                last_used: t1,
            },
            Usage::InUse {
                count: c2,
                last_used: t2,
            },
        ) => Usage::InUse {
            count: match (c1, c2) {
                (Some(x), Some(y)) => Some(x.saturating_add(y)),
                (x, y) => x.or(y),
            },
            last_used: t1.max(t2),
        },
        (u @ Usage::InUse { .. }, _) | (_, u @ Usage::InUse { .. }) => u,
        (Usage::Unknown, u) | (u, Usage::Unknown) => u,
        (Usage::Unused, Usage::Unused) => Usage::Unused,
    }
}

/// A JSON number (or a string of digits, as vendors with 64-bit counters send them)
/// that is a whole number from 0 to `u64::MAX`; anything else is `None`.
fn whole_number(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            // `3.0`; never a fraction, a negative or one past u64 (the cast would
            // saturate, not fail).
            let f = n.as_f64()?;
            (f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f))
                .then_some(f as u64)
        }),
        serde_json::Value::String(s) => {
            let s = s.trim();
            // `parse` takes a leading `+`: digits only.
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        }
        _ => None,
    }
}

/// A count of uses: a whole number, at least zero.
fn count_usage(v: &serde_json::Value) -> Option<Usage> {
    let n = whole_number(v)?;
    Some(if n == 0 {
        Usage::Unused
    } else {
        Usage::InUse {
            count: Some(n),
            last_used: None,
        }
    })
}

/// A last use after `since` (when the key stopped being active) means in use.
fn last_used_usage(v: &serde_json::Value, since: DateTime<Utc>) -> Option<Usage> {
    let at = match v {
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(secs) => DateTime::from_timestamp(i64::try_from(secs).ok()?, 0)?,
            None => {
                // Fractional seconds (`1733300000.25`); a negative is no last use.
                let f = n.as_f64()?;
                if !(0.0..9.0e15).contains(&f) {
                    return None;
                }
                let secs = f.trunc();
                let nanos = ((f - secs) * 1e9) as u32;
                DateTime::from_timestamp(secs as i64, nanos.min(999_999_999))?
            }
        },
        serde_json::Value::String(s) if s.trim().bytes().all(|b| b.is_ascii_digit()) => {
            DateTime::from_timestamp(i64::try_from(whole_number(v)?).ok()?, 0)?
        }
        serde_json::Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .ok()?
            .with_timezone(&Utc),
        // Never used.
        serde_json::Value::Null => return Some(Usage::Unused),
        _ => return None,
    };
    Some(if at > since {
        Usage::InUse {
            count: None,
            last_used: Some(at),
        }
    } else {
        Usage::Unused
    })
}

/// What a usage answer says, by `countPath` and/or `lastUsedPath`: in use if either
/// says so, even when the other cannot be read (an error lets rotor revoke);
/// otherwise an unreadable answer is the error.
fn read_usage(
    count_path: Option<&(String, JsonPath)>,
    last_used_path: Option<&(String, JsonPath)>,
    body: &serde_json::Value,
    since: DateTime<Utc>,
) -> Result<Usage, ProviderError> {
    let said = [
        count_path.map(|p| usage_at(p, body, count_usage, "countPath")),
        last_used_path.map(|p| usage_at(p, body, |v| last_used_usage(v, since), "lastUsedPath")),
    ];
    let mut usage = Usage::Unused;
    let mut error = None;
    for answer in said.into_iter().flatten() {
        match answer {
            Ok(u) => usage = merge(usage, u),
            Err(e) => error = error.or(Some(e)),
        }
    }
    match error {
        Some(e) if !matches!(usage, Usage::InUse { .. }) => Err(e),
        _ => Ok(usage),
    }
}

struct Operation {
    what: &'static str,
    method: Method,
    url: String,
    headers: Vec<(String, HeaderValue)>,
    body: Option<String>,
    json_body: bool,
}

enum HeaderValue {
    Literal(String),
    Secret(String, SecretString),
}

/// Placeholder values for one request.
#[derive(Default)]
struct Vars<'a> {
    name: Option<&'a str>,
    id: Option<&'a str>,
    key: Option<&'a str>,
}

impl<'a> Vars<'a> {
    /// The placeholders of a request about one key: `{{id}}` only.
    fn id(id: &'a str) -> Self {
        Self {
            id: Some(id),
            ..Self::default()
        }
    }

    /// Fills the placeholders in one pass over the template: a value is never read
    /// again, so a vendor id that says `{{key}}` stays those seven characters.
    fn render(&self, template: &str, encode: impl Fn(&str) -> String) -> String {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(at) = rest.find("{{") {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            let hit = [
                ("{{name}}", self.name),
                ("{{id}}", self.id),
                ("{{key}}", self.key),
            ]
            .into_iter()
            .find_map(|(p, v)| Some((p, v?)).filter(|(p, _)| rest.starts_with(p)));
            match hit {
                Some((placeholder, value)) => {
                    out.push_str(&encode(value));
                    rest = &rest[placeholder.len()..];
                }
                None => {
                    out.push_str("{{");
                    rest = &rest[2..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

fn path(expr: &str, field: &str) -> Result<JsonPath, ProviderError> {
    JsonPath::parse(expr).map_err(|e| {
        ProviderError::InvalidConfig(format!("http.{field} {expr:?} is not a JSONPath: {e}"))
    })
}

impl Operation {
    fn new(
        what: &'static str,
        spec: &HttpRequestSpec,
        default_method: Method,
        ctx: &BuildContext<'_>,
    ) -> Result<Self, ProviderError> {
        let method = match spec.method {
            None => default_method,
            Some(HttpMethod::Get) => Method::GET,
            Some(HttpMethod::Post) => Method::POST,
            Some(HttpMethod::Put) => Method::PUT,
            Some(HttpMethod::Patch) => Method::PATCH,
            Some(HttpMethod::Delete) => Method::DELETE,
        };
        // Check the URL with every placeholder filled, as it will be sent.
        let sample = Vars {
            name: Some("x"),
            id: Some("x"),
            key: Some("x"),
        }
        .render(&spec.url, str::to_string);
        ctx.http.check_url(&sample)?;
        let mut json_body = true;
        let mut headers = Vec::new();
        for h in &spec.headers {
            if h.name.eq_ignore_ascii_case("content-type") {
                json_body = h.value.as_deref().is_some_and(|v| v.contains("json"));
            }
            let value = match (&h.value, &h.value_from) {
                (Some(v), None) => HeaderValue::Literal(v.clone()),
                (None, Some(r)) => HeaderValue::Secret(
                    h.value_prefix.clone().unwrap_or_default(),
                    ctx.secrets.get(r)?.clone(),
                ),
                _ => {
                    return Err(ProviderError::InvalidConfig(format!(
                        "http {what}: header {:?} needs exactly one of value and valueFrom",
                        h.name
                    )));
                }
            };
            headers.push((h.name.clone(), value));
        }
        Ok(Self {
            what,
            method,
            url: spec.url.clone(),
            headers,
            body: spec.body.clone(),
            json_body,
        })
    }

    async fn send(
        &self,
        http: &HttpClient,
        vars: &Vars<'_>,
    ) -> Result<super::client::Reply, ProviderError> {
        // `.` and `..` stay dot segments however they are encoded (`%2E%2E` is `..`
        // to a URL parser): a vendor id like that would walk up the path.
        if [vars.id, vars.key, vars.name]
            .into_iter()
            .flatten()
            .any(|v| matches!(v, "" | "." | ".."))
        {
            return Err(ProviderError::BadResponse(format!(
                "{}: an empty, \".\" or \"..\" id or key cannot go into a URL",
                self.what
            )));
        }
        let url = vars.render(&self.url, |v| {
            utf8_percent_encode(v, NON_ALPHANUMERIC).to_string()
        });
        let json_escape = |v: &str| {
            let quoted = serde_json::to_string(v).unwrap_or_default();
            quoted[1..quoted.len() - 1].to_string()
        };
        let body = self.body.as_ref().map(|b| {
            if self.json_body {
                vars.render(b, json_escape)
            } else {
                vars.render(b, str::to_string)
            }
        });
        http.send(self.what, |c| {
            let mut req = c.request(self.method.clone(), &url);
            for (name, value) in &self.headers {
                let value = match value {
                    HeaderValue::Literal(v) => vars.render(v, str::to_string),
                    HeaderValue::Secret(prefix, s) => format!("{prefix}{}", s.expose_secret()),
                };
                req = req.header(name, value);
            }
            if let Some(body) = &body {
                if self.json_body
                    && !self
                        .headers
                        .iter()
                        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                {
                    req = req.header("Content-Type", "application/json");
                }
                req = req.body(body.clone());
            }
            req
        })
        .await
    }
}

fn first_string(path: &JsonPath, value: &serde_json::Value) -> Option<String> {
    path.query(value).all().into_iter().find_map(|v| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

impl HttpProvider {
    pub fn new(spec: &HttpSpec, ctx: &BuildContext<'_>) -> Result<Self, ProviderError> {
        let list = match &spec.list {
            // With an issue idPath, ids are the vendor's and names are rotor's: the
            // list needs both, or the sweep would compare names with ids.
            Some(l) if spec.id_path.is_some() && l.id_path.is_none() => {
                return Err(ProviderError::InvalidConfig(
                    "http.list.idPath is required when http.idPath is set (the sweep must pair each listed name with its id)".into(),
                ));
            }
            Some(l) => Some((
                Operation::new("listing keys", &l.request, Method::GET, ctx)?,
                path(&l.name_path, "list.namePath")?,
                l.id_path
                    .as_deref()
                    .map(|p| path(p, "list.idPath"))
                    .transpose()?,
            )),
            None => None,
        };
        Ok(Self {
            http: ctx.http.clone(),
            issue: Operation::new("issuing a key", &spec.issue, Method::POST, ctx)?,
            test: spec
                .test
                .as_ref()
                .map(|t| Operation::new("testing the new key", t, Method::GET, ctx))
                .transpose()?,
            revoke: spec
                .revoke
                .as_ref()
                .map(|r| Operation::new("revoking a key", r, Method::DELETE, ctx))
                .transpose()?,
            list,
            key_path: path(&spec.key_path, "keyPath")?,
            id_path: spec
                .id_path
                .as_deref()
                .map(|p| path(p, "idPath"))
                .transpose()?,
            usage: spec
                .usage
                .as_ref()
                .map(|u| {
                    let named = |p: &Option<String>, field: &str| {
                        p.as_deref()
                            .map(|p| Ok::<_, ProviderError>((p.to_string(), path(p, field)?)))
                            .transpose()
                    };
                    let check = UsageCheck {
                        request: Operation::new(
                            "asking whether a key is in use",
                            &u.request,
                            Method::GET,
                            ctx,
                        )?,
                        count_path: named(&u.count_path, "usage.countPath")?,
                        last_used_path: named(&u.last_used_path, "usage.lastUsedPath")?,
                    };
                    if check.count_path.is_none() && check.last_used_path.is_none() {
                        return Err(ProviderError::InvalidConfig(
                            "http.usage needs countPath or lastUsedPath (or both)".into(),
                        ));
                    }
                    Ok(check)
                })
                .transpose()?,
        })
    }
}

#[async_trait]
impl Provider for HttpProvider {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn outputs(&self) -> &'static [&'static str] {
        &[OUTPUT]
    }

    fn secret_output(&self) -> &'static str {
        OUTPUT
    }

    fn known_values(&self) -> Vec<SecretString> {
        [&self.issue]
            .into_iter()
            .chain(self.test.as_ref())
            .chain(self.revoke.as_ref())
            .chain(self.list.as_ref().map(|(op, ..)| op))
            .chain(self.usage.as_ref().map(|u| &u.request))
            .flat_map(|op| op.headers.iter())
            .filter_map(|(_, v)| match v {
                HeaderValue::Secret(_, s) => Some(s.clone()),
                HeaderValue::Literal(_) => None,
            })
            .collect()
    }

    async fn issue(&self, request: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
        let vars = Vars {
            name: Some(request.name),
            ..Vars::default()
        };
        let reply = self.issue.send(&self.http, &vars).await?;
        if !reply.is_success() {
            return Err(reply.error("issuing a key"));
        }
        let body: serde_json::Value = reply.json("issuing a key")?;
        let key = first_string(&self.key_path, &body)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ProviderError::BadResponse("the issue response has no string at keyPath".into())
            })?;
        let id = match &self.id_path {
            Some(p) => first_string(p, &body).ok_or_else(|| {
                ProviderError::BadResponse("the issue response has no string at idPath".into())
            })?,
            None => request.name.to_string(),
        };
        let credential = Credential::single(id, OUTPUT, SecretString::from(key));
        request
            .stash
            .keep(&credential)
            .await
            .map_err(ProviderError::Stash)?;
        Ok(credential)
    }

    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        let Some(test) = &self.test else {
            return Ok(());
        };
        let key = credential.outputs.get(OUTPUT).map(|s| s.expose_secret());
        let vars = Vars {
            id: Some(&credential.id),
            key,
            ..Vars::default()
        };
        let reply = test.send(&self.http, &vars).await?;
        if reply.is_success() {
            Ok(())
        } else {
            Err(ProviderError::TestFailed(
                reply.error("the test request").to_string(),
            ))
        }
    }

    async fn revoke(&self, id: &str) -> Result<Revocation, ProviderError> {
        // Without a revoke request nothing was revoked: never claim it was.
        let Some(revoke) = &self.revoke else {
            return Ok(Revocation::Unsupported);
        };
        let reply = revoke.send(&self.http, &Vars::id(id)).await?;
        match reply.status {
            404 | 410 => Ok(Revocation::AlreadyGone),
            _ if reply.is_success() => Ok(Revocation::Revoked),
            _ => Err(reply.error("revoking a key")),
        }
    }

    async fn in_use(&self, id: &str, since: DateTime<Utc>) -> Result<Usage, ProviderError> {
        let Some(check) = &self.usage else {
            return Ok(Usage::Unknown);
        };
        let reply = check.request.send(&self.http, &Vars::id(id)).await?;
        match reply.status {
            // The vendor no longer knows the key: nothing can use it.
            404 | 410 => return Ok(Usage::Unused),
            _ if reply.is_success() => {}
            _ => return Err(reply.error("asking whether a key is in use")),
        }
        let body: serde_json::Value = reply.json("asking whether a key is in use")?;
        read_usage(
            check.count_path.as_ref(),
            check.last_used_path.as_ref(),
            &body,
            since,
        )
    }

    fn lists_own(&self) -> bool {
        self.list.is_some()
    }

    async fn list_own(&self, prefix: &str) -> Result<Vec<String>, ProviderError> {
        let Some((list, name_path, id_path)) = &self.list else {
            return Ok(Vec::new());
        };
        let reply = list.send(&self.http, &Vars::default()).await?;
        if !reply.is_success() {
            return Err(reply.error("listing keys"));
        }
        let body: serde_json::Value = reply.json("listing keys")?;
        let names: Vec<Option<String>> = name_path
            .query(&body)
            .all()
            .into_iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect();
        let ids: Vec<Option<String>> = match id_path {
            Some(p) => p
                .query(&body)
                .all()
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect(),
            None => names.clone(),
        };
        // Names and ids are paired by position: unless both lists line up, a pairing
        // would revoke the wrong key.
        if names.len() != ids.len() {
            return Err(ProviderError::BadResponse(format!(
                "listing keys: list.namePath found {} names but list.idPath {} ids",
                names.len(),
                ids.len()
            )));
        }
        Ok(names
            .into_iter()
            .zip(ids)
            .filter_map(|(name, id)| {
                let own = name.is_some_and(|n| crate::rotation::own_name(prefix, &n));
                own.then_some(id).flatten()
            })
            .collect())
    }
}

#[cfg(test)]
mod usage_tests {
    use super::*;
    use crate::providers::{HttpSettings, Secrets};
    use serde_json::json;

    fn since() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn named(expr: &str, field: &str) -> (String, JsonPath) {
        (expr.to_string(), path(expr, field).unwrap())
    }

    #[test]
    fn counts_are_whole_numbers_from_zero_to_u64_max() {
        let count = |v: serde_json::Value| count_usage(&v).map(|u| u.to_string());
        assert_eq!(count(json!(0)).as_deref(), Some("unused"));
        assert_eq!(count(json!(3)).as_deref(), Some("in use (3 sessions)"));
        assert_eq!(count(json!(1)).as_deref(), Some("in use (1 session)"));
        assert_eq!(count(json!(3.0)).as_deref(), Some("in use (3 sessions)"));
        assert_eq!(count(json!("2")).as_deref(), Some("in use (2 sessions)"));
        assert_eq!(
            count_usage(&json!(u64::MAX)),
            Some(Usage::InUse {
                count: Some(u64::MAX),
                last_used: None
            })
        );
        // One past u64::MAX, as serde_json reads it (a float), and as digits.
        let past: serde_json::Value = serde_json::from_str("18446744073709551616").unwrap();
        for bad in [
            json!(-1),
            json!(-0.5),
            json!(1.5),
            json!(1e300),
            past,
            json!("18446744073709551616"),
            json!("99999999999999999999999999"),
            json!("lots"),
            json!("+3"),
            json!("-3"),
            json!(""),
            json!(true),
            json!(null),
            json!([1]),
            json!({"n": 1}),
        ] {
            assert_eq!(count(bad.clone()), None, "{bad}");
        }
    }

    #[test]
    fn a_last_use_after_since_is_in_use_and_before_it_is_not() {
        let since = since();
        let last = |v: serde_json::Value| last_used_usage(&v, since).map(|u| u.to_string());
        assert_eq!(
            last(json!("2026-12-04T09:59:59Z")).as_deref(),
            Some("unused")
        );
        assert_eq!(
            last(json!("2026-12-04T10:00:00Z")).as_deref(),
            Some("unused"),
            "a use at the very moment it stopped being active is not after it"
        );
        assert_eq!(
            last(json!("2026-12-04T10:05:00Z")).as_deref(),
            Some("in use (last used 2026-12-04T10:05:00+00:00)")
        );
        assert_eq!(
            last(json!("2026-12-04T11:05:00+01:00")).as_deref(),
            Some("in use (last used 2026-12-04T10:05:00+00:00)"),
            "offsets are honoured"
        );
        // Unix seconds: a number, fractional seconds, or digits in a string.
        let after = since.timestamp() + 60;
        assert_eq!(
            last_used_usage(&json!(after), since),
            Some(Usage::InUse {
                count: None,
                last_used: DateTime::from_timestamp(after, 0)
            })
        );
        assert_eq!(
            last(json!(since.timestamp() - 60)).as_deref(),
            Some("unused")
        );
        assert_eq!(
            last(json!(since.timestamp() as f64 + 0.5)).as_deref(),
            Some("in use (last used 2026-12-04T10:00:00.500+00:00)")
        );
        assert_eq!(
            last(json!(after.to_string())).map(|s| s.starts_with("in use")),
            Some(true)
        );
        assert_eq!(last(json!(null)).as_deref(), Some("unused"), "never used");
        for bad in [
            json!("yesterday"),
            json!("2026-12-04 10:05"),
            json!(""),
            json!(-5),
            json!(-5.5),
            json!(u64::MAX),
            json!(1e300),
            json!(f64::MAX),
            json!("99999999999999999999999999"),
            json!(true),
            json!({"t": 1}),
        ] {
            assert_eq!(last(bad.clone()), None, "{bad}");
        }
    }

    #[test]
    fn unreadable_answers_name_the_path_and_never_show_the_body() {
        let body = json!({"other": "sk_live_secret", "n": "sk_live_secret", "t": "sk_live_secret"});
        let missing = named("$.sessions", "usage.countPath");
        let e = read_usage(Some(&missing), None, &body, since())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nothing at http.usage.countPath \"$.sessions\""),
            "{e}"
        );
        assert!(!e.contains("sk_live_secret"), "{e}");
        let not_a_number = named("$.n", "usage.countPath");
        let e = read_usage(Some(&not_a_number), None, &body, since()).unwrap_err();
        assert!(matches!(e, ProviderError::BadResponse(_)), "{e}");
        let e = e.to_string();
        assert!(e.contains("http.usage.countPath \"$.n\""), "{e}");
        assert!(!e.contains("sk_live_secret"), "{e}");
        let not_a_time = named("$.t", "usage.lastUsedPath");
        let e = read_usage(None, Some(&not_a_time), &body, since())
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.usage.lastUsedPath \"$.t\""), "{e}");
        assert!(!e.contains("sk_live_secret"), "{e}");
        // A number past u64::MAX: an error, no panic.
        let huge: serde_json::Value =
            serde_json::from_str(r#"{"n": 123456789012345678901234567890, "t": 1e308}"#).unwrap();
        let count = named("$.n", "usage.countPath");
        let last = named("$.t", "usage.lastUsedPath");
        assert!(read_usage(Some(&count), Some(&last), &huge, since()).is_err());
    }

    #[test]
    fn either_path_saying_in_use_is_in_use() {
        let count = named("$.sessions", "usage.countPath");
        let last = named("$.lastUsedAt", "usage.lastUsedPath");
        let read = |body: serde_json::Value| {
            read_usage(Some(&count), Some(&last), &body, since())
                .map(|u| u.to_string())
                .map_err(|e| e.to_string())
        };
        let before = "2026-12-04T09:00:00Z";
        let after = "2026-12-04T10:30:00Z";
        assert_eq!(
            read(json!({"sessions": 0, "lastUsedAt": before})).unwrap(),
            "unused"
        );
        assert_eq!(
            read(json!({"sessions": 2, "lastUsedAt": before})).unwrap(),
            "in use (2 sessions)"
        );
        assert_eq!(
            read(json!({"sessions": 0, "lastUsedAt": after})).unwrap(),
            "in use (last used 2026-12-04T10:30:00+00:00)"
        );
        assert_eq!(
            read(json!({"sessions": 2, "lastUsedAt": after})).unwrap(),
            "in use (2 sessions) (last used 2026-12-04T10:30:00+00:00)"
        );
        // One unreadable: in use still wins (an error would let rotor revoke), but
        // "unused" is never concluded from half an answer.
        assert_eq!(
            read(json!({"sessions": "many", "lastUsedAt": after})).unwrap(),
            "in use (last used 2026-12-04T10:30:00+00:00)"
        );
        let e = read(json!({"sessions": "many", "lastUsedAt": before})).unwrap_err();
        assert!(e.contains("http.usage.countPath"), "{e}");
        let e = read(json!({"sessions": 0})).unwrap_err();
        assert!(e.contains("nothing at http.usage.lastUsedPath"), "{e}");
    }

    #[test]
    fn a_path_selecting_several_values_is_in_use_when_any_is() {
        let count = named("$.regions[*].sessions", "usage.countPath");
        let read = |body: serde_json::Value| read_usage(Some(&count), None, &body, since());
        assert_eq!(
            read(json!({"regions": [{"sessions": 0}, {"sessions": 0}]})).unwrap(),
            Usage::Unused
        );
        assert_eq!(
            read(json!({"regions": [{"sessions": 0}, {"sessions": 5}, {"sessions": 2}]})).unwrap(),
            Usage::InUse {
                count: Some(7),
                last_used: None
            },
            "not just the first"
        );
        assert_eq!(
            read(json!({"regions": [{"sessions": u64::MAX}, {"sessions": 2}]})).unwrap(),
            Usage::InUse {
                count: Some(u64::MAX),
                last_used: None
            },
            "saturates"
        );
        assert!(read(json!({"regions": [{"sessions": 0}, {"sessions": "x"}]})).is_err());
    }

    fn build(usage: serde_json::Value) -> Result<HttpProvider, ProviderError> {
        let spec: HttpSpec = serde_json::from_value(json!({
            "issue": {"url": "http://127.0.0.1:1/keys"},
            "keyPath": "$.key",
            "usage": usage,
        }))
        .unwrap();
        let http = HttpClient::new(HttpSettings {
            allow_private_endpoints: true,
            ..HttpSettings::default()
        });
        let mut secrets = Secrets::default();
        secrets.0.insert(
            ("usage-admin".into(), "token".into()),
            SecretString::from("usage-admin-token-1"),
        );
        HttpProvider::new(
            &spec,
            &BuildContext {
                secrets: &secrets,
                http: &http,
                uid: "uid",
            },
        )
    }

    #[test]
    fn the_usage_spec_is_checked_when_the_provider_is_built() {
        let url = "http://127.0.0.1:1/keys/{{id}}/usage";
        let err = |usage: serde_json::Value| match build(usage) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        let e = err(json!({"url": url, "countPath": "$.[oops"}));
        assert!(
            e.contains("http.usage.countPath \"$.[oops\" is not a JSONPath"),
            "{e}"
        );
        let e = err(json!({"url": url, "lastUsedPath": "lastUsedAt"}));
        assert!(e.contains("http.usage.lastUsedPath"), "{e}");
        let e = err(json!({"url": url}));
        assert!(
            e.contains("http.usage needs countPath or lastUsedPath"),
            "{e}"
        );
        let e = err(json!({"url": "ftp://127.0.0.1/{{id}}", "countPath": "$.n"}));
        assert!(e.contains("invalid provider configuration"), "{e}");
        let e = err(json!({"url": url, "countPath": "$.n", "headers": [{"name": "X"}]}));
        assert!(e.contains("exactly one of value and valueFrom"), "{e}");
        let e = err(json!({"url": url, "countPath": "$.n", "headers": [
            {"name": "Authorization", "valueFrom": {"name": "usage-admin", "key": "missing"}}
        ]}));
        assert!(e.contains("has no key \"missing\""), "{e}");
        let p = build(json!({"url": url, "countPath": "$.n", "headers": [
            {"name": "Authorization", "valuePrefix": "Bearer ", "valueFrom": {"name": "usage-admin", "key": "token"}}
        ]}))
        .unwrap();
        let check = p.usage.as_ref().unwrap();
        assert_eq!(check.request.method, Method::GET, "GET by default");
        assert!(
            p.known_values()
                .iter()
                .any(|v| v.expose_secret() == "usage-admin-token-1"),
            "the usage request's Secret header is scrubbed from errors like the others"
        );
    }

    #[tokio::test]
    async fn without_usage_the_answer_is_unknown() {
        let spec: HttpSpec = serde_json::from_value(json!({
            "issue": {"url": "http://127.0.0.1:1/keys"},
            "keyPath": "$.key",
        }))
        .unwrap();
        let http = HttpClient::new(HttpSettings {
            allow_private_endpoints: true,
            ..HttpSettings::default()
        });
        let p = HttpProvider::new(
            &spec,
            &BuildContext {
                secrets: &Secrets::default(),
                http: &http,
                uid: "uid",
            },
        )
        .unwrap();
        assert_eq!(p.in_use("k", since()).await.unwrap(), Usage::Unknown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{HttpSettings, Secrets};
    use crate::rotation::NoStash;
    use axum::routing::{delete, get, post};

    async fn vendor(seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> String {
        let list = || async {
            axum::Json(serde_json::json!({"keys": [
                {"id": "k1", "name": "rotor-abcdefgh-1"},
                {"name": "rotor-abcdefgh-2"},
                {"id": "k3", "name": "rotor-abcdefgh-3"},
            ]}))
        };
        let aligned = || async {
            axum::Json(serde_json::json!({"keys": [
                {"id": "k1", "name": "rotor-abcdefgh-1"},
                {"id": "k2", "name": "rotor-abcdefgh-admin"},
                {"id": "k3", "name": "rotor-abcdefgh-12-x"},
                {"id": "k4", "name": "rotor-abcdefgh-2"},
            ]}))
        };
        let issue = || async { axum::Json(serde_json::json!({"key": "v", "id": ".."})) };
        let router = axum::Router::new()
            .route("/shifted", get(list))
            .route("/aligned", get(aligned))
            .route("/issue", post(issue))
            .route(
                "/{*rest}",
                delete(move |uri: axum::http::Uri| async move {
                    seen.lock().unwrap().push(uri.to_string());
                    axum::http::StatusCode::NO_CONTENT
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        url
    }

    fn spec(base: &str, list: &str, issue_id: bool, list_id: bool) -> HttpSpec {
        serde_json::from_value(serde_json::json!({
            "issue": {"url": format!("{base}/issue")},
            "keyPath": "$.key",
            "idPath": issue_id.then_some("$.id"),
            "revoke": {"url": format!("{base}/keys/{{{{id}}}}")},
            "list": {
                "url": format!("{base}/{list}"),
                "namePath": "$.keys[*].name",
                "idPath": list_id.then_some("$.keys[*].id"),
            },
        }))
        .unwrap()
    }

    fn provider(spec: &HttpSpec) -> Result<HttpProvider, ProviderError> {
        let http = HttpClient::new(HttpSettings {
            allow_private_endpoints: true,
            max_retries: 0,
            ..HttpSettings::default()
        });
        HttpProvider::new(
            spec,
            &BuildContext {
                secrets: &Secrets::default(),
                http: &http,
                uid: "abcdefgh-0000",
            },
        )
    }

    #[tokio::test]
    async fn listed_names_and_ids_pair_exactly_or_not_at_all() {
        let seen = std::sync::Arc::default();
        let base = vendor(std::sync::Arc::clone(&seen)).await;
        let shifted = provider(&spec(&base, "shifted", true, true)).unwrap();
        let err = shifted.list_own("rotor-abcdefgh-").await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::BadResponse(m) if m.contains("3 names but list.idPath 2 ids")),
            "{err}"
        );
        let aligned = provider(&spec(&base, "aligned", true, true)).unwrap();
        assert_eq!(
            aligned.list_own("rotor-abcdefgh-").await.unwrap(),
            ["k1", "k4"],
            "only exact own names, each with its own id"
        );
        let err = provider(&spec(&base, "aligned", true, false))
            .err()
            .expect("idPath without list.idPath is refused");
        assert!(err.to_string().contains("list.idPath is required"), "{err}");
    }

    #[tokio::test]
    async fn vendor_ids_cannot_walk_the_url_path() {
        let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let base = vendor(std::sync::Arc::clone(&seen)).await;
        let p = provider(&spec(&base, "aligned", true, true)).unwrap();
        p.revoke("../../x?y").await.unwrap();
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            ["/keys/%2E%2E%2F%2E%2E%2Fx%3Fy"]
        );
        let err = p.revoke("..").await.unwrap_err();
        assert!(err.to_string().contains("cannot go into a URL"), "{err}");
        let issued = p
            .issue(&IssueRequest {
                name: "rotor-abcdefgh-1",
                slot: 0,
                stash: &NoStash,
            })
            .await
            .unwrap();
        assert_eq!(issued.id, "..");
        assert_eq!(seen.lock().unwrap().len(), 1, "nothing else was deleted");
    }

    #[test]
    fn placeholders_are_filled_once_and_values_are_never_read_as_templates() {
        let vars = Vars {
            name: Some("{{id}}"),
            id: Some("{{key}}"),
            key: Some("secret-value"),
        };
        assert_eq!(
            vars.render("a {{name}} b {{id}} c {{key}} {{other}} {{", str::to_string),
            "a {{id}} b {{key}} c secret-value {{other}} {{"
        );
        let only_key = Vars {
            key: Some("k"),
            ..Vars::default()
        };
        assert_eq!(
            only_key.render("{{id}}/{{key}}", str::to_string),
            "{{id}}/k"
        );
    }
}
