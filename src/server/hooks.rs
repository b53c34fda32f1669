//! Git webhooks: `POST /hooks/github`, `/hooks/gitea`, `/hooks/gitlab`. A delivery is
//! verified first — GitHub's `X-Hub-Signature-256` (`sha256=` and the hex HMAC-SHA256 of
//! the body), Gitea's `X-Gitea-Signature` (the hex HMAC-SHA256), GitLab's `X-Gitlab-Token`
//! (the secret itself) — all compared in constant time, with the secret from
//! `PROTO_WEBHOOK_SECRET` or `--webhook-secret-file`. A bad or missing signature (or no
//! secret configured) is answered 401 and changes nothing. A verified push to the watched
//! repository and branch wakes the engine on the same channel its file watcher and poller
//! use, so the new commit is fetched and applied at once; any other delivery is answered
//! 202 and ignored. Every delivery is counted by result.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use prometheus_client::encoding::EncodeLabelValue;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{App, ServerError, Watched};

/// The variable a webhook secret is read from.
pub const SECRET_VARIABLE: &str = "PROTO_WEBHOOK_SECRET";

/// The shared secret of the webhooks. Its `Debug` does not show it.
#[derive(Clone)]
pub struct WebhookSecret(Arc<[u8]>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    pub fn new(secret: &str) -> WebhookSecret {
        WebhookSecret(Arc::from(secret.trim().as_bytes()))
    }

    /// From `--webhook-secret-file` when given, else from `PROTO_WEBHOOK_SECRET`; `None`
    /// when neither is set (every delivery is then refused).
    pub fn configured(
        file: Option<&std::path::Path>,
    ) -> Result<Option<WebhookSecret>, ServerError> {
        if let Some(path) = file {
            return Ok(Some(WebhookSecret::new(&super::auth::read_secret_file(
                path,
            )?)));
        }
        Ok(std::env::var(SECRET_VARIABLE)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| WebhookSecret::new(&s)))
    }

    /// Whether `signature` (hex) is the HMAC-SHA256 of `body` under this secret.
    fn signed(&self, body: &[u8], signature: &str) -> bool {
        let Ok(expected) = hex::decode(signature.trim()) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return false;
        };
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&expected).is_ok()
    }

    fn is(&self, token: &str) -> bool {
        self.0.ct_eq(token.trim().as_bytes()).into()
    }
}

/// The forge a delivery claims to come from (the path it was posted to).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Forge {
    Github,
    Gitea,
    Gitlab,
}

impl Forge {
    fn parse(path: &str) -> Option<Forge> {
        match path {
            "github" => Some(Forge::Github),
            "gitea" => Some(Forge::Gitea),
            "gitlab" => Some(Forge::Gitlab),
            _ => None,
        }
    }

    /// Whether the delivery's signature (or token) is good.
    fn verify(self, secret: &WebhookSecret, headers: &HeaderMap, body: &[u8]) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self {
            Forge::Github => header("x-hub-signature-256")
                .and_then(|v| v.strip_prefix("sha256="))
                .is_some_and(|sig| secret.signed(body, sig)),
            Forge::Gitea => header("x-gitea-signature").is_some_and(|sig| secret.signed(body, sig)),
            Forge::Gitlab => header("x-gitlab-token").is_some_and(|token| secret.is(token)),
        }
    }

    /// Whether the delivery is a push (by the forge's event header).
    fn is_push(self, headers: &HeaderMap) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self {
            Forge::Github => header("x-github-event") == Some("push"),
            Forge::Gitea => header("x-gitea-event") == Some("push"),
            Forge::Gitlab => header("x-gitlab-event") == Some("Push Hook"),
        }
    }
}

/// How a delivery was answered (the metric's label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Delivery {
    /// A push to the watched branch: the engine was woken.
    Refreshed,
    /// Verified, but not a push to the watched repository and branch.
    Ignored,
    /// Bad or missing signature or token, or no secret configured.
    Unauthorized,
    /// Verified, but the body is not the JSON a push sends.
    Malformed,
}

/// The parts of a push payload that matter here (GitHub and Gitea send `repository`,
/// GitLab `project`).
#[derive(serde::Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    reference: String,
    repository: Option<Repository>,
    project: Option<Project>,
}

#[derive(serde::Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(serde::Deserialize)]
struct Project {
    path_with_namespace: String,
}

