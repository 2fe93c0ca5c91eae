//! Notifications: what happened (a run failed or was fixed, a deployment waits for
//! approval, went live, failed or was rolled back, an environment went down or
//! recovered), told to the channels of the repository's `notify:` (read from its
//! default branch): a JSON webhook signed with HMAC-SHA256, a Slack-compatible incoming
//! webhook, or e-mail over the server's SMTP relay.
//!
//! When an event happens, one notification per channel that wants it is written to
//! the store ([`enqueue`]); the notifier ([`run`]) sends each one due, records every
//! attempt, and tries a failed one again after 1 s, 2 s, 4 s … (at most 10 minutes
//! apart) until [`MAX_ATTEMPTS`]. A notification is sent at least once: one whose
//! sender stopped mid-way is taken again after [`LEASE`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_config::delivery::{ChannelKind, NotifyEvent};
use ferry_store::{AttemptOutcome, NewNotification, Notification, now_ms};
use hmac::{Hmac, Mac};
use lettre::AsyncTransport as _;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// Attempts before a notification is given up.
pub const MAX_ATTEMPTS: i64 = 10;
/// How long a sender holds a notification it took.
pub const LEASE: Duration = Duration::from_secs(60);
/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Notifications sent at once.
const CONCURRENCY: usize = 8;

/// The delay before attempt `n + 1`, after `n` failed ones.
pub fn backoff(failed: i64) -> Duration {
    let exp = failed.clamp(1, 16) as u32 - 1;
    Duration::from_secs((1u64 << exp).min(600))
}

/// Where notifications go out from: links back, the SMTP relay, trusted certificates.
#[derive(Clone, Default, educe::Educe)]
#[educe(Debug)]
pub struct NotifyConfig {
    /// The server's address as people reach it (`https://ferry.example.com`), for links.
    pub public_url: Option<String>,
    /// `smtp://[user:password@]host[:port]` (plain, or STARTTLS with `?tls=starttls`),
    /// `smtps://…` (TLS from the start).
    #[educe(Debug(ignore))]
    pub smtp_url: Option<String>,
    /// The sender of e-mails.
    pub smtp_from: Option<String>,
    /// Extra trusted certificates (PEM), beside the system's.
    #[educe(Debug(ignore))]
    pub ca_pem: Option<Vec<u8>>,
}

/// Sends notifications: HTTP and SMTP clients, and what wakes the sender.
#[derive(Clone, educe::Educe)]
#[educe(Debug)]
pub struct Notifier {
    pub config: NotifyConfig,
    #[educe(Debug(ignore))]
    http: reqwest::Client,
    #[educe(Debug(ignore))]
    smtp: Option<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>>,
    #[educe(Debug(ignore))]
    pub(crate) wake: Arc<tokio::sync::Notify>,
}

