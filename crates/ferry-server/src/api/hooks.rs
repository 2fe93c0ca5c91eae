//! Webhook ingress: verify, parse, store, answer. Fetching, planning and queueing happen
//! in the background (`intake`), so a forge never waits on git.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use ferry_store::{DeliveryRecord, DeliveryStatus};

use super::delivery::LimitQuery;
use crate::auth::{AsDeveloper, AsViewer, InRepo};
use crate::webhook::{self, Outcome, Provider};
use crate::{ApiError, AppState};

/// The largest webhook body accepted (GitHub's own limit is 25 MB; pushes are far
/// smaller).
pub(crate) const LIMIT: usize = 5 << 20;

/// What every refused delivery is told.
const SIGNATURE: &str = "missing or invalid signature";
/// Checked against when there is no secret, so that the answer takes as long.
const UNGUESSABLE: &str = "no repository has this secret: 7f3c9e1a5b2d4c6e8f0a1b3c5d7e9f1a";

/// Webhook secrets are stored sealed, like every other secret: `sealed:<hex>`.
pub(crate) const SEALED: &str = "sealed:";
const WEBHOOK_CONTEXT: &str = "webhook";

/// What a delivery became: accepted (202, with its intake id) or ignored (200, why).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct HookAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

impl HookAnswer {
    fn ignored(reason: impl Into<String>) -> (StatusCode, Json<Self>) {
        (
            StatusCode::OK,
            Json(Self {
                ignored: Some(reason.into()),
                ..Self::default()
            }),
        )
    }
}

/// The stored form of a webhook secret.
pub(crate) fn seal_with(key: &ferry_store::SecretKey, secret: &str) -> ferry_store::Result<String> {
    Ok(format!(
        "{SEALED}{}",
        key.seal(secret.as_bytes(), WEBHOOK_CONTEXT)?
    ))
}

pub(crate) fn open_secret(s: &AppState, stored: &str) -> Result<String, ApiError> {
    let Some(sealed) = stored.strip_prefix(SEALED) else {
        return Ok(stored.to_string()); // stored before secrets were sealed
    };
    let plain = s.key.open(sealed, WEBHOOK_CONTEXT)?;
    String::from_utf8(plain).map_err(ApiError::internal)
}

/// `POST /api/v1/hooks/{provider}/{repo}`. Events Ferry does not handle get 200.
#[tracing::instrument(level = "debug", name = "webhook", skip_all, fields(provider = %provider))]
pub(crate) async fn receive(
    State(s): State<AppState>,
    Path((provider, repo)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<HookAnswer>), ApiError> {
    let p = Provider::parse(&provider)
        .ok_or_else(|| ApiError::not_found(format!("no webhook provider `{provider}`")))?;
    // An unknown repository, one without a secret and a bad signature all answer the
    // same, after the same work: a delivery tells nobody which repositories exist.
    let refused = || ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, SIGNATURE);
    let repo = match s.store.repository(&repo).await {
        Ok(r) => Some(r),
        Err(ferry_store::Error::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let secret = match repo.as_ref().and_then(|r| r.webhook_secret.as_deref()) {
        Some(stored) if !stored.is_empty() => Some(open_secret(&s, stored)?),
        _ => None,
    };
    let verified = webhook::verify(p, &headers, &body, secret.as_deref().unwrap_or(UNGUESSABLE));
    let (Some(repo), Some(_), Ok(())) = (repo, secret, verified) else {
        s.metrics.delivery(p.as_str(), "refused");
        return Err(refused());
    };
    let outcome = webhook::parse(p, &headers, &body).map_err(|m| {
        s.metrics.delivery(p.as_str(), "bad_payload");
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadPayload, m)
    })?;
    let mut item = ferry_store::Intake {
        id: String::new(),
        repository_id: repo.id.clone(),
        provider: p.as_str().to_string(),
        delivery_id: webhook::delivery_id(p, &headers, &body),
        event: webhook::event_name(p, &headers).to_string(),
        git_ref: String::new(),
        sha: String::new(),
        received_at: ferry_store::now_ms(),
        sender: None,
        pull: None,
        approved_by: None,
    };
    let hook = match outcome {
        Outcome::Ignore(reason) => {
            s.metrics.delivery(p.as_str(), "ignored");
            s.store.log_ignored(&item, &reason).await?;
            return Ok(HookAnswer::ignored(reason));
        }
        Outcome::Trigger(hook) => hook,
    };
    item.event = hook.event.as_str().to_string();
    item.git_ref = hook.git_ref;
    item.sha = hook.sha;
    item.sender = hook.sender;
    item.pull = hook.pull;
    // Stored, then answered: the commit's `on:` may still decline the run in the
    // background.
    match s.store.enqueue_intake(&item).await? {
        Some(id) => {
            s.metrics.delivery(p.as_str(), "accepted");
            s.intake_wake.notify_one();
            Ok((
                StatusCode::ACCEPTED,
                Json(HookAnswer {
                    accepted: Some(id),
                    ..HookAnswer::default()
                }),
            ))
        }
        None => {
            s.metrics.delivery(p.as_str(), "duplicate");
            let reason = format!(
                "delivery {} was already handled",
                item.delivery_id.as_deref().unwrap_or_default()
            );
            s.store.log_ignored(&item, &reason).await?;
            Ok(HookAnswer::ignored(reason))
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryOne {
    pub delivery: DeliveryRecord,
}

/// `GET /api/v1/repos/{repo}/deliveries`: what the repository's webhooks delivered and
/// what became of each, newest first.
pub(crate) async fn deliveries(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(DeliveryList {
        deliveries: s.store.deliveries(&repo.id, limit).await?,
    }))
}

/// `POST …/deliveries/{delivery}/approve`: a developer lets a fork's pull request that
/// awaits approval (`fork_prs: approve`) run, untrusted (202: a redelivery of it is
/// queued, recording who approved).
pub(crate) async fn approve(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsDeveloper>,
    Path((_, id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeliveryOne>), ApiError> {
    let old = s.store.delivery(&repo.id, &id).await?;
    if old.status != DeliveryStatus::AwaitingApproval {
        return Err(ApiError::conflict(
            ErrorCode::InvalidState,
            format!(
                "delivery {id} is {}: only a fork's pull request awaiting approval is approved",
                old.status.as_str()
            ),
        ));
    }
    let by = caller.label();
    let delivery = s.store.approve_delivery(&repo.id, &id, &by).await?;
    s.store
        .audit(
            Some(&repo.id),
            &by,
            "delivery.approve",
            &id,
            Some(&format!("runs as {}", delivery.request.id)),
        )
        .await?;
    s.intake_wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(DeliveryOne { delivery })))
}

/// `POST …/deliveries/{delivery}/redeliver`: queues a failed or declined delivery again
/// (202), as the forges' "Redeliver" would, without the forge.
pub(crate) async fn redeliver(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsDeveloper>,
    Path((_, id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeliveryOne>), ApiError> {
    let old = s.store.delivery(&repo.id, &id).await?;
    if !matches!(
        old.status,
        DeliveryStatus::Failed | DeliveryStatus::Declined
    ) {
        return Err(ApiError::conflict(
            ErrorCode::InvalidState,
            format!(
                "delivery {id} is {}: only a failed or declined delivery is delivered again",
                old.status.as_str()
            ),
        ));
    }
    let delivery = s.store.redeliver(&repo.id, &id).await?;
    s.store
        .audit(
            Some(&repo.id),
            &caller.label(),
            "delivery.redeliver",
            &id,
            Some(&format!("as {}", delivery.request.id)),
        )
        .await?;
    s.intake_wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(DeliveryOne { delivery })))
}
