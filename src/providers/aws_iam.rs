//! `provider.awsIam`: the access keys of one IAM user.
//!
//! IAM allows two access keys per user: they are the two slots. Every request is a
//! Query API call (`POST`, form `Action=…&Version=…`, XML answer) signed with SigV4
//! (the `aws-sigv4` crate) and sent through the shared [`HttpClient`] (endpoint guard,
//! retries of 429/5xx, body limit, request metrics).
//!
//! IAM keys have no names. Like the AWS console, which keeps an access key's
//! description as a *user tag* whose key is the access key id, rotor marks each key it
//! creates with the tag `<AccessKeyId>` = `<credential name>` (`rotor-<uid8>-<n>`):
//! those are the exactly-own names the sweep lists. Before `CreateAccessKey` it writes
//! an intent tag `<credential name>` = `pending <ids of the keys that exist>`, so a key
//! created by a rotation that died before the escrow kept it is recognisable (the one
//! key of the user not in that list, and not marked) and deleted when the rotation
//! resumes. A third `CreateAccessKey` is never sent while the user has two keys: of
//! two, rotor deletes only a key it marked that is Inactive, or the leftover of the
//! very rotation it runs; otherwise the rotation fails and says which keys there are.

use super::client::vendor_message;
use super::{BuildContext, HttpClient};
use crate::api::AwsIamSpec;
use crate::rotation::{
    Credential, IssueRequest, Provider, ProviderError, Revocation, Usage, own_name,
};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

const ID_OUTPUT: &str = "accessKeyId";
const SECRET_OUTPUT: &str = "secretAccessKey";
const IAM_VERSION: &str = "2010-05-08";
const STS_VERSION: &str = "2011-06-15";
const DEFAULT_IAM: &str = "https://iam.amazonaws.com";
const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// Start of the value of an intent tag (then the ids of the keys before the create).
const PENDING: &str = "pending";
/// Pages rotor reads of one listing (IAM: at most 2 keys and 50 tags per user).
const MAX_PAGES: usize = 5;
/// Attempts of the test: a new IAM key takes seconds to be accepted everywhere.
const TEST_ATTEMPTS: u32 = 6;
/// The longest wait between two attempts of the test.
const TEST_MAX_WAIT: Duration = Duration::from_secs(8);

/// An access key id and secret (and session token) to sign with.
struct Keys {
    id: SecretString,
    secret: SecretString,
    token: Option<SecretString>,
}

pub struct AwsIamProvider {
    http: HttpClient,
    iam_url: String,
    sts_url: String,
    /// The region IAM requests are signed for (IAM is global: us-east-1 in `aws`).
    iam_region: String,
    sts_region: String,
    user: String,
    admin: Keys,
    deactivate_first: bool,
    /// This resource's own name prefix (`rotor-<uid8>-`).
    prefix: String,
}

/// Where a request goes.
#[derive(Clone, Copy)]
enum Service {
    Iam,
    Sts,
}

/// An `<Error>` answer.
#[derive(Debug)]
struct AwsError {
    status: u16,
    code: String,
    message: String,
}

impl AwsError {
    fn is(&self, code: &str) -> bool {
        self.code == code
    }

    /// The provider error for it: the code says which.
    fn into_provider(self, what: &str) -> ProviderError {
        let message = format!("{what}: {} ({})", self.message, self.code);
        match self.code.as_str() {
            "AccessDenied"
            | "AccessDeniedException"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "UnrecognizedClientException"
            | "ExpiredToken"
            | "InvalidAccessKeyId"
            | "IncompleteSignature"
            | "MissingAuthenticationToken" => ProviderError::Unauthorized {
                status: if self.status == 0 { 403 } else { self.status },
                message,
            },
            "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
                ProviderError::RateLimited(message)
            }
            "ServiceFailure" | "ServiceUnavailable" | "InternalFailure" => {
                ProviderError::Unavailable(message)
            }
            _ => ProviderError::Rejected {
                status: self.status,
                message,
            },
        }
    }
}

/// One access key of the user.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadata {
    access_key_id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    create_date: Option<String>,
}

impl KeyMetadata {
    fn active(&self) -> bool {
        self.status != "Inactive"
    }
}