impl Notifier {
    /// A notifier for `config`, or why it cannot be made (an SMTP URL or a
    /// certificate that does not read).
    pub fn new(config: NotifyConfig) -> Result<Notifier, String> {
        let mut http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("Ferry/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| e.to_string())?;
        let smtp = match &config.smtp_url {
            Some(url) => Some(smtp_transport(url, config.ca_pem.as_deref())?),
            None => None,
        };
        if smtp.is_some() && config.smtp_from.is_none() {
            return Err("--smtp-url needs --smtp-from (the sender of e-mails)".into());
        }
        Ok(Notifier {
            config,
            http,
            smtp,
            wake: Arc::default(),
        })
    }

    /// The server's public address (`--public-url`), if given.
    pub(crate) fn public_url(&self) -> Option<&str> {
        self.config.public_url.as_deref()
    }

    /// A link to `path` on the server (`/api/v1/runs/ID`), when its public address is
    /// known.
    pub(crate) fn link(&self, path: &str) -> Option<String> {
        self.config
            .public_url
            .as_deref()
            .map(|base| format!("{}{path}", base.trim_end_matches('/')))
    }
}

/// The SMTP relay `url` names, trusting the system's roots and `ca_pem`.
fn smtp_transport(
    url: &str,
    ca_pem: Option<&[u8]>,
) -> Result<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>, String> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
    let bad = |why: &str| format!("--smtp-url: {why}");
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let host = parsed.host_str().ok_or_else(|| bad("no host"))?.to_string();
    let tls_params = || -> Result<TlsParameters, String> {
        // The system's roots (lettre's default store, with `rustls-native-certs`).
        let mut b =
            TlsParameters::builder(host.clone()).certificate_store(CertificateStore::Default);
        if let Some(pem) = ca_pem {
            b = b
                .add_root_certificate(Certificate::from_pem(pem).map_err(|e| bad(&e.to_string()))?);
        }
        b.build_rustls().map_err(|e| bad(&e.to_string()))
    };
    let starttls = parsed
        .query_pairs()
        .any(|(k, v)| k == "tls" && v == "starttls");
    let (tls, port) = match parsed.scheme() {
        "smtp" if starttls => (Tls::Required(tls_params()?), 587),
        "smtp" => (Tls::None, 25),
        "smtps" => (Tls::Wrapper(tls_params()?), 465),
        other => return Err(bad(&format!("`{other}:` is not smtp: or smtps:"))),
    };
    let mut builder =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(&host)
            .port(parsed.port().unwrap_or(port))
            .tls(tls)
            .timeout(Some(TIMEOUT));
    if !parsed.username().is_empty() {
        let user = percent_decode(parsed.username());
        let password = percent_decode(parsed.password().unwrap_or(""));
        builder = builder.credentials(Credentials::new(user, password));
    }
    Ok(builder.build())
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Something that happened, to be told.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub kind: NotifyEvent,
    /// The environment of a deployment or health event.
    pub environment: Option<String>,
    /// One line saying it (a Slack message, an e-mail's subject).
    pub summary: String,
    /// Where to look (a link to the server), if its address is known.
    pub url: Option<String>,
    /// The facts, as JSON (the webhook's body carries them).
    pub facts: Value,
}

/// The channels of the repository's `notify:` that want `event` get a notification
/// each (written to the store; the notifier sends them).
pub(crate) async fn enqueue(state: &AppState, repository_id: &str, event: Event) {
    let rules = match state.deliverer.rules(repository_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("notifications of {repository_id}: cannot read `notify:`: {e}");
            return;
        }
    };
    let channels: Vec<_> = rules
        .notify
        .iter()
        .filter(|c| c.wants(event.kind, event.environment.as_deref()))
        .collect();
    if channels.is_empty() {
        return;
    }
    let repository = state
        .store
        .repository(repository_id)
        .await
        .map(|r| r.name)
        .unwrap_or_else(|_| repository_id.to_string());
    let payload = json!({
        "event": event.kind.as_str(),
        "repository": repository,
        "environment": event.environment,
        "summary": event.summary,
        "url": event.url,
        "at": now_ms(),
        "facts": event.facts,
    })
    .to_string();
    let all: Vec<NewNotification> = channels
        .iter()
        .map(|c| NewNotification {
            repository_id: repository_id.to_string(),
            event: event.kind.as_str().to_string(),
            channel: serde_json::to_string(&c.to).unwrap_or_default(),
            target: target(&c.to),
            payload: payload.clone(),
        })
        .collect();
    match state.store.enqueue_notifications(&all).await {
        Ok(_) => state.notifier.wake.notify_one(),
        Err(e) => tracing::error!("cannot write notifications of {repository}: {e}"),
    }
}

/// What a channel is, for people (never a secret's value).
fn target(to: &ChannelKind) -> String {
    match to {
        ChannelKind::Webhook { url, .. } => {
            // The URL without what may hold a key: its user and password, its query.
            let shown = match reqwest::Url::parse(url) {
                Ok(mut u) => {
                    let _ = u.set_username("");
                    let _ = u.set_password(None);
                    u.set_query(None);
                    u.set_fragment(None);
                    u.to_string()
                }
                Err(_) => "(an unreadable URL)".to_string(),
            };
            format!("webhook {shown}")
        }
        ChannelKind::Slack { secret } => format!("slack (secret {secret})"),
        ChannelKind::Email { to } => format!("email {}", to.join(", ")),
    }
}

