//! `rotor version`: this binary's version and the operator's in the cluster, as
//! `cmctl version` and `kubectl version` print them (`Client Version:` /
//! `Server Version:`). The operator's version is the image tag of its Deployment (the
//! chart's and the kustomize install's label `app.kubernetes.io/name=rotor`); an image
//! pinned by digest alone falls back to the Deployment's `app.kubernetes.io/version`.

use super::Error;
use super::output::{self, Output};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

/// This binary's version.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the operator's Deployment is found (chart and config/manager set it).
pub const SELECTOR: &str = "app.kubernetes.io/name=rotor";

/// At most this many Deployments are looked at (one page).
const MAX_DEPLOYMENTS: u32 = 20;

/// The operator container's name in the chart and config/manager; else the first.
const CONTAINER: &str = "rotor";

/// One operator Deployment found in the cluster.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Operator {
    pub namespace: String,
    pub name: String,
    /// The operator container's image.
    pub image: String,
    /// Its tag (or the Deployment's app.kubernetes.io/version label); "unknown".
    pub version: String,
}

/// What the cluster said about the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// `--client`: not asked.
    NotAsked,
    /// The cluster could not be reached (or no kubeconfig): why.
    Unreachable(String),
    /// The cluster answered, without an operator Deployment: why.
    NotFound(String),
    Found(Vec<Operator>),
}

impl Server {
    /// The operators' version when they agree (one install, or several of one version).
    pub fn version(&self) -> Option<&str> {
        let Self::Found(operators) = self else {
            return None;
        };
        let first = operators.first()?;
        operators
            .iter()
            .all(|o| o.version == first.version)
            .then_some(first.version.as_str())
    }

    /// What to say on stderr: why there is no server version.
    pub fn notice(&self) -> Option<String> {
        match self {
            Self::Unreachable(why) => Some(format!("cannot reach the cluster: {why}")),
            Self::NotFound(why) => Some(format!("no rotor operator found: {why}")),
            Self::NotAsked | Self::Found(_) => None,
        }
    }
}

/// Looks for the operator's Deployments (labelled `selector`) in `namespace`, or in
/// every namespace.
pub async fn lookup(client: &Client, namespace: Option<&str>, selector: &str) -> Server {
    let api: Api<Deployment> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let params = ListParams::default()
        .labels(selector)
        .limit(MAX_DEPLOYMENTS);
    let place = namespace.map_or_else(
        || "in any namespace".to_string(),
        |ns| format!("in namespace {ns:?}"),
    );
    match api.list(&params).await {
        Ok(list) if list.items.is_empty() => {
            Server::NotFound(format!("no Deployment labelled {selector} {place}"))
        }
        Ok(list) => {
            if list
                .metadata
                .continue_
                .as_deref()
                .is_some_and(|c| !c.is_empty())
            {
                eprintln!(
                    "rotor version: more than {MAX_DEPLOYMENTS} Deployments labelled {selector} {place}; showing the first {MAX_DEPLOYMENTS} (narrow with -n or -l)"
                );
            }
            let mut operators: Vec<Operator> = list.items.iter().map(operator).collect();
            operators.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            Server::Found(operators)
        }
        // The API server answered (e.g. 403: not allowed to list Deployments there).
        Err(kube::Error::Api(status)) => Server::NotFound(format!(
            "listing Deployments labelled {selector} {place}: {} ({})",
            status.message, status.code
        )),
        Err(e) => Server::Unreachable(e.to_string()),
    }
}

