//! `services:` — what to start next to a job, and what was started. [`crate::ServiceRunner`]
//! does it (the Docker executor: a network of the job's own, services reachable by name,
//! published on 127.0.0.1 for host jobs).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Logins;

/// The services of one job, to start.
#[derive(Debug, Clone, Copy)]
pub struct ServiceJob<'a> {
    /// The job's name (labels, messages).
    pub job: &'a str,
    pub services: &'a [ServiceSpec],
    /// Make their ports reachable from the host (for a job on the host).
    pub publish: bool,
    /// Registry logins for pulling their images.
    pub logins: &'a Logins,
    /// Cancelled: stop waiting and give up.
    pub cancel: &'a CancellationToken,
}

/// One service to start, resolved (no expressions left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The host name the job reaches it by.
    pub name: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub ports: Vec<u16>,
    /// A shell command run inside the service as Docker health check.
    pub health: Option<String>,
    /// How long to wait until it is ready.
    pub wait: Duration,
}

/// What was made for a job's services: kept by the caller and handed back to
/// [`crate::ServiceRunner::stop`], which removes all of it (also after a failed start).
#[derive(Debug, Default)]
pub struct Services {
    /// The job's network (its containers join it).
    pub network: Option<String>,
    /// (service name, container id), in start order.
    pub containers: Vec<(String, String)>,
    /// Variables for the job's steps: `FERRY_SERVICE_<NAME>_HOST` and `_PORT[_<port>]`.
    pub env: Vec<(String, String)>,
}

/// The variable prefix of a service: `FERRY_SERVICE_` + the name upper-cased, `-` → `_`.
pub fn env_prefix(service: &str) -> String {
    format!(
        "FERRY_SERVICE_{}",
        service.to_ascii_uppercase().replace('-', "_")
    )
}