/// Sends due notifications until `stop`.
pub(crate) async fn run(state: AppState, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let now = now_ms();
        match state.store.due_notifications(now, 64).await {
            Ok(due) => {
                for n in due {
                    let until = now + LEASE.as_millis() as i64;
                    if !matches!(state.store.claim_notification(&n, until).await, Ok(true)) {
                        continue; // another sender has it
                    }
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let state = state.clone();
                    tasks.spawn(async move {
                        let _slot = slot;
                        attempt(&state, n).await;
                    });
                }
            }
            Err(e) => tracing::warn!("notifications: {e}"),
        }
        let next = state.store.next_notification_at().await.ok().flatten();
        let wait = next.map_or(LEASE, |at| {
            Duration::from_millis((at - now_ms()).clamp(0, LEASE.as_millis() as i64) as u64)
        });
        tokio::select! {
            _ = state.notifier.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => break,
        }
    }
    // What is being sent now is given a moment; what is cut short is sent again later.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// One attempt at a claimed notification, recorded with what follows from it.
async fn attempt(state: &AppState, n: Notification) {
    let began = Instant::now();
    let result = send(state, &n).await;
    let ms = began.elapsed().as_millis() as i64;
    let attempts = n.attempts + 1;
    let (ok, detail, outcome) = match result {
        Ok(detail) => (true, detail, AttemptOutcome::Delivered),
        Err(Failure { detail, permanent }) => {
            let outcome = if permanent || attempts >= MAX_ATTEMPTS {
                AttemptOutcome::Failed
            } else {
                AttemptOutcome::RetryAt(now_ms() + backoff(attempts).as_millis() as i64)
            };
            (false, detail, outcome)
        }
    };
    tracing::info!(
        notification = %n.id,
        event = %n.event,
        target = %n.target,
        attempt = attempts,
        ok,
        detail = %detail,
        ms,
        "notification attempt"
    );
    if let Err(e) = state
        .store
        .record_attempt(&n.id, ok, &detail, ms, outcome)
        .await
    {
        tracing::error!("cannot record notification {}: {e}", n.id);
    }
    // The sender sleeps until the next one due, which may be this one's retry now.
    state.notifier.wake.notify_one();
}

/// Why an attempt failed, and whether trying again can help.
struct Failure {
    detail: String,
    permanent: bool,
}

impl Failure {
    fn again(detail: impl Into<String>) -> Self {
        Failure {
            detail: detail.into(),
            permanent: false,
        }
    }

    fn never(detail: impl Into<String>) -> Self {
        Failure {
            detail: detail.into(),
            permanent: true,
        }
    }
}