/// The operator a Deployment runs.
fn operator(deployment: &Deployment) -> Operator {
    let containers = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    let image = containers
        .iter()
        .find(|c| c.name == CONTAINER)
        .or(containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let version = image_tag(&image)
        .map(str::to_string)
        .or_else(|| {
            deployment
                .labels()
                .get("app.kubernetes.io/version")
                .cloned()
        })
        .unwrap_or_else(|| "unknown".into());
    // Anyone who may create a Deployment with the label writes these: one line each,
    // no terminal escapes, and short.
    let clean = |text: &str| output::truncate(&output::one_line(text), MAX_FIELD);
    Operator {
        namespace: deployment.namespace().unwrap_or_default(),
        name: deployment.name_any(),
        image: clean(&image),
        version: clean(&version),
    }
}

/// The longest image or version `rotor version` prints (a Deployment's image may be
/// far longer, and is anyone's who may create a labelled Deployment).
const MAX_FIELD: usize = 200;

/// The tag of an image reference: `ghcr.io/rotor-dev/rotor:1.2.3@sha256:…` → `1.2.3`;
/// none for `registry:5000/rotor` or `rotor@sha256:…`.
pub fn image_tag(image: &str) -> Option<&str> {
    let name = image.split('@').next().unwrap_or_default();
    let last = name.rsplit('/').next().unwrap_or_default();
    let (_, tag) = last.split_once(':')?;
    (!tag.is_empty()).then_some(tag)
}

/// `-o json|yaml`: `clientVersion`, `serverVersion` (null when unknown or the
/// operators disagree) and `operators` (each Deployment found).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    client_version: &'a str,
    server_version: Option<&'a str>,
    operators: &'a [Operator],
}

/// What `rotor version` prints on stdout.
pub fn render(server: &Server, output: Output) -> Result<String, Error> {
    let operators = match server {
        Server::Found(operators) => operators.as_slice(),
        _ => &[],
    };
    if output != Output::Table {
        let document = Document {
            client_version: CLIENT_VERSION,
            server_version: server.version(),
            operators,
        };
        return output::document(&document, output);
    }
    let mut text = format!("Client Version: {CLIENT_VERSION}\n");
    for o in operators {
        text.push_str(&format!(
            "Server Version: {} (deployment {}/{}, image {})\n",
            o.version, o.namespace, o.name, o.image
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_is_read_from_any_image_reference() {
        for (image, tag) in [
            ("ghcr.io/rotor-dev/rotor:9.9.9", Some("9.9.9")),
            ("rotor:v1", Some("v1")),
            ("localhost:5000/rotor:0.2.0", Some("0.2.0")),
            ("localhost:5000/rotor", None),
            ("ghcr.io/rotor-dev/rotor:1.2.3@sha256:abcd", Some("1.2.3")),
            ("ghcr.io/rotor-dev/rotor@sha256:abcd", None),
            ("rotor:", None),
            ("", None),
        ] {
            assert_eq!(image_tag(image), tag, "{image}");
        }
    }

    fn found(versions: &[&str]) -> Server {
        Server::Found(
            versions
                .iter()
                .enumerate()
                .map(|(n, v)| Operator {
                    namespace: format!("ns{n}"),
                    name: "rotor".into(),
                    image: format!("ghcr.io/rotor-dev/rotor:{v}"),
                    version: (*v).into(),
                })
                .collect(),
        )
    }

    #[test]
    fn the_server_version_is_the_one_all_operators_run() {
        assert_eq!(found(&["1.0.0"]).version(), Some("1.0.0"));
        assert_eq!(found(&["1.0.0", "1.0.0"]).version(), Some("1.0.0"));
        assert_eq!(found(&["1.0.0", "1.1.0"]).version(), None);
        assert_eq!(Server::NotAsked.version(), None);
        let text = render(&found(&["1.0.0", "1.1.0"]), Output::Table).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&render(&Server::NotAsked, Output::Json).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"clientVersion": CLIENT_VERSION, "serverVersion": null, "operators": []})
        );
    }

    /// A labelled Deployment is anyone's who may create one: its image cannot clear
    /// the screen, forge a second "Server Version:" line or fill the terminal.
    #[test]
    fn a_hostile_image_prints_as_one_short_clean_line() {
        let image = format!(
            "evil\u{1b}]0;pwned\u{7}\u{1b}[2J:1.0\nServer Version: 9.9.9 {}",
            "x".repeat(10_000)
        );
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "namespace": "aaa"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {"spec": {"containers": [{"name": "rotor", "image": image}]}}
            }
        }))
        .unwrap();
        let text = render(&Server::Found(vec![operator(&deployment)]), Output::Table).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.len() < 600, "{}", text.len());
    }
}
