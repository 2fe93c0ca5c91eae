//! Webhooks from GitHub, GitLab, Gitea/Forgejo and a generic JSON body: verifying the
//! signature and turning a delivery into a trigger (or a reason to ignore it). Pure: no
//! I/O, so each forge's real payloads are tested directly.

use axum::http::HeaderMap;
use ferry_plan::EventKind;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Github,
    Gitlab,
    Gitea,
    Generic,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Provider> {
        match s {
            "github" => Some(Provider::Github),
            "gitlab" => Some(Provider::Gitlab),
            "gitea" | "forgejo" => Some(Provider::Gitea),
            "generic" => Some(Provider::Generic),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Generic => "generic",
        }
    }
}

/// What a delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Trigger(Hook),
    /// Handled, nothing to do (a ping, a deleted branch, `[skip ci]`, an event Ferry
    /// does not handle); the reason is returned to the forge.
    Ignore(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hook {
    pub event: EventKind,
    /// The full ref: `refs/heads/main`, `refs/tags/v1`; for a pull request the forge's
    /// own ref of it (`refs/pull/4/head`, `refs/merge-requests/4/head`), never a branch
    /// name: a fork's branch called `main` is not `main`.
    pub git_ref: String,
    pub sha: String,
    /// The forge account that caused the delivery (`sender.login`, `user_username`),
    /// when the payload names one.
    pub sender: Option<String>,
    /// A pull request's facts.
    pub pull: Option<ferry_store::PullRequest>,
}

const ZERO: &str = "0000000000000000000000000000000000000000";

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The forge's id of this delivery, for ignoring redeliveries. GitLab's "Resend
/// request" keeps `Idempotency-Key` and sends a new `X-Gitlab-Event-UUID` (which webhook
/// chains also share), so the key comes first. Gitea's and Forgejo's "Redeliver" sends
/// the stored payload again, byte for byte, under a new `X-Gitea-Delivery`: their
/// deliveries are known by the payload's digest instead (a new push always differs, if
/// only by the repository's `updated_at` in it).
pub fn delivery_id(p: Provider, h: &HeaderMap, body: &[u8]) -> Option<String> {
    use sha2::Digest as _;
    let names: &[&str] = match p {
        Provider::Github => &["x-github-delivery"],
        Provider::Gitlab => &["idempotency-key", "x-gitlab-event-uuid"],
        Provider::Gitea => return Some(format!("sha256:{}", hex::encode(Sha256::digest(body)))),
        Provider::Generic => &["x-ferry-delivery"],
    };
    names
        .iter()
        .filter_map(|n| header(h, n))
        .find(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_string)
}

/// The JSON of a delivery: the body, or for a form-encoded one (GitHub's default content
/// type, and Gitea's `form` option) its `payload` field.
fn payload_json(h: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, String> {
    let form = header(h, "content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Ok(body.to_vec());
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned().into_bytes())
        .ok_or_else(|| "the form-encoded body has no `payload` field".to_string())
}

fn hmac_ok(secret: &str, body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Checks the delivery's signature (or token) against the repository's secret, in
/// constant time.
pub fn verify(p: Provider, h: &HeaderMap, body: &[u8], secret: &str) -> Result<(), &'static str> {
    let ok = match p {
        Provider::Github => header(h, "x-hub-signature-256")
            .and_then(|s| s.strip_prefix("sha256="))
            .is_some_and(|sig| hmac_ok(secret, body, sig)),
        Provider::Gitea => header(h, "x-gitea-signature")
            .or(header(h, "x-forgejo-signature"))
            .is_some_and(|sig| hmac_ok(secret, body, sig)),
        Provider::Gitlab => header(h, "x-gitlab-token")
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(secret.as_bytes()))),
        Provider::Generic => header(h, "x-ferry-signature")
            .and_then(|s| s.strip_prefix("sha256="))
            .is_some_and(|sig| hmac_ok(secret, body, sig)),
    };
    if ok {
        Ok(())
    } else {
        Err("missing or invalid signature")
    }
}