/// `<X><member>…</member>…</X>`.
#[derive(Debug, Deserialize)]
struct Members<T> {
    #[serde(default = "Vec::new", rename = "member")]
    items: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAccessKeysResponse {
    list_access_keys_result: ListAccessKeysResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAccessKeysResult {
    #[serde(default)]
    access_key_metadata: Option<Members<KeyMetadata>>,
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUserTagsResponse {
    list_user_tags_result: ListUserTagsResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUserTagsResult {
    #[serde(default)]
    tags: Option<Members<Tag>>,
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateAccessKeyResponse {
    create_access_key_result: CreateAccessKeyResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateAccessKeyResult {
    access_key: NewKey,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NewKey {
    access_key_id: String,
    secret_access_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAccessKeyLastUsedResponse {
    get_access_key_last_used_result: GetAccessKeyLastUsedResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAccessKeyLastUsedResult {
    #[serde(default)]
    access_key_last_used: Option<LastUsed>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LastUsed {
    #[serde(default)]
    last_used_date: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetCallerIdentityResponse {
    get_caller_identity_result: GetCallerIdentityResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetCallerIdentityResult {
    arn: String,
}

/// The user's keys and tags, as one look at IAM saw them.
struct UserState {
    keys: Vec<KeyMetadata>,
    tags: BTreeMap<String, String>,
}

impl UserState {
    /// The own credential name a key is marked with.
    fn own_mark(&self, id: &str, prefix: &str) -> Option<&str> {
        self.tags
            .get(id)
            .map(String::as_str)
            .filter(|v| own_name(prefix, v))
    }

    /// The intent tags of this resource: credential name -> ids of the keys that
    /// existed before that rotation's create.
    fn intents(&self, prefix: &str) -> Vec<(String, Intent)> {
        self.tags
            .iter()
            .filter(|(k, _)| own_name(prefix, k))
            .filter_map(|(k, v)| {
                let rest = v.strip_prefix(PENDING)?;
                let mut at = None;
                let mut before = Vec::new();
                for word in rest.split_whitespace() {
                    match word.strip_prefix("t=") {
                        Some(t) => {
                            at = t
                                .parse::<i64>()
                                .ok()
                                .and_then(|t| DateTime::from_timestamp(t, 0))
                        }
                        None => before.push(word.to_string()),
                    }
                }
                Some((k.clone(), Intent { at, before }))
            })
            .collect()
    }

    /// The key `intent` created, if the rotation that wrote it got that far: the one
    /// key not in its list, not marked, and created by IAM within moments after the
    /// intent was written (a human's key made later is not it). Two or more such keys,
    /// or no time in the intent: none is provably it.
    fn created_under(&self, intent: &Intent) -> Option<&KeyMetadata> {
        let at = intent.at?;
        let mut fresh = self.keys.iter().filter(|k| {
            !intent.before.contains(&k.access_key_id)
                && !self.tags.contains_key(&k.access_key_id)
                && k.create_date
                    .as_deref()
                    .and_then(parse_date)
                    .is_some_and(|c| {
                        c >= at - chrono::TimeDelta::seconds(INTENT_SKEW_SECS)
                            && c <= at + chrono::TimeDelta::seconds(INTENT_WINDOW_SECS)
                    })
        });
        let first = fresh.next()?;
        fresh.next().is_none().then_some(first)
    }
}

/// What an intent tag says: when rotor was about to call CreateAccessKey, and the
/// keys the user had then.
#[derive(Debug, Clone)]
struct Intent {
    at: Option<DateTime<Utc>>,
    before: Vec<String>,
}

/// How much earlier than rotor's clock IAM's CreateDate may be (clock skew), and how
/// long after the intent the key it announced may have been created (the call's own
/// time with retries). A key outside is never taken for rotor's leftover.
const INTENT_SKEW_SECS: i64 = 5;
const INTENT_WINDOW_SECS: i64 = 120;

/// IAM's global endpoint of the partition `region` is in (the one its requests are
/// signed for, see [`signing_region_for_iam`]).
fn default_iam_endpoint(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "https://iam.cn-north-1.amazonaws.com.cn"
    } else if region.starts_with("us-gov-") {
        "https://iam.us-gov.amazonaws.com"
    } else {
        DEFAULT_IAM
    }
}

fn signing_region_for_iam(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "cn-north-1"
    } else if region.starts_with("us-gov-") {
        "us-gov-west-1"
    } else {
        "us-east-1"
    }
}

fn check_user_name(name: &str) -> Result<(), ProviderError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ProviderError::InvalidConfig(format!(
            "awsIam.userName {name:?} is not an IAM user name (1 to 64 of A-Z a-z 0-9 _+=,.@-)"
        )))
    }
}

/// Whether an access key id is one IAM could have issued (it goes into requests and
/// tag keys).
fn plausible_key_id(id: &str) -> bool {
    (16..=128).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric())
}

impl AwsIamProvider {
    pub fn new(spec: &AwsIamSpec, ctx: &BuildContext<'_>) -> Result<Self, ProviderError> {
        check_user_name(&spec.user_name)?;
        if spec.region.is_empty()
            || spec.region.len() > 32
            || !spec
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ProviderError::InvalidConfig(format!(
                "awsIam.region {:?} is not a region name",
                spec.region
            )));
        }
        let iam_url = spec
            .endpoint_url
            .clone()
            .unwrap_or_else(|| default_iam_endpoint(&spec.region).into());
        let sts_url = match (&spec.sts_endpoint_url, &spec.endpoint_url) {
            (Some(sts), _) => sts.clone(),
            (None, Some(iam)) => iam.clone(),
            (None, None) if spec.region.starts_with("cn-") => {
                format!("https://sts.{}.amazonaws.com.cn", spec.region)
            }
            (None, None) => format!("https://sts.{}.amazonaws.com", spec.region),
        };
        ctx.http.check_url(&iam_url)?;
        ctx.http.check_url(&sts_url)?;
        let admin = Keys {
            id: ctx.secrets.get(&spec.access_key_id_ref)?.clone(),
            secret: ctx.secrets.get(&spec.secret_access_key_ref)?.clone(),
            token: spec
                .session_token_ref
                .as_ref()
                .map(|r| ctx.secrets.get(r).cloned())
                .transpose()?,
        };
        Ok(Self {
            http: ctx.http.clone(),
            iam_url,
            sts_url,
            iam_region: signing_region_for_iam(&spec.region).into(),
            sts_region: spec.region.clone(),
            user: spec.user_name.clone(),
            admin,
            deactivate_first: spec.deactivate_first,
            prefix: crate::rotation::credential_name(ctx.uid, 0)
                .trim_end_matches('0')
                .to_string(),
        })
    }

    /// Signs a POST of `body` to `url` with `keys`: the headers to send.
    fn sign(
        &self,
        url: &str,
        region: &str,
        service: &str,
        body: &str,
        keys: &Keys,
    ) -> Result<Vec<(String, String)>, ProviderError> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        use aws_smithy_runtime_api::client::identity::Identity;
        let identity: Identity = aws_credential_types::Credentials::new(
            keys.id.expose_secret(),
            keys.secret.expose_secret(),
            keys.token.as_ref().map(|t| t.expose_secret().to_string()),
            None,
            "rotor",
        )
        .into();
        let failed = |e: &dyn std::fmt::Display| {
            ProviderError::InvalidConfig(format!("signing the request (SigV4) failed: {e}"))
        };
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let headers = [("content-type", FORM)];
        let request = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(request, &params).map_err(|e| failed(&e))?.into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// One Query API call: the body of a 2xx answer, or the `<Error>` of another.
    async fn call(
        &self,
        what: &str,
        service: Service,
        keys: &Keys,
        params: &[(&str, &str)],
    ) -> Result<Result<Vec<u8>, AwsError>, ProviderError> {
        let (url, region, name, version) = match service {
            Service::Iam => (&self.iam_url, self.iam_region.as_str(), "iam", IAM_VERSION),
            Service::Sts => (&self.sts_url, self.sts_region.as_str(), "sts", STS_VERSION),
        };
        let action = params.first().map(|p| p.1).unwrap_or_default();
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", action)
                .append_pair("Version", version);
            for (k, v) in params.iter().skip(1) {
                form.append_pair(k, v);
            }
            form.finish()
        };
        let headers = self.sign(url, region, name, &body, keys)?;
        let reply = self
            .http
            .send(what, |c| {
                let mut request = c.post(url.as_str()).header("content-type", FORM);
                for (k, v) in &headers {
                    request = request.header(k.as_str(), v.as_str());
                }
                request.body(body.clone())
            })
            .await?;
        if reply.is_success() {
            return Ok(Ok(reply.body));
        }
        Ok(Err(parse_error(reply.status, &reply.body)))
    }

    /// An IAM call with the admin credential; any `<Error>` fails it.
    async fn iam(&self, what: &str, params: &[(&str, &str)]) -> Result<Vec<u8>, ProviderError> {
        self.call(what, Service::Iam, &self.admin, params)
            .await?
            .map_err(|e| e.into_provider(what))
    }

    /// Every item of a paginated listing of the user (`Action=action`, 100 a page,
    /// `Marker` while `IsTruncated`), at most MAX_PAGES pages; `page` takes a parsed
    /// answer apart into its items, whether it is truncated, and its marker.
    async fn list_all<R: serde::de::DeserializeOwned, T>(
        &self,
        action: &str,
        what: &str,
        page: impl Fn(R) -> (Vec<T>, bool, Option<String>),
    ) -> Result<Vec<T>, ProviderError> {
        let mut items = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut params = vec![
                ("Action", action),
                ("UserName", self.user.as_str()),
                ("MaxItems", "100"),
            ];
            if let Some(m) = &marker {
                params.push(("Marker", m.as_str()));
            }
            let body = self.iam(what, &params).await?;
            let (more, truncated, next) = page(parse(what, &body)?);
            items.extend(more);
            match next.filter(|_| truncated) {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        Ok(items)
    }

    async fn list_keys(&self) -> Result<Vec<KeyMetadata>, ProviderError> {
        let what = "listing the user's access keys (iam:ListAccessKeys)";
        let keys = self
            .list_all("ListAccessKeys", what, |r: ListAccessKeysResponse| {
                let p = r.list_access_keys_result;
                let items = p.access_key_metadata.map(|m| m.items).unwrap_or_default();
                (items, p.is_truncated, p.marker)
            })
            .await?;
        for key in &keys {
            if !plausible_key_id(&key.access_key_id) {
                return Err(ProviderError::BadResponse(format!(
                    "{what}: an access key id that is not one ({} characters)",
                    key.access_key_id.len()
                )));
            }
        }
        Ok(keys)
    }

    async fn list_tags(&self) -> Result<BTreeMap<String, String>, ProviderError> {
        let what = "listing the user's tags (iam:ListUserTags)";
        let tags = self
            .list_all("ListUserTags", what, |r: ListUserTagsResponse| {
                let p = r.list_user_tags_result;
                let items = p.tags.map(|t| t.items).unwrap_or_default();
                (items, p.is_truncated, p.marker)
            })
            .await?;
        Ok(tags.into_iter().map(|t| (t.key, t.value)).collect())
    }

    async fn state(&self) -> Result<UserState, ProviderError> {
        Ok(UserState {
            keys: self.list_keys().await?,
            tags: self.list_tags().await?,
        })
    }

    async fn tag(&self, key: &str, value: &str) -> Result<(), ProviderError> {
        self.iam(
            "marking the access key as rotor's (iam:TagUser)",
            &[
                ("Action", "TagUser"),
                ("UserName", self.user.as_str()),
                ("Tags.member.1.Key", key),
                ("Tags.member.1.Value", value),
            ],
        )
        .await
        .map(drop)
    }

    async fn untag(&self, key: &str) -> Result<(), ProviderError> {
        self.iam(
            "removing rotor's tag (iam:UntagUser)",
            &[
                ("Action", "UntagUser"),
                ("UserName", self.user.as_str()),
                ("TagKeys.member.1", key),
            ],
        )
        .await
        .map(drop)
    }

    /// Deletes a key and its mark: `AlreadyGone` when IAM no longer has it.
    async fn delete(&self, id: &str) -> Result<Revocation, ProviderError> {
        let what = "deleting the access key (iam:DeleteAccessKey)";
        let outcome = match self
            .call(
                what,
                Service::Iam,
                &self.admin,
                &[
                    ("Action", "DeleteAccessKey"),
                    ("UserName", self.user.as_str()),
                    ("AccessKeyId", id),
                ],
            )
            .await?
        {
            Ok(_) => Revocation::Revoked,
            Err(e) if e.is("NoSuchEntity") => Revocation::AlreadyGone,
            Err(e) => return Err(e.into_provider(what)),
        };
        if let Err(e) = self.untag(id).await {
            warn_unmarked(id, &e);
        }
        Ok(outcome)
    }

    /// Makes sure a key rotor holds carries its mark: a rotation killed after the
    /// escrow kept the key but before it was tagged left the intent tag instead.
    async fn ensure_marked(&self, id: &str, state: &UserState) -> Result<(), ProviderError> {
        if state.tags.contains_key(id) {
            return Ok(());
        }
        let intents = state.intents(&self.prefix);
        let mut owners = intents
            .iter()
            .filter(|(_, before)| !before.before.iter().any(|b| b == id));
        let name = match (owners.next(), owners.next()) {
            (Some((name, _)), None) => name.clone(),
            // The key is rotor's (it holds it); the rotation's name is not known.
            _ => format!("{}0", self.prefix),
        };
        self.tag(id, &name).await?;
        if intents.iter().any(|(n, _)| *n == name) {
            self.untag(&name).await?;
        }
        Ok(())
    }
}

fn warn_unmarked(id: &str, e: &ProviderError) {
    tracing::warn!(id, error = %e, "removing rotor's tag of a deleted access key failed; it names no key any more");
}

/// The first `<Code>` and `<Message>` of an error answer (`<ErrorResponse><Error>`).
fn parse_error(status: u16, body: &[u8]) -> AwsError {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    // [code, message]; `current` is the one being read.
    let mut fields: [Option<String>; 2] = [None, None];
    let mut current: Option<usize> = None;
    let mut buf = Vec::new();
    // Bounded: the body is at most MAX_BODY and each event consumes some of it.
    loop {
        let text = match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                current = match e.local_name().as_ref() {
                    "Code" if fields[0].is_none() => Some(0),
                    "Message" if fields[1].is_none() => Some(1),
                    _ => None,
                };
                None
            }
            Ok(Event::Text(t)) => Some(t.to_string()),
            Ok(Event::CData(t)) => Some(t.to_string()),
            Ok(Event::End(_)) => {
                current = None;
                None
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => None,
        };
        if let (Some(i), Some(text)) = (current, text) {
            fields[i].get_or_insert_with(String::new).push_str(&text);
        }
        buf.clear();
    }
    let [code, message] = fields;
    let code = code
        .map(|c| c.trim().to_string())
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        })
        .unwrap_or_else(|| format!("HTTP {status}"));
    let message = match message {
        Some(m) => vendor_message(m.as_bytes()),
        None => vendor_message(body),
    };
    AwsError {
        status,
        code,
        message,
    }
}

/// A 2xx body as `T`; the parser's message never quotes the body (it may hold a key).
fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ProviderError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ProviderError::BadResponse(format!("{what}: the answer is not UTF-8")))?;
    quick_xml::de::from_str(text).map_err(|e| {
        ProviderError::BadResponse(format!(
            "{what}: the answer is not the expected XML ({})",
            vendor_message(e.to_string().as_bytes())
        ))
    })
}

