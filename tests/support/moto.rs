//! moto's server (an independent implementation of the AWS APIs) for the awsIam
//! provider's tests: one per test binary on a free loopback port, from the venv
//! `hack/deps.sh` makes (`~/.cache/rotor/venv/bin/moto_server`), killed at exit.
//!
//! moto checks signatures and keys only with IAM auth on. The server starts with it
//! off; the harness creates the admin user `rotor-admin` (with the least-privilege
//! policy the README gives, on every user), its access key, then turns auth on
//! (`POST /moto-api/reset-auth 0`): from then on every request must be signed with a
//! key moto knows and its secret — which the harness checks at once with a wrong
//! secret. Every request moto receives is recorded (`MOTO_ENABLE_RECORDING`), so
//! tests can read what moto saw ([`Moto::actions`]).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

pub struct Moto {
    pub url: String,
    pub admin_id: String,
    pub admin_secret: String,
    recording: PathBuf,
    pub log: PathBuf,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// The least privilege README.md gives the admin principal (on every user here).
pub const ADMIN_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iam:ListAccessKeys","iam:CreateAccessKey","iam:UpdateAccessKey","iam:DeleteAccessKey","iam:GetAccessKeyLastUsed","iam:TagUser","iam:UntagUser","iam:ListUserTags"],"Resource":"*"}]}"#;

/// A policy for the harness's own setup (create users, human keys).
const HARNESS_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:*","Resource":"*"}]}"#;

fn bin() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    let bin = PathBuf::from(home).join(".cache/rotor/venv/bin/moto_server");
    assert!(
        bin.exists(),
        "moto's server is not installed ({}): run hack/deps.sh (make test does)",
        bin.display()
    );
    bin
}

/// `<tag>text</tag>` in `xml`, the first one.
pub fn between<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(&xml[start..end])
}

/// Every `<tag>text</tag>` in `xml`.
pub fn all<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(v) = between(rest, tag) {
        out.push(v);
        let close = format!("</{tag}>");
        let at = rest.find(&close).unwrap() + close.len();
        rest = &rest[at..];
    }
    out
}

fn form(params: &[(&str, &str)], version: &str) -> String {
    let mut f = url::form_urlencoded::Serializer::new(String::new());
    f.append_pair("Action", params[0].1)
        .append_pair("Version", version);
    for (k, v) in &params[1..] {
        f.append_pair(k, v);
    }
    f.finish()
}