fn skip_ci(message: &str) -> bool {
    message.contains("[skip ci]") || message.contains("[ci skip]")
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// A push of a branch or a tag, shared by the forges that send GitHub-like pushes.
fn push(
    git_ref: &str,
    after: &str,
    deleted: bool,
    message: Option<&str>,
) -> Result<Outcome, String> {
    if deleted || after == ZERO {
        return Ok(Outcome::Ignore(format!("{git_ref} was deleted")));
    }
    if message.is_some_and(skip_ci) {
        return Ok(Outcome::Ignore("[skip ci] in the commit message".into()));
    }
    let event = if git_ref.starts_with("refs/tags/") {
        EventKind::Tag
    } else if git_ref.starts_with("refs/heads/") {
        EventKind::Push
    } else {
        return Ok(Outcome::Ignore(format!(
            "{git_ref} is neither a branch nor a tag"
        )));
    };
    Ok(Outcome::Trigger(Hook {
        event,
        git_ref: git_ref.to_string(),
        sha: after.to_string(),
        ..Hook::default()
    }))
}

fn with_sender(outcome: Outcome, sender: Option<&str>) -> Outcome {
    match outcome {
        Outcome::Trigger(hook) => Outcome::Trigger(Hook {
            sender: sender.map(str::to_string),
            ..hook
        }),
        other => other,
    }
}

fn pull_request(
    action: &str,
    pull: ferry_store::PullRequest,
    sha: &str,
    message: Option<&str>,
) -> Outcome {
    if !matches!(
        action,
        "opened" | "synchronize" | "synchronized" | "reopened" | "open" | "update" | "reopen"
    ) {
        return Outcome::Ignore(format!("pull request action `{action}` starts no run"));
    }
    if message.is_some_and(skip_ci) {
        return Outcome::Ignore("[skip ci] in the commit message".into());
    }
    let git_ref = pull.git_ref.clone();
    Outcome::Trigger(Hook {
        event: EventKind::PullRequest,
        git_ref,
        sha: sha.to_string(),
        sender: pull.author.clone(),
        pull: Some(pull),
    })
}

/// Whether two repository ids from a payload name different repositories: a head
/// repository the payload does not name (a deleted fork) counts as another.
fn other_repository(head: Option<&Value>, base: Option<&Value>) -> bool {
    let id = |v: Option<&Value>| v.filter(|v| !v.is_null()).map(Value::to_string);
    match (id(head), id(base)) {
        (Some(h), Some(b)) => h != b,
        _ => true,
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    Some(cur)
}

/// The forge's name of the delivery's event (`push`, `Push Hook`, …).
pub fn event_name(p: Provider, h: &HeaderMap) -> &str {
    match p {
        Provider::Github => header(h, "x-github-event").unwrap_or(""),
        Provider::Gitlab => header(h, "x-gitlab-event").unwrap_or(""),
        Provider::Gitea => header(h, "x-gitea-event")
            .or(header(h, "x-forgejo-event"))
            .unwrap_or(""),
        Provider::Generic => "generic",
    }
}

/// Reads a delivery. `Err` only for a body that is not what the forge sends (400),
/// which includes a ref name git would refuse (`git check-ref-format`) and a commit
/// that is not a full hexadecimal object name: neither ever reaches git or a path.
pub fn parse(p: Provider, h: &HeaderMap, body: &[u8]) -> Result<Outcome, String> {
    let outcome = read(p, h, body)?;
    if let Outcome::Trigger(hook) = &outcome {
        ferry_source::git::check_ref_name(&hook.git_ref)?;
        let object_id =
            |s: &str| matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !(hook.sha.is_empty() || object_id(&hook.sha)) {
            return Err(format!(
                "`{}` is not a commit id (40 or 64 hexadecimal digits)",
                hook.sha.escape_debug()
            ));
        }
    }
    Ok(outcome)
}

fn read(p: Provider, h: &HeaderMap, body: &[u8]) -> Result<Outcome, String> {
    let event = event_name(p, h);
    if p == Provider::Github && event == "ping" {
        return Ok(Outcome::Ignore("pong".into()));
    }
    let handled = match p {
        Provider::Github | Provider::Gitea => matches!(event, "push" | "pull_request"),
        Provider::Gitlab => matches!(event, "Push Hook" | "Tag Push Hook" | "Merge Request Hook"),
        Provider::Generic => true,
    };
    if !handled {
        return Ok(Outcome::Ignore(format!("event `{event}` is not handled")));
    }
    let json = payload_json(h, body)?;
    let v: Value =
        serde_json::from_slice(&json).map_err(|e| format!("the body is not JSON: {e}"))?;
    let missing = |what: &str| format!("the {event} payload has no `{what}`");
    match (p, event) {
        (Provider::Github | Provider::Gitea, "push") => {
            let git_ref = str_at(&v, &["ref"]).ok_or_else(|| missing("ref"))?;
            let after = str_at(&v, &["after"]).ok_or_else(|| missing("after"))?;
            let deleted = v.get("deleted").and_then(Value::as_bool).unwrap_or(false);
            let message = str_at(&v, &["head_commit", "message"]).or_else(|| {
                v.get("commits")
                    .and_then(Value::as_array)
                    .and_then(|c| c.last())
                    .and_then(|c| str_at(c, &["message"]))
            });
            push(git_ref, after, deleted, message).map(|o| {
                with_sender(
                    o,
                    str_at(&v, &["sender", "login"]).or(str_at(&v, &["pusher", "name"])),
                )
            })
        }
        (Provider::Github | Provider::Gitea, _) => {
            let action = str_at(&v, &["action"]).ok_or_else(|| missing("action"))?;
            let pr = v
                .get("pull_request")
                .ok_or_else(|| missing("pull_request"))?;
            let head =
                str_at(pr, &["head", "ref"]).ok_or_else(|| missing("pull_request.head.ref"))?;
            let sha =
                str_at(pr, &["head", "sha"]).ok_or_else(|| missing("pull_request.head.sha"))?;
            let number = at(pr, &["number"])
                .or_else(|| v.get("number"))
                .and_then(Value::as_u64)
                .ok_or_else(|| missing("pull_request.number"))?;
            // Where it comes from, by the forge's repository ids (Gitea also sends
            // `head.repo_id`): a name proves nothing.
            let fork = match (
                at(pr, &["head", "repo", "id"]),
                at(pr, &["base", "repo", "id"]),
            ) {
                (Some(h), Some(b)) => other_repository(Some(h), Some(b)),
                _ => other_repository(at(pr, &["head", "repo_id"]), at(pr, &["base", "repo_id"])),
            }
                // Gitea's AGit flow: anyone who can read may push `refs/for/…`, and its
                // pull requests name the base repository as their head.
                || at(pr, &["flow"]).and_then(Value::as_u64).is_some_and(|f| f != 0)
                || head.starts_with("refs/for/");
            let pull = ferry_store::PullRequest {
                number,
                git_ref: format!("refs/pull/{number}/head"),
                head: head.to_string(),
                base: str_at(pr, &["base", "ref"]).unwrap_or_default().to_string(),
                fork,
                from: str_at(pr, &["head", "repo", "full_name"]).map(str::to_string),
                author: str_at(&v, &["sender", "login"])
                    .or(str_at(pr, &["user", "login"]))
                    .map(str::to_string),
            };
            Ok(pull_request(action, pull, sha, None))
        }
        (Provider::Gitlab, "Merge Request Hook") => {
            let attrs = v
                .get("object_attributes")
                .ok_or_else(|| missing("object_attributes"))?;
            let action = str_at(attrs, &["action"]).unwrap_or("");
            // An `update` without `oldrev` changed only the description or labels.
            if action == "update" && attrs.get("oldrev").is_none() {
                return Ok(Outcome::Ignore(
                    "the merge request changed, not its commits".into(),
                ));
            }
            let head = str_at(attrs, &["source_branch"])
                .ok_or_else(|| missing("object_attributes.source_branch"))?;
            let sha = str_at(attrs, &["last_commit", "id"])
                .ok_or_else(|| missing("object_attributes.last_commit.id"))?;
            let number = at(attrs, &["iid"])
                .and_then(Value::as_u64)
                .ok_or_else(|| missing("object_attributes.iid"))?;
            let pull = ferry_store::PullRequest {
                number,
                git_ref: format!("refs/merge-requests/{number}/head"),
                head: head.to_string(),
                base: str_at(attrs, &["target_branch"])
                    .unwrap_or_default()
                    .to_string(),
                fork: other_repository(
                    attrs.get("source_project_id"),
                    attrs.get("target_project_id"),
                ),
                from: str_at(attrs, &["source", "path_with_namespace"]).map(str::to_string),
                author: str_at(&v, &["user", "username"]).map(str::to_string),
            };
            Ok(pull_request(
                action,
                pull,
                sha,
                str_at(attrs, &["last_commit", "message"]),
            ))
        }
        (Provider::Gitlab, _) => {
            let git_ref = str_at(&v, &["ref"]).ok_or_else(|| missing("ref"))?;
            let after = str_at(&v, &["after"]).ok_or_else(|| missing("after"))?;
            let message = v
                .get("commits")
                .and_then(Value::as_array)
                .and_then(|c| c.last())
                .and_then(|c| str_at(c, &["message"]));
            push(git_ref, after, false, message)
                .map(|o| with_sender(o, str_at(&v, &["user_username"])))
        }
        (Provider::Generic, _) => {
            let git_ref = str_at(&v, &["ref"]).ok_or_else(|| missing("ref"))?;
            let full = if git_ref.starts_with("refs/") {
                git_ref.to_string()
            } else {
                format!("refs/heads/{git_ref}")
            };
            let sha = str_at(&v, &["sha"]).unwrap_or("");
            if !(full.starts_with("refs/heads/") || full.starts_with("refs/tags/")) {
                return Ok(Outcome::Ignore(format!(
                    "{full} is neither a branch nor a tag"
                )));
            }
            if sha.is_empty() {
                // No sha: run the ref's current head.
                return Ok(Outcome::Trigger(Hook {
                    event: if full.starts_with("refs/tags/") {
                        EventKind::Tag
                    } else {
                        EventKind::Push
                    },
                    git_ref: full,
                    sha: String::new(),
                    ..Hook::default()
                }));
            }
            push(&full, sha, false, str_at(&v, &["message"]))
        }
    }
}