/// `POST /hooks/{forge}`.
pub async fn receive(
    State(app): State<Arc<App>>,
    Path(forge): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(forge) = Forge::parse(&forge) else {
        return (
            StatusCode::NOT_FOUND,
            "no such webhook; github, gitea or gitlab\n",
        )
            .into_response();
    };
    let (result, status, message) = answer(&app, forge, &headers, &body);
    app.metrics.observe_delivery(forge, result);
    tracing::info!(?forge, ?result, "webhook delivery");
    (status, message).into_response()
}

fn answer(
    app: &App,
    forge: Forge,
    headers: &HeaderMap,
    body: &[u8],
) -> (Delivery, StatusCode, &'static str) {
    let verified = app
        .webhook_secret
        .as_ref()
        .is_some_and(|secret| forge.verify(secret, headers, body));
    if !verified {
        return (
            Delivery::Unauthorized,
            StatusCode::UNAUTHORIZED,
            "signature missing or wrong\n",
        );
    }
    if !forge.is_push(headers) {
        return (
            Delivery::Ignored,
            StatusCode::ACCEPTED,
            "ignored: not a push\n",
        );
    }
    let Ok(push) = serde_json::from_slice::<Push>(body) else {
        return (
            Delivery::Malformed,
            StatusCode::BAD_REQUEST,
            "not a push payload\n",
        );
    };
    let repository = push
        .repository
        .map(|r| r.full_name)
        .or(push.project.map(|p| p.path_with_namespace));
    let watched_branch = format!("refs/heads/{}", app.watched.branch);
    let ours = repository.is_some_and(|name| same_repository(&app.watched, &name));
    if !ours || push.reference != watched_branch {
        return (
            Delivery::Ignored,
            StatusCode::ACCEPTED,
            "ignored: not the watched repository and branch\n",
        );
    }
    // A full channel already holds a wake-up: the engine reads the newest head anyway.
    let _ = app.trigger.try_send(());
    (
        Delivery::Refreshed,
        StatusCode::ACCEPTED,
        "refreshing the company now\n",
    )
}

/// Whether the forge's `owner/name` is the watched source: the last two segments of its
/// URL or path (`https://host/owner/name.git`, `git@host:owner/name`, `/srv/owner/name`),
/// compared without case.
pub fn same_repository(watched: &Watched, full_name: &str) -> bool {
    let label = watched.label.trim_end_matches('/');
    let label = label.strip_suffix(".git").unwrap_or(label);
    let segments: Vec<&str> = label
        .rsplit(['/', ':'])
        .filter(|s| !s.is_empty())
        .take(2)
        .collect();
    let [name, owner] = segments[..] else {
        return false;
    };
    let theirs = full_name.trim_end_matches('/');
    let theirs = theirs.strip_suffix(".git").unwrap_or(theirs);
    let Some((their_owner, their_name)) = theirs.rsplit_once('/') else {
        return false;
    };
    let their_owner = their_owner.rsplit('/').next().unwrap_or(their_owner);
    owner.eq_ignore_ascii_case(their_owner) && name.eq_ignore_ascii_case(their_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(label: &str) -> Watched {
        Watched {
            label: label.into(),
            branch: "main".into(),
            repository: std::path::PathBuf::from("/x"),
            subpath: String::new(),
            remote: true,
        }
    }

    #[test]
    fn repositories_match_by_owner_and_name() {
        for label in [
            "https://github.com/Acme/Company.git",
            "git@github.com:acme/company.git",
            "ssh://git@host/acme/company/",
            "/srv/git/acme/company",
        ] {
            assert!(same_repository(&watched(label), "acme/company"), "{label}");
        }
        assert!(same_repository(
            &watched("https://gitlab.example/group/acme/company"),
            "group/acme/company"
        ));
        assert!(!same_repository(
            &watched("https://github.com/acme/other"),
            "acme/company"
        ));
        assert!(!same_repository(&watched("company"), "acme/company"));
    }

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        let secret = WebhookSecret::new("It's a Secret to Everybody");
        // GitHub's documented example.
        let good = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(secret.signed(b"Hello, World!", good));
        assert!(!secret.signed(b"Hello, World?", good));
        assert!(!secret.signed(b"Hello, World!", "zz"));
        assert!(secret.is("It's a Secret to Everybody"));
        assert!(!secret.is("It's a Secret"));
    }
}