/// An IAM date (`2026-01-02T03:04:05Z`, with or without fractions or an offset).
fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// Whether a use at `at` is after `since`. `since` comes from status, in whole
/// seconds: a use within the second the key stopped being active (its own test, in a
/// quick succession of rotations) counts as before it.
fn used_after(at: DateTime<Utc>, since: DateTime<Utc>) -> bool {
    at.trunc_subsecs(0) > since
}

/// The user name an ARN of an IAM user ends in (`arn:aws:iam::1:user/path/name`).
fn arn_user(arn: &str) -> Option<&str> {
    let resource = arn.splitn(6, ':').nth(5)?;
    let path = resource.strip_prefix("user/")?;
    path.rsplit('/').next()
}

#[async_trait]
impl Provider for AwsIamProvider {
    fn kind(&self) -> &'static str {
        "awsIam"
    }

    fn outputs(&self) -> &'static [&'static str] {
        &[ID_OUTPUT, SECRET_OUTPUT]
    }

    fn secret_output(&self) -> &'static str {
        SECRET_OUTPUT
    }

    fn known_values(&self) -> Vec<SecretString> {
        let mut known = vec![self.admin.secret.clone()];
        known.extend(self.admin.token.clone());
        known
    }

    async fn issue(&self, request: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
        let name = request.name;
        let prefix = name.trim_end_matches(|c: char| c.is_ascii_digit());
        let mut state = self.state().await?;

        // 1. What a rotation of this very name left: a key marked with the name
        //    (created and tagged, but then not resumed: its value is kept nowhere rotor
        //    uses) is deleted, not reused. The one unmarked key created moments after
        //    this name's intent tag (killed before the escrow kept it) is only
        //    *probably* rotor's — a person may have made a key just then — so it is
        //    never deleted: if it stands in the way, the failure below names it.
        let leftovers: Vec<String> = state
            .keys
            .iter()
            .filter(|k| state.tags.get(&k.access_key_id).is_some_and(|v| v == name))
            .map(|k| k.access_key_id.clone())
            .collect();
        let probable: Option<String> = state
            .intents(prefix)
            .iter()
            .filter(|(intent, _)| intent == name)
            .find_map(|(_, announced)| state.created_under(announced))
            .map(|k| k.access_key_id.clone());
        for id in &leftovers {
            tracing::info!(id = %id, name, "deleting an access key a dead rotation created");
            self.delete(id).await?;
        }
        state.keys.retain(|k| !leftovers.contains(&k.access_key_id));
        // Intent tags of earlier rotations (their keys are marked or deleted by now).
        for (intent, _) in state.intents(prefix) {
            self.untag(&intent).await?;
            state.tags.remove(&intent);
        }

        // 2. IAM's limit is two keys: never a third CreateAccessKey. Of two, only a
        //    key rotor marked and that is Inactive (revoked, unused) may go.
        if state.keys.len() >= 2 {
            let spare = state
                .keys
                .iter()
                .find(|k| !k.active() && state.own_mark(&k.access_key_id, prefix).is_some())
                .map(|k| k.access_key_id.clone());
            match spare {
                Some(id) if state.keys.len() == 2 => {
                    tracing::info!(id = %id, "deleting rotor's inactive access key to make room (IAM allows two per user)");
                    self.delete(&id).await?;
                    state.keys.retain(|k| k.access_key_id != id);
                }
                _ => {
                    let described: Vec<String> = state
                        .keys
                        .iter()
                        .take(4)
                        .map(|k| {
                            let whose = match state.own_mark(&k.access_key_id, prefix) {
                                Some(n) => format!("rotor's {n}"),
                                None if probable.as_deref() == Some(k.access_key_id.as_str()) => {
                                    "unmarked, created moments after a rotation of this resource asked for a key and died before keeping it: probably that key, whose secret nobody holds; delete it if nobody made it by hand".into()
                                }
                                None => "not rotor's".into(),
                            };
                            let status = if k.active() { "Active" } else { "Inactive" };
                            format!("{} ({status}, {whose})", k.access_key_id)
                        })
                        .collect();
                    return Err(ProviderError::Rejected {
                        status: 409,
                        message: format!(
                            "IAM user {:?} already has {} access keys: {}. IAM allows two per user (LimitExceeded) and rotor deletes only an Inactive key it created; it created nothing and deleted nothing. Delete the key rotor does not own (aws iam delete-access-key --user-name {} --access-key-id <id>); the rotation is retried",
                            self.user,
                            state.keys.len(),
                            described.join(", "),
                            self.user
                        ),
                    });
                }
            }
        }

        // 3. The intent, then the key, kept in the escrow at once, then its mark.
        let before: Vec<&str> = state
            .keys
            .iter()
            .map(|k| k.access_key_id.as_str())
            .collect();
        let at = format!("t={}", Utc::now().timestamp());
        let intent = [PENDING.trim_end(), at.as_str()]
            .into_iter()
            .chain(before.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        self.tag(name, &intent).await?;
        let what = "creating an access key (iam:CreateAccessKey)";
        let created = self
            .iam(
                what,
                &[
                    ("Action", "CreateAccessKey"),
                    ("UserName", self.user.as_str()),
                ],
            )
            .await;
        let mut body = match created {
            Ok(body) => body,
            // IAM answered no (LimitExceeded, throttling, …): nothing was created, and
            // the intent must not stay to make a later key look like rotor's. Only an
            // unknown outcome (no answer) keeps it.
            Err(e) => {
                if !matches!(e, ProviderError::Unavailable(_))
                    && let Err(u) = self.untag(name).await
                {
                    tracing::warn!(error = %u, name, "removing the intent tag after a refused CreateAccessKey failed");
                }
                return Err(e);
            }
        };
        let parsed: Result<CreateAccessKeyResponse, _> = parse(what, &body);
        zeroize::Zeroize::zeroize(&mut body);
        let key = parsed?.create_access_key_result.access_key;
        if !plausible_key_id(&key.access_key_id) || key.secret_access_key.is_empty() {
            return Err(ProviderError::BadResponse(format!(
                "{what}: the answer carries no usable access key"
            )));
        }
        let id = key.access_key_id.clone();
        let credential = Credential {
            id: id.clone(),
            outputs: BTreeMap::from([
                (ID_OUTPUT, SecretString::from(key.access_key_id)),
                (SECRET_OUTPUT, SecretString::from(key.secret_access_key)),
            ]),
            secret_output: SECRET_OUTPUT,
        };
        if let Err(e) = request.stash.keep(&credential).await {
            // Kept nowhere: nobody can use it. Deleted now, or by the resumed rotation
            // (the intent tag names it).
            if let Err(d) = self.delete(&id).await {
                tracing::warn!(id = %id, error = %d, "deleting the access key the escrow did not keep failed; the next rotation deletes it");
            }
            return Err(ProviderError::Stash(e));
        }
        // Kept: a failure to mark it now is finished by the test (ensure_marked).
        match self.tag(&id, name).await {
            Ok(()) => {
                if let Err(e) = self.untag(name).await {
                    tracing::warn!(error = %e, "removing the intent tag failed; the next rotation removes it");
                }
            }
            Err(e) => {
                tracing::warn!(id = %id, error = %e, "marking the new access key failed; its test marks it")
            }
        }
        Ok(credential)
    }

    /// `sts:GetCallerIdentity` signed with the new key, retried while IAM has not
    /// spread the key yet (seconds at AWS), and the ARN it answers must be the user's.
    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        let get = |k: &str| {
            credential
                .outputs
                .get(k)
                .cloned()
                .ok_or_else(|| ProviderError::TestFailed(format!("the credential has no {k}")))
        };
        let keys = Keys {
            id: get(ID_OUTPUT)?,
            secret: get(SECRET_OUTPUT)?,
            token: None,
        };
        let what = "calling sts:GetCallerIdentity with the new key";
        let mut attempt = 0u32;
        let body = loop {
            let answer = self
                .call(
                    what,
                    Service::Sts,
                    &keys,
                    &[("Action", "GetCallerIdentity")],
                )
                .await
                .map_err(|e| ProviderError::TestFailed(e.to_string()))?;
            match answer {
                Ok(body) => break body,
                Err(e)
                    if attempt + 1 < TEST_ATTEMPTS
                        && (e.is("InvalidClientTokenId") || e.is("SignatureDoesNotMatch")) =>
                {
                    let wait = self
                        .http
                        .settings
                        .backoff_base
                        .saturating_mul(1 << attempt.min(8))
                        .min(TEST_MAX_WAIT);
                    tracing::debug!(attempt, "the new access key is not accepted yet; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(ProviderError::TestFailed(format!(
                        "{} (after {} attempts)",
                        e.into_provider(what),
                        attempt + 1
                    )));
                }
            }
        };
        let identity: GetCallerIdentityResponse =
            parse(what, &body).map_err(|e| ProviderError::TestFailed(e.to_string()))?;
        let arn = identity.get_caller_identity_result.arn;
        if arn_user(&arn) != Some(self.user.as_str()) {
            return Err(ProviderError::TestFailed(format!(
                "the new key authenticates as {arn:?}, not as IAM user {:?}",
                self.user
            )));
        }
        // A key the escrow kept but a killed rotation did not mark is marked now.
        match self.state().await {
            Ok(state) => {
                if let Err(e) = self.ensure_marked(&credential.id, &state).await {
                    tracing::warn!(id = %credential.id, error = %e, "marking the access key as rotor's failed; its revoke marks it");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the user's tags failed; the key is marked later")
            }
        }
        Ok(())
    }

    /// deactivateFirst: an Active key is deactivated (UpdateAccessKey Inactive), an
    /// Inactive one deleted. Otherwise: deleted at once.
    async fn revoke(&self, id: &str) -> Result<Revocation, ProviderError> {
        if !plausible_key_id(id) {
            return Err(ProviderError::InvalidConfig(format!(
                "{id:?} is not an access key id"
            )));
        }
        let state = self.state().await?;
        let Some(key) = state.keys.iter().find(|k| k.access_key_id == id) else {
            if state.tags.contains_key(id)
                && let Err(e) = self.untag(id).await
            {
                warn_unmarked(id, &e);
            }
            return Ok(Revocation::AlreadyGone);
        };
        if !self.deactivate_first || !key.active() {
            return self.delete(id).await;
        }
        // Marked first: the Inactive key is then provably rotor's to delete later.
        self.ensure_marked(id, &state).await?;
        let what = "deactivating the access key (iam:UpdateAccessKey Inactive)";
        match self
            .call(
                what,
                Service::Iam,
                &self.admin,
                &[
                    ("Action", "UpdateAccessKey"),
                    ("UserName", self.user.as_str()),
                    ("AccessKeyId", id),
                    ("Status", "Inactive"),
                ],
            )
            .await?
        {
            Ok(_) => Ok(Revocation::Revoked),
            Err(e) if e.is("NoSuchEntity") => Ok(Revocation::AlreadyGone),
            Err(e) => Err(e.into_provider(what)),
        }
    }

    /// `GetAccessKeyLastUsed`: in use when IAM saw it used after `since`.
    async fn in_use(&self, id: &str, since: DateTime<Utc>) -> Result<Usage, ProviderError> {
        let what = "asking when the access key was last used (iam:GetAccessKeyLastUsed)";
        let body = match self
            .call(
                what,
                Service::Iam,
                &self.admin,
                &[("Action", "GetAccessKeyLastUsed"), ("AccessKeyId", id)],
            )
            .await?
        {
            Ok(body) => body,
            Err(e) if e.is("NoSuchEntity") => return Ok(Usage::Unused),
            Err(e) => return Err(e.into_provider(what)),
        };
        let answer: GetAccessKeyLastUsedResponse = parse(what, &body)?;
        let date = answer
            .get_access_key_last_used_result
            .access_key_last_used
            .and_then(|l| l.last_used_date)
            .filter(|d| !d.trim().is_empty());
        Ok(match date {
            None => Usage::Unused,
            Some(text) => match parse_date(&text) {
                Some(at) if used_after(at, since) => Usage::InUse {
                    count: None,
                    last_used: Some(at),
                },
                Some(_) => Usage::Unused,
                // A date rotor cannot read: assume the worst.
                None => Usage::InUse {
                    count: None,
                    last_used: None,
                },
            },
        })
    }

    /// The user's keys marked with one of this resource's own names.
    async fn list_own(&self, prefix: &str) -> Result<Vec<String>, ProviderError> {
        let state = self.state().await?;
        Ok(state
            .keys
            .iter()
            .filter(|k| state.own_mark(&k.access_key_id, prefix).is_some())
            .map(|k| k.access_key_id.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_and_classified() {
        let body = br#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>The user with name app cannot be found.</Message></Error>
  <RequestId>4a2f</RequestId></ErrorResponse>"#;
        let e = parse_error(404, body);
        assert!(e.is("NoSuchEntity"), "{e:?}");
        assert_eq!(e.message, "The user with name app cannot be found.");
        for (code, want) in [
            ("AccessDenied", "admin credential"),
            ("InvalidClientTokenId", "admin credential"),
            ("Throttling", "rate limited"),
            ("LimitExceeded", "refused the request (409)"),
        ] {
            let body = format!(
                "<ErrorResponse><Error><Code>{code}</Code><Message>m</Message></Error></ErrorResponse>"
            );
            let err = parse_error(409, body.as_bytes())
                .into_provider("x")
                .to_string();
            assert!(err.contains(want), "{code}: {err}");
        }
        // Not XML, or a code that is not one: still an error, no panic.
        let e = parse_error(400, b"\xff\xfe<<<");
        assert_eq!(e.code, "HTTP 400");
        let e = parse_error(400, b"<Error><Code>a b<c</Code></Error>");
        assert_eq!(e.code, "HTTP 400");
    }

    #[test]
    fn an_echoed_secret_in_an_error_is_redacted() {
        let body = b"<ErrorResponse><Error><Code>InvalidParameterValue</Code><Message>bad value wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY</Message></Error></ErrorResponse>";
        let e = parse_error(400, body);
        assert!(!e.message.contains("wJalrXUtnFEMI"), "{}", e.message);
    }

    #[test]
    fn answers_parse() {
        let body = br#"<ListAccessKeysResponse><ListAccessKeysResult><UserName>app</UserName>
<AccessKeyMetadata><member><UserName>app</UserName><AccessKeyId>AKIAIOSFODNN7EXAMPLE</AccessKeyId><Status>Active</Status><CreateDate>2026-01-01T00:00:00Z</CreateDate></member>
<member><UserName>app</UserName><AccessKeyId>AKIAI44QH8DHBEXAMPLE</AccessKeyId><Status>Inactive</Status></member></AccessKeyMetadata>
<IsTruncated>false</IsTruncated></ListAccessKeysResult></ListAccessKeysResponse>"#;
        let r: ListAccessKeysResponse = parse("x", body).unwrap();
        let keys = r.list_access_keys_result.access_key_metadata.unwrap().items;
        assert_eq!(keys.len(), 2);
        assert!(keys[0].active() && !keys[1].active());
        let empty = br#"<ListAccessKeysResponse><ListAccessKeysResult><AccessKeyMetadata/><IsTruncated>false</IsTruncated></ListAccessKeysResult></ListAccessKeysResponse>"#;
        let r: ListAccessKeysResponse = parse("x", empty).unwrap();
        assert!(
            r.list_access_keys_result
                .access_key_metadata
                .is_none_or(|m| m.items.is_empty())
        );
        let tags = br#"<ListUserTagsResponse><ListUserTagsResult><Tags><member><Key>AKIAIOSFODNN7EXAMPLE</Key><Value>rotor-5f0c3a9e-3</Value></member></Tags><IsTruncated>false</IsTruncated></ListUserTagsResult></ListUserTagsResponse>"#;
        let r: ListUserTagsResponse = parse("x", tags).unwrap();
        assert_eq!(
            r.list_user_tags_result.tags.unwrap().items[0].value,
            "rotor-5f0c3a9e-3"
        );
        let err = parse::<CreateAccessKeyResponse>("creating", b"<CreateAccessKeyResponse><CreateAccessKeyResult><AccessKey><SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY</SecretAccessKey></AccessKey></CreateAccessKeyResult></CreateAccessKeyResponse>")
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("wJalrXUtnFEMI"), "{err}");
    }

    #[test]
    fn a_use_counts_from_the_next_whole_second() {
        let since = parse_date("2026-01-02T03:04:05Z").unwrap();
        let at = |t: &str| parse_date(t).unwrap();
        assert!(!used_after(at("2026-01-02T03:04:05.900Z"), since));
        assert!(used_after(at("2026-01-02T03:04:06.000Z"), since));
        assert!(!used_after(at("2026-01-01T00:00:00Z"), since));
    }

    #[test]
    fn dates_and_arns() {
        assert!(parse_date("2026-01-02T03:04:05Z").is_some());
        assert!(parse_date("2026-01-02T03:04:05.123456+00:00").is_some());
        assert!(parse_date("2026-01-02T03:04:05.123").is_some());
        assert!(parse_date("yesterday").is_none());
        assert_eq!(arn_user("arn:aws:iam::123456789012:user/app"), Some("app"));
        assert_eq!(
            arn_user("arn:aws:iam::123456789012:user/team/app"),
            Some("app")
        );
        assert_eq!(
            arn_user("arn:aws:sts::123456789012:assumed-role/app/s"),
            None
        );
        assert_eq!(arn_user("nonsense"), None);
    }

    #[test]
    fn each_partition_has_its_own_iam_endpoint() {
        assert_eq!(
            default_iam_endpoint("eu-west-1"),
            "https://iam.amazonaws.com"
        );
        assert_eq!(
            default_iam_endpoint("cn-northwest-1"),
            "https://iam.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            default_iam_endpoint("us-gov-east-1"),
            "https://iam.us-gov.amazonaws.com"
        );
        assert_eq!(signing_region_for_iam("cn-northwest-1"), "cn-north-1");
    }

    #[test]
    fn an_intent_names_only_one_unmarked_new_key() {
        let key = |id: &str, created: &str| KeyMetadata {
            access_key_id: id.into(),
            status: "Active".into(),
            create_date: Some(created.into()),
        };
        // The intent was written at 2026-12-04T10:00:00Z (1796378400).
        let mut state = UserState {
            keys: vec![
                key("AKIAOLDOLDOLDOLD0001", "2026-11-01T00:00:00Z"),
                key("AKIANEWNEWNEWNEW0002", "2026-12-04T10:00:01Z"),
            ],
            tags: BTreeMap::from([(
                "rotor-5f0c3a9e-3".to_string(),
                "pending t=1796378400 AKIAOLDOLDOLDOLD0001".to_string(),
            )]),
        };
        let intents = state.intents("rotor-5f0c3a9e-");
        assert_eq!(intents.len(), 1);
        assert_eq!(
            state
                .created_under(&intents[0].1)
                .map(|k| k.access_key_id.as_str()),
            Some("AKIANEWNEWNEWNEW0002")
        );
        // Marked (by a human's description or rotor): not a leftover.
        state
            .tags
            .insert("AKIANEWNEWNEWNEW0002".into(), "laptop".into());
        assert!(state.created_under(&intents[0].1).is_none());
        state.tags.remove("AKIANEWNEWNEWNEW0002");
        // A key created minutes after the intent is a human's, not the dead create's.
        state.keys[1].create_date = Some("2026-12-04T10:05:00Z".into());
        assert!(state.created_under(&intents[0].1).is_none());
        state.keys[1].create_date = Some("2026-12-04T10:00:01Z".into());
        // An intent without its time proves nothing.
        let untimed = Intent {
            at: None,
            before: intents[0].1.before.clone(),
        };
        assert!(state.created_under(&untimed).is_none());
        // Two unknown keys: neither is provably the one rotor created.
        state.keys[0] = key("AKIAHUMANHUMANHU0003", "2026-12-04T10:00:02Z");
        assert!(state.created_under(&intents[0].1).is_none());
        // Another resource's intent is not this one's.
        assert!(state.intents("rotor-aaaaaaaa-").is_empty());
    }

    #[test]
    fn names_and_regions_are_checked() {
        assert!(check_user_name("app-ci.bot@x").is_ok());
        assert!(check_user_name("a/b").is_err() && check_user_name("").is_err());
        assert_eq!(signing_region_for_iam("eu-west-1"), "us-east-1");
        assert_eq!(signing_region_for_iam("cn-northwest-1"), "cn-north-1");
        assert!(plausible_key_id("AKIAIOSFODNN7EXAMPLE"));
        assert!(!plausible_key_id("AKIA/../x") && !plausible_key_id("short"));
    }
}
