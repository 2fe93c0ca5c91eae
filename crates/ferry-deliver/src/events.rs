//! What the deliverer tells whoever watches: every change of a deployment's state and
//! every approval or rejection, as it happens (the server streams them to clients, as
//! it streams runs).

use ferry_store::{Approval, Deployment, HealthChange};
use serde::{Deserialize, Serialize};

/// One change, of one repository's delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeliveryEvent {
    /// A deployment was created or changed state (the deployment as it is now).
    Deployment { deployment: Deployment },
    /// Someone approved or rejected a deployment.
    Approval {
        repository_id: String,
        approval: Approval,
    },
    /// A live environment's health changed (see [`crate::health`]).
    Health { change: HealthChange },
}

impl DeliveryEvent {
    pub fn repository_id(&self) -> &str {
        match self {
            DeliveryEvent::Deployment { deployment } => &deployment.repository_id,
            DeliveryEvent::Approval { repository_id, .. } => repository_id,
            DeliveryEvent::Health { change } => &change.repository_id,
        }
    }
}
