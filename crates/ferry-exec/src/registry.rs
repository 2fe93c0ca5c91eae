//! Registry logins: what a job (or a deployment) may pull and push with. They come from
//! Ferry's sealed secrets and win over whatever the executor finds on its host.

use std::collections::BTreeMap;

/// Registry logins for one job, by registry host. Its `Debug` shows hosts only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Logins {
    /// host → (username, password)
    by_host: BTreeMap<String, (String, String)>,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&String> = self.by_host.keys().collect();
        f.debug_struct("Logins").field("hosts", &hosts).finish()
    }
}

impl Logins {
    /// From (host, username, password) triples.
    pub fn new(logins: impl IntoIterator<Item = (String, String, String)>) -> Self {
        Self {
            by_host: logins
                .into_iter()
                .map(|(host, username, password)| (host, (username, password)))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }

    /// The (username, password) for `host`.
    pub fn get(&self, host: &str) -> Option<(&str, &str)> {
        self.by_host
            .get(host)
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Every (host, username, password).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.by_host
            .iter()
            .map(|(h, (u, p))| (h.as_str(), u.as_str(), p.as_str()))
    }
}

/// The registry an image reference names: its first component when that is a host
/// (has `.` or `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}