/// Sends one notification: what the channel answered, or why it failed.
async fn send(state: &AppState, n: &Notification) -> Result<String, Failure> {
    let to: Outbound = serde_json::from_str(&n.channel)
        .map_err(|e| Failure::never(format!("unreadable channel: {e}")))?;
    let to = match to {
        Outbound::Channel(kind) => kind,
        Outbound::Status { commit_status } => return send_status(state, n, &commit_status).await,
    };
    let payload: Value = serde_json::from_str(&n.payload)
        .map_err(|e| Failure::never(format!("unreadable payload: {e}")))?;
    let summary = payload["summary"].as_str().unwrap_or_default().to_string();
    let url = payload["url"].as_str().map(str::to_string);
    let notifier = &state.notifier;
    match to {
        ChannelKind::Webhook { url: hook, secret } => {
            let body = n.payload.clone().into_bytes();
            let mut req = notifier
                .http
                .post(&hook)
                .header("content-type", "application/json")
                .header("x-ferry-event", &n.event)
                .header("x-ferry-delivery", &n.id);
            if let Some(name) = secret {
                let key = secret_value(state, &n.repository_id, &name).await?;
                let mut mac = Hmac::<Sha256>::new_from_slice(&key)
                    .map_err(|e| Failure::never(e.to_string()))?;
                mac.update(&body);
                let sig = hex::encode(mac.finalize().into_bytes());
                req = req.header("x-ferry-signature-256", format!("sha256={sig}"));
            }
            http_answer(req.body(body).send().await)
        }
        ChannelKind::Slack { secret } => {
            let hook = secret_value(state, &n.repository_id, &secret).await?;
            let hook = String::from_utf8(hook)
                .map_err(|_| Failure::never(format!("secret {secret} is not a URL")))?;
            let text = match &url {
                Some(link) => format!("{summary} <{link}|details>"),
                None => summary.clone(),
            };
            let req = notifier
                .http
                .post(hook.trim())
                .json(&json!({ "text": text }));
            http_answer(req.send().await)
        }
        ChannelKind::Email { to } => {
            let (Some(smtp), Some(from)) = (&notifier.smtp, &notifier.config.smtp_from) else {
                return Err(Failure::never(
                    "the server has no SMTP relay (ferry serve --smtp-url, --smtp-from)",
                ));
            };
            let mut message = lettre::Message::builder()
                .from(
                    from.parse()
                        .map_err(|e| Failure::never(format!("--smtp-from: {e}")))?,
                )
                .subject(format!("[ferry] {summary}"))
                .header(lettre::message::header::ContentType::TEXT_PLAIN);
            for address in &to {
                message = message.to(address
                    .parse()
                    .map_err(|e| Failure::never(format!("{address}: {e}")))?);
            }
            let message = message
                .body(email_body(&payload))
                .map_err(|e| Failure::never(e.to_string()))?;
            match smtp.send(message).await {
                Ok(resp) => Ok(format!(
                    "{} {}",
                    resp.code(),
                    resp.message().collect::<Vec<_>>().join(" ")
                )),
                Err(e) if e.is_permanent() => Err(Failure::never(e.to_string())),
                Err(e) => Err(Failure::again(e.to_string())),
            }
        }
    }
}

/// What a stored notification goes to: a channel of `notify:`, or a commit status.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Outbound {
    Status {
        commit_status: crate::status::StatusUpdate,
    },
    Channel(ChannelKind),
}