impl Moto {
    /// POSTs `body` (with `headers`) to moto; the status and body.
    fn post(&self, path: &str, headers: &[(String, String)], body: &str) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-m", "20", "-w", "\n%{http_code}", "-X", "POST"]);
        for (k, v) in headers {
            cmd.args(["-H", &format!("{k}: {v}")]);
        }
        cmd.args(["--data-binary", "@-", &format!("{}{path}", self.url)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("curl");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }

    /// A Query API call signed with (`id`, `secret`) for `service` ("iam" or "sts").
    pub fn signed(
        &self,
        service: &str,
        id: &str,
        secret: &str,
        params: &[(&str, &str)],
    ) -> (u16, String) {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        use aws_smithy_runtime_api::client::identity::Identity;
        let version = if service == "sts" {
            "2011-06-15"
        } else {
            "2010-05-08"
        };
        let body = form(params, version);
        let identity: Identity =
            aws_credential_types::Credentials::new(id, secret, None, None, "test").into();
        let signing = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let ct = "application/x-www-form-urlencoded; charset=utf-8";
        let url = format!("{}/", self.url);
        let request = SignableRequest::new(
            "POST",
            url.as_str(),
            [("content-type", ct)].into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .unwrap();
        let (instructions, _) = sign(request, &signing).unwrap().into_parts();
        let mut headers: Vec<(String, String)> = instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.push(("content-type".into(), ct.into()));
        self.post("/", &headers, &body)
    }

    /// An IAM call as the admin; panics unless it succeeds.
    pub fn admin(&self, params: &[(&str, &str)]) -> String {
        let (status, body) = self.signed("iam", &self.admin_id, &self.admin_secret, params);
        assert_eq!(status, 200, "{params:?}: {body}");
        body
    }

    /// `sts:GetCallerIdentity` with a key: the ARN, or the error code moto answered.
    pub fn identity(&self, id: &str, secret: &str) -> Result<String, String> {
        let (status, body) = self.signed("sts", id, secret, &[("Action", "GetCallerIdentity")]);
        if status == 200 {
            Ok(between(&body, "Arn").unwrap_or_default().to_string())
        } else {
            Err(between(&body, "Code").unwrap_or(&body).to_string())
        }
    }

    pub fn create_user(&self, user: &str) {
        self.admin(&[("Action", "CreateUser"), ("UserName", user)]);
    }

    /// A key made outside rotor (a human's): (id, secret).
    pub fn create_key(&self, user: &str) -> (String, String) {
        let body = self.admin(&[("Action", "CreateAccessKey"), ("UserName", user)]);
        (
            between(&body, "AccessKeyId").unwrap().to_string(),
            between(&body, "SecretAccessKey").unwrap().to_string(),
        )
    }

    /// The user's keys: (id, status), as moto holds them.
    pub fn keys(&self, user: &str) -> Vec<(String, String)> {
        let body = self.admin(&[("Action", "ListAccessKeys"), ("UserName", user)]);
        all(&body, "member")
            .into_iter()
            .map(|m| {
                (
                    between(m, "AccessKeyId").unwrap().to_string(),
                    between(m, "Status").unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The user's tags: (key, value).
    pub fn tags(&self, user: &str) -> Vec<(String, String)> {
        let body = self.admin(&[("Action", "ListUserTags"), ("UserName", user)]);
        all(&body, "member")
            .into_iter()
            .map(|m| {
                (
                    between(m, "Key").unwrap().to_string(),
                    between(m, "Value").unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The Actions of every request moto received that named `user` (UserName=), in
    /// order, whoever sent them.
    pub fn actions(&self, user: &str) -> Vec<String> {
        use base64::Engine as _;
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        let mut out = Vec::new();
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let raw = entry["body"].as_str().unwrap_or_default();
            let body = if entry["body_encoded"].as_bool() == Some(true) {
                base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            } else {
                raw.to_string()
            };
            let params: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect();
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            if get("UserName").as_deref() == Some(user)
                && let Some(action) = get("Action")
            {
                out.push(action);
            }
        }
        out
    }

    /// What moto saw for `user`, replayed: panics if a CreateAccessKey was ever sent
    /// while the user had two keys (IAM's limit). `initial`: keys made before the
    /// recording shows them (none: every key is made through moto's API). Returns the
    /// number of CreateAccessKey requests.
    pub fn assert_never_a_third_key(&self, user: &str) -> usize {
        let mut keys = 0usize;
        let mut creates = 0;
        for action in self.actions(user) {
            match action.as_str() {
                "CreateAccessKey" => {
                    assert!(
                        keys < 2,
                        "a CreateAccessKey for {user} while it had {keys} keys: {:?}",
                        self.actions(user)
                    );
                    keys += 1;
                    creates += 1;
                }
                "DeleteAccessKey" => keys = keys.saturating_sub(1),
                _ => {}
            }
        }
        creates
    }
}

/// moto's server, started on first use.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(start)
}

fn start() -> Moto {
    let bin = bin();
    let port = super::free_port();
    let dir = std::env::temp_dir().join(format!("rotor-moto-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recording = dir.join("recording.jsonl");
    let log = dir.join("moto.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_ENABLE_RECORDING", "True")
        .env("MOTO_RECORDER_FILEPATH", &recording)
        .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .stdin(Stdio::null());
    super::spawn(cmd);
    let mut moto = Moto {
        url: format!("http://127.0.0.1:{port}"),
        admin_id: String::new(),
        admin_secret: String::new(),
        recording,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = moto.post("/moto-api/reset", &[], "");
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "moto's server did not answer within 60s: {}",
            std::fs::read_to_string(&moto.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Auth is off: the setup needs no signature.
    // moto's server picks the service from the Authorization header's scope: an
    // unsigned request carries one with no valid signature.
    let unsigned_headers = [
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        (
            "authorization".to_string(),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0".to_string(),
        ),
    ];
    let unsigned = |params: &[(&str, &str)]| {
        let headers = unsigned_headers.clone();
        let (status, body) = moto.post("/", &headers, &form(params, "2010-05-08"));
        assert_eq!(status, 200, "{params:?}: {body}");
        body
    };
    unsigned(&[("Action", "CreateUser"), ("UserName", "rotor-admin")]);
    unsigned(&[
        ("Action", "PutUserPolicy"),
        ("UserName", "rotor-admin"),
        ("PolicyName", "rotor"),
        ("PolicyDocument", ADMIN_POLICY),
    ]);
    unsigned(&[("Action", "CreateUser"), ("UserName", "harness")]);
    unsigned(&[
        ("Action", "PutUserPolicy"),
        ("UserName", "harness"),
        ("PolicyName", "all"),
        ("PolicyDocument", HARNESS_POLICY),
    ]);
    let body = unsigned(&[("Action", "CreateAccessKey"), ("UserName", "rotor-admin")]);
    let admin_id = between(&body, "AccessKeyId").unwrap().to_string();
    let admin_secret = between(&body, "SecretAccessKey").unwrap().to_string();
    let body = unsigned(&[("Action", "CreateAccessKey"), ("UserName", "harness")]);
    moto.admin_id = between(&body, "AccessKeyId").unwrap().to_string();
    moto.admin_secret = between(&body, "SecretAccessKey").unwrap().to_string();
    // Auth on, for every request from now on.
    let (status, body) = moto.post(
        "/moto-api/reset-auth",
        &[("content-type".into(), "text/plain".into())],
        "0",
    );
    assert_eq!(status, 200, "turning moto's auth on: {body}");
    // Proof that it is on: an unsigned request, and a wrong secret, are refused.
    let (status, body) = moto.post(
        "/",
        &unsigned_headers,
        &form(&[("Action", "ListUsers")], "2010-05-08"),
    );
    assert_ne!(status, 200, "moto answered an unsigned request: {body}");
    let wrong = format!("{}x", &admin_secret[..admin_secret.len() - 1]);
    assert_eq!(
        moto.identity(&admin_id, &wrong),
        Err("SignatureDoesNotMatch".into()),
        "moto accepts a wrong secret: the tests would prove nothing"
    );
    assert!(moto.identity(&admin_id, &admin_secret).is_ok());
    super::remember_issued(&admin_secret);
    let _ = ROTOR_ADMIN.set(RotorAdmin {
        id: admin_id,
        secret: admin_secret,
    });
    moto
}

/// The rotor admin's key (least privilege), for the manifests.
pub struct RotorAdmin {
    pub id: String,
    pub secret: String,
}

static ROTOR_ADMIN: OnceLock<RotorAdmin> = OnceLock::new();

impl Moto {
    /// The key rotor's admin principal signs with (only the README's policy).
    pub fn rotor_admin(&self) -> &'static RotorAdmin {
        ROTOR_ADMIN.get().expect("moto started")
    }
}