/// Sets a commit status on the forge, unless a newer one of the same commit and
/// context was written meanwhile.
async fn send_status(
    state: &AppState,
    n: &Notification,
    update: &crate::status::StatusUpdate,
) -> Result<String, Failure> {
    if state
        .store
        .newer_notification_exists(n)
        .await
        .map_err(|e| Failure::again(e.to_string()))?
    {
        return Ok("superseded by a newer status: not sent".into());
    }
    let token = state
        .key
        .open(
            &update.token,
            &crate::status::token_context(&n.repository_id),
        )
        .map_err(|e| Failure::never(format!("the forge token does not open: {e}")))?;
    let token =
        String::from_utf8(token).map_err(|_| Failure::never("the forge token is not text"))?;
    let (url, headers, body) = crate::status::request(update, &token);
    let mut req = state.notifier.http.post(&url).json(&body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    http_answer(req.send().await)
}

/// The plain text of an e-mail: the summary, the link, the facts.
fn email_body(payload: &Value) -> String {
    let mut out = String::new();
    out.push_str(payload["summary"].as_str().unwrap_or_default());
    out.push_str("\n\n");
    if let Some(link) = payload["url"].as_str() {
        out.push_str(link);
        out.push_str("\n\n");
    }
    if let Some(facts) = payload["facts"].as_object() {
        for (k, v) in facts {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{k}: {v}\n"));
        }
    }
    out.push_str("\n-- \nFerry\n");
    out
}

/// A repository secret's value (its name is the channel's).
async fn secret_value(
    state: &AppState,
    repository_id: &str,
    name: &str,
) -> Result<Vec<u8>, Failure> {
    let secrets = state
        .store
        .open_secrets(&state.key, repository_id, "")
        .await
        .map_err(|e| Failure::again(format!("cannot read secrets: {e}")))?;
    secrets
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .ok_or_else(|| Failure::never(format!("the repository has no secret {name}")))
}

/// A 2xx answer is delivered; anything else is tried again.
fn http_answer(answer: Result<reqwest::Response, reqwest::Error>) -> Result<String, Failure> {
    match answer {
        Ok(resp) if resp.status().is_success() => Ok(format!("HTTP {}", resp.status().as_u16())),
        Ok(resp) => Err(Failure::again(format!("HTTP {}", resp.status().as_u16()))),
        Err(e) => {
            // The URL may hold a key (a Slack webhook's): say what failed without it.
            let e = e.without_url();
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            Err(Failure::again(why))
        }
    }
}

/// What a run's end tells, if anything: `run.failed`, or `run.fixed` when the run
/// before it on the same ref had failed.
pub(crate) async fn after_run(state: &AppState, run_id: &str) {
    let Ok(run) = state.store.run_by_id(run_id).await else {
        return;
    };
    let kind = match run.status {
        ferry_store::Status::Failed => NotifyEvent::RunFailed,
        ferry_store::Status::Success => {
            match state
                .store
                .previous_finished_run(&run.repository_id, &run.git_ref, run.number)
                .await
            {
                Ok(Some(before)) if before.status == ferry_store::Status::Failed => {
                    NotifyEvent::RunFixed
                }
                _ => return,
            }
        }
        _ => return,
    };
    let repo = state
        .store
        .repository(&run.repository_id)
        .await
        .map(|r| r.name)
        .unwrap_or_default();
    let failed_jobs: Vec<String> = state
        .store
        .jobs(&run.id)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j.status == ferry_store::Status::Failed)
        .map(|j| j.name)
        .collect();
    let short = &run.commit_sha[..run.commit_sha.len().min(7)];
    let subject = run.message.lines().next().unwrap_or_default();
    let summary = match kind {
        NotifyEvent::RunFailed => format!(
            "{repo}: run #{} failed on {} ({short} \"{subject}\"){}",
            run.number,
            run.git_ref,
            if failed_jobs.is_empty() {
                String::new()
            } else {
                format!(": {}", failed_jobs.join(", "))
            }
        ),
        _ => format!(
            "{repo}: run #{} passed on {} again ({short} \"{subject}\")",
            run.number, run.git_ref
        ),
    };
    let event = Event {
        kind,
        environment: None,
        url: state.notifier.link(&format!("/api/v1/runs/{}", run.id)),
        summary,
        facts: json!({
            "run": run.number,
            "run_id": run.id,
            "ref": run.git_ref,
            "commit": run.commit_sha,
            "author": run.author,
            "status": run.status.as_str(),
            "error": run.error,
            "triggered_by": run.triggered_by,
            "failed_jobs": failed_jobs,
        }),
    };
    enqueue(state, &run.repository_id, event).await;
}

/// What a deployment's change tells, if anything.
pub(crate) async fn after_deployment(state: &AppState, d: &ferry_store::Deployment, repo: &str) {
    use ferry_store::DeploymentStatus as S;
    let kind = match d.status {
        S::AwaitingApproval => NotifyEvent::ApprovalWaiting,
        S::Live => NotifyEvent::DeploymentLive,
        S::Failed => NotifyEvent::DeploymentFailed,
        S::RolledBack => NotifyEvent::DeploymentRolledBack,
        _ => return,
    };
    let label = format!("{}#{}", d.environment, d.number);
    let release = state
        .store
        .release(&d.repository_id, &d.release_id)
        .await
        .map(|r| r.name)
        .unwrap_or_else(|_| d.release_id.clone());
    let reason = d.reason.as_deref().unwrap_or("");
    let mut facts = json!({
        "deployment": label,
        "release": release,
        "kind": d.kind.as_str(),
        "status": d.status.as_str(),
        "reason": d.reason,
        "requested_by": d.requested_by,
    });
    let summary = match kind {
        NotifyEvent::ApprovalWaiting => {
            let changes = match state.store.release(&d.repository_id, &d.release_id).await {
                Ok(candidate) => ferry_deliver::diff::release_diff(
                    &state.store,
                    &state.mirror_path(&d.repository_id),
                    d,
                    &candidate,
                )
                .await
                .ok(),
                Err(_) => None,
            };
            let preview = changes.as_ref().map(|c| c.summary()).unwrap_or_default();
            facts["changes"] = changes
                .as_ref()
                .and_then(|c| serde_json::to_value(c).ok())
                .unwrap_or(Value::Null);
            format!(
                "{repo}: {label} (release {release}) waits for approval{}",
                if preview.is_empty() {
                    String::new()
                } else {
                    format!(": {preview}")
                }
            )
        }
        NotifyEvent::DeploymentLive => format!(
            "{repo}: release {release} is live in {} ({label})",
            d.environment
        ),
        NotifyEvent::DeploymentFailed => {
            format!("{repo}: {label} (release {release}) failed: {reason}")
        }
        _ => format!("{repo}: {label} (release {release}) was rolled back: {reason}"),
    };
    let url = state.notifier.link(&format!(
        "/api/v1/repos/{repo}/deployments/{}.{}",
        d.environment, d.number
    ));
    let event = Event {
        kind,
        environment: Some(d.environment.clone()),
        summary,
        url,
        facts,
    };
    enqueue(state, &d.repository_id, event).await;
}

/// What a health change tells: `environment.unhealthy` when it went down,
/// `environment.recovered` when it is healthy after being down.
pub(crate) async fn after_health(state: &AppState, c: &ferry_store::HealthChange, repo: &str) {
    use ferry_store::Health as H;
    let kind = match (c.from_state, c.to_state) {
        (Some(H::Down), H::Healthy) => NotifyEvent::EnvironmentRecovered,
        (from, H::Down) if from != Some(H::Down) => NotifyEvent::EnvironmentUnhealthy,
        _ => return,
    };
    let env = &c.environment;
    let summary = match kind {
        NotifyEvent::EnvironmentUnhealthy => format!(
            "{repo}: {env} is down: {}",
            c.reason.as_deref().unwrap_or("its checks fail")
        ),
        _ => format!("{repo}: {env} is healthy again"),
    };
    let event = Event {
        kind,
        environment: Some(env.clone()),
        summary,
        url: state
            .notifier
            .link(&format!("/api/v1/repos/{repo}/environments/{env}/health")),
        facts: json!({
            "from": c.from_state.map(H::as_str),
            "to": c.to_state.as_str(),
            "reason": c.reason,
            "deployment_id": c.deployment_id,
        }),
    };
    enqueue(state, &c.repository_id, event).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_ten_minutes() {
        let secs: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
    }

    #[test]
    fn targets_never_show_a_key() {
        let hook = ChannelKind::Webhook {
            url: "https://hooks.example.com/ferry?token=abc".into(),
            secret: Some("S".into()),
        };
        assert_eq!(target(&hook), "webhook https://hooks.example.com/ferry");
        let basic = ChannelKind::Webhook {
            url: "http://user:pa55word@127.0.0.1:8080/hook#x".into(),
            secret: None,
        };
        assert_eq!(target(&basic), "webhook http://127.0.0.1:8080/hook");
        let slack = ChannelKind::Slack {
            secret: "SLACK_URL".into(),
        };
        assert_eq!(target(&slack), "slack (secret SLACK_URL)");
    }

    #[test]
    fn smtp_urls_are_checked() {
        assert!(smtp_transport("smtp://127.0.0.1:2525", None).is_ok());
        assert!(smtp_transport("smtps://mail.example.com", None).is_ok());
        assert!(smtp_transport("smtp://u:p%40ss@mail.example.com?tls=starttls", None).is_ok());
        let err = smtp_transport("http://mail.example.com", None).expect_err("scheme");
        assert_eq!(err, "--smtp-url: `http:` is not smtp: or smtps:");
    }
}
