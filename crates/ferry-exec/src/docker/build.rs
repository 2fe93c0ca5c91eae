//! `build_image:` — build an image from a directory through the Engine API (the build
//! context sent as a tar, `.dockerignore` honoured), tag it, push every tag and read the
//! pushed image's digest back from the engine. The engine's layer cache makes a second
//! build of an unchanged context reuse every layer; the context's files are archived
//! with fixed times and owners so that a fresh workspace does not defeat that cache.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::DockerExecutor;
use crate::OutputSink;
pub use crate::images::{BuildSpec, BuiltImage};
pub use crate::registry::{Logins, registry_of};

/// Where registry credentials come from (for pulls and pushes).
pub trait Credentials: Send + Sync {
    /// Credentials for `registry` (`docker.io`, `127.0.0.1:5000`, ...), if any.
    fn for_registry(&self, registry: &str) -> Option<DockerCredentials>;
}

/// The Docker CLI's own store: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`
/// (what `docker login` writes), including credential helpers configured there.
#[derive(Debug, Clone, Copy, Default)]
pub struct DockerConfigCredentials;

impl Credentials for DockerConfigCredentials {
    fn for_registry(&self, registry: &str) -> Option<DockerCredentials> {
        let server = if registry == "docker.io" {
            "https://index.docker.io/v1/"
        } else {
            registry
        };
        match docker_credential::get_credential(server).ok()? {
            docker_credential::DockerCredential::UsernamePassword(user, password) => {
                Some(DockerCredentials {
                    username: Some(user),
                    password: Some(password),
                    serveraddress: Some(server.to_string()),
                    ..Default::default()
                })
            }
            docker_credential::DockerCredential::IdentityToken(token) => Some(DockerCredentials {
                identitytoken: Some(token),
                serveraddress: Some(server.to_string()),
                ..Default::default()
            }),
        }
    }
}

/// `.dockerignore` rules: later rules win; `!` re-includes.
#[derive(Debug, Default)]
struct Ignore {
    rules: Vec<(globset::GlobMatcher, bool)>,
}

impl Ignore {
    fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (include, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
            let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
            if pattern.is_empty() {
                continue;
            }
            for p in [pattern.to_string(), format!("{pattern}/**")] {
                let glob = globset::GlobBuilder::new(&p)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!(".dockerignore: invalid pattern `{line}`: {e}"))?;
                rules.push((glob.compile_matcher(), include));
            }
        }
        Ok(Self { rules })
    }

    fn excluded(&self, rel: &Path) -> bool {
        let mut excluded = false;
        for (glob, include) in &self.rules {
            if glob.is_match(rel) {
                excluded = !include;
            }
        }
        excluded
    }

    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, include)| *include)
    }
}

/// The Dockerfile with one `LABEL` instruction holding every label, at the end of the
/// stage that is built (the last one, or `target`). One instruction is one build step;
/// the builder would otherwise add a step per label. `None` when the target stage is not
/// found (the labels then go through the API, a step each).
pub fn with_labels(
    dockerfile: &str,
    target: Option<&str>,
    labels: &[(String, String)],
) -> Option<String> {
    if labels.is_empty() {
        return Some(dockerfile.to_string());
    }
    let quote = |s: &str| {
        let escaped: String = s
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' | '$' => vec!['\\', c],
                '\n' | '\r' => vec![' '],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    };
    let mut sorted: Vec<&(String, String)> = labels.iter().collect();
    sorted.sort();
    let instruction = format!(
        "LABEL {}\n",
        sorted
            .iter()
            .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let lines: Vec<&str> = dockerfile.split_inclusive('\n').collect();
    // Where each stage starts: lines whose instruction is FROM (not continuations).
    let mut stages: Vec<(usize, Option<String>)> = Vec::new();
    let mut continued = false;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        let mut words = trimmed.split_whitespace();
        if !continued && words.next().is_some_and(|w| w.eq_ignore_ascii_case("from")) {
            let rest: Vec<&str> = words.collect();
            let name = rest
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .and_then(|p| rest.get(p + 1))
                .map(|n| n.to_ascii_lowercase());
            stages.push((i, name));
        }
        if !trimmed.starts_with('#') {
            continued = trimmed.ends_with('\\');
        }
    }
    let end = match target {
        None => lines.len(),
        Some(t) => {
            let t = t.to_ascii_lowercase();
            let k = stages.iter().position(|(_, n)| n.as_deref() == Some(&t))?;
            stages
                .get(k + 1)
                .map(|(start, _)| *start)
                .unwrap_or(lines.len())
        }
    };
    let mut out = String::with_capacity(dockerfile.len() + instruction.len() + 1);
    for line in &lines[..end] {
        out.push_str(line);
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&instruction);
    for line in &lines[end..] {
        out.push_str(line);
    }
    Some(out)
}

/// The build context as a tar archive (fixed times and owners; symlinks kept as links),
/// with the Dockerfile's text replaced by `dockerfile_text` when given.
pub fn context_tar(
    dir: &Path,
    dockerfile: &str,
    dockerfile_text: Option<&str>,
) -> Result<Vec<u8>, String> {
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => Ignore::parse(&text)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(format!("cannot read .dockerignore: {e}")),
    };
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    let mut walk = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(|e| format!("cannot read the build context: {e}"))?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        // The Dockerfile and .dockerignore are always sent (the builder reads them).
        let always = rel == Path::new(dockerfile) || rel == Path::new(".dockerignore");
        if !always && ignore.excluded(rel) {
            if entry.file_type().is_dir() && !ignore.has_exceptions() {
                walk.skip_current_dir();
            }
            continue;
        }
        if let Some(text) = dockerfile_text.filter(|_| rel == Path::new(dockerfile)) {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_cksum();
            tar.append_data(&mut header, rel, text.as_bytes())
                .map_err(|e| format!("cannot archive {}: {e}", rel.display()))?;
            continue;
        }
        tar.append_path_with_name(entry.path(), rel)
            .map_err(|e| format!("cannot archive {}: {e}", rel.display()))?;
    }
    tar.into_inner()
        .map_err(|e| format!("cannot archive the build context: {e}"))
}

/// The Engine API's form of a login.
fn docker_credentials(host: &str, username: &str, password: &str) -> DockerCredentials {
    DockerCredentials {
        username: Some(username.to_string()),
        password: Some(password.to_string()),
        serveraddress: Some(host.to_string()),
        ..Default::default()
    }
}

impl DockerExecutor {
    /// Builds `spec`, streaming the builder's output to `out`, tags it, and pushes it.
    pub async fn build_image(
        &self,
        spec: &BuildSpec,
        out: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<BuiltImage, String> {
        let context = spec.context.clone();
        let dockerfile = spec.dockerfile.clone();
        if !context.join(&dockerfile).is_file() {
            return Err(format!(
                "there is no Dockerfile at {}",
                Path::new(&dockerfile).display()
            ));
        }
        let text = std::fs::read_to_string(context.join(&dockerfile))
            .map_err(|e| format!("cannot read the Dockerfile: {e}"))?;
        let labelled = with_labels(&text, spec.target.as_deref(), &spec.labels);
        let api_labels = labelled.is_none();
        let tar = tokio::task::spawn_blocking(move || {
            context_tar(&context, &dockerfile, labelled.as_deref())
        })
        .await
        .map_err(|e| e.to_string())??;
        let first = format!("{}:{}", spec.name, spec.tags.first().ok_or("no tag")?);
        let args: HashMap<String, String> = spec.args.iter().cloned().collect();
        let labels: HashMap<String, String> = if api_labels {
            spec.labels.iter().cloned().collect()
        } else {
            HashMap::new()
        };
        let mut options = BuildImageOptionsBuilder::default()
            .dockerfile(&spec.dockerfile)
            .t(&first)
            .rm(true)
            .forcerm(true)
            .buildargs(&args)
            .labels(&labels);
        if let Some(target) = &spec.target {
            options = options.target(target);
        }
        // Base images of the Dockerfile may come from registries that need credentials.
        let mut registries: HashMap<String, DockerCredentials> = HashMap::new();
        for (host, user, password) in spec.logins.iter() {
            registries.insert(host.to_string(), docker_credentials(host, user, password));
        }
        let own = registry_of(&spec.name);
        if !registries.contains_key(own)
            && let Some(c) = self.credentials.for_registry(own)
        {
            registries.insert(own.to_string(), c);
        }
        let mut stream = self.docker.build_image(
            options.build(),
            (!registries.is_empty()).then_some(registries),
            Some(bollard::body_full(tar.into())),
        );
        let mut id = None;
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                // Dropping the stream closes the connection, which stops the build.
                _ = cancel.cancelled() => return Err("cancelled".into()),
            };
            let Some(next) = next else { break };
            let info = next.map_err(|e| format!("the build failed: {}", engine_message(&e)))?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(format!("the build failed: {}", e.trim_end()));
            }
            if let Some(text) = info.stream {
                out.chunk(text.as_bytes());
            }
            if let Some(status) = info.status
                && info
                    .progress_detail
                    .as_ref()
                    .is_none_or(|d| d.current.is_none())
            {
                out.chunk(format!("{status}\n").as_bytes());
            }
            if let Some(aux) = info.aux
                && let Some(i) = aux.id
            {
                id = Some(i);
            }
        }
        let inspected = self
            .docker
            .inspect_image(&first)
            .await
            .map_err(|e| format!("the build did not produce {first}: {e}"))?;
        let id = inspected.id.or(id).unwrap_or_default();
        let mut references = vec![first.clone()];
        for tag in spec.tags.iter().skip(1) {
            let options = TagImageOptionsBuilder::default()
                .repo(&spec.name)
                .tag(tag)
                .build();
            self.docker
                .tag_image(&id, Some(options))
                .await
                .map_err(|e| format!("cannot tag the image as {}:{tag}: {e}", spec.name))?;
            references.push(format!("{}:{tag}", spec.name));
        }
        let mut digest = None;
        if spec.push {
            for tag in &spec.tags {
                self.push(&spec.name, tag, &spec.logins, out, cancel)
                    .await?;
            }
            let image = self
                .docker
                .inspect_image(&first)
                .await
                .map_err(|e| format!("cannot read the pushed image's digest: {e}"))?;
            let prefix = format!("{}@", spec.name);
            digest = image
                .repo_digests
                .unwrap_or_default()
                .into_iter()
                .find_map(|d| d.strip_prefix(&prefix).map(str::to_string));
            if digest.is_none() {
                return Err(format!(
                    "the registry did not report a digest for {}",
                    spec.name
                ));
            }
        }
        Ok(BuiltImage {
            id,
            references,
            digest,
        })
    }

    /// Credentials for `image`'s registry: the job's logins, else the executor's.
    pub fn credentials_for(&self, image: &str, logins: &Logins) -> Option<DockerCredentials> {
        let host = registry_of(image);
        logins
            .get(host)
            .map(|(user, password)| docker_credentials(host, user, password))
            .or_else(|| self.credentials.for_registry(host))
    }

    async fn push(
        &self,
        name: &str,
        tag: &str,
        logins: &Logins,
        out: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        out.chunk(format!("pushing {name}:{tag}\n").as_bytes());
        let options = PushImageOptionsBuilder::default().tag(tag).build();
        let credentials = self.credentials_for(name, logins);
        let mut stream = self.docker.push_image(name, Some(options), credentials);
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = cancel.cancelled() => return Err("cancelled".into()),
            };
            let Some(next) = next else { break };
            let info = next.map_err(|e| {
                format!("the registry refused {name}:{tag}: {}", engine_message(&e))
            })?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(format!(
                    "the registry refused {name}:{tag}: {}",
                    e.trim_end()
                ));
            }
            // Per-layer chatter ("Preparing", "Waiting", progress bars) is left out.
            if let Some(status) = info.status
                && info
                    .progress_detail
                    .as_ref()
                    .is_none_or(|d| d.current.is_none())
                && !matches!(status.as_str(), "Preparing" | "Waiting")
            {
                out.chunk(format!("{status}\n").as_bytes());
            }
        }
        Ok(())
    }
}

/// The engine's own message, without bollard's wrapping where it has one.
fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_never_show_passwords() {
        let logins = Logins::new([("reg:5000".into(), "ci".into(), "hunter2".into())]);
        let shown = format!("{logins:?}");
        assert_eq!(shown, "Logins { hosts: [\"reg:5000\"] }");
    }

    #[test]
    fn registries_of_images() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/team/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/o/app"), "ghcr.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
    }

    #[test]
    fn labels_become_one_instruction_in_the_built_stage() {
        let labels = vec![
            ("b".to_string(), "say \"hi\" $HOME".to_string()),
            ("a".to_string(), "1".to_string()),
        ];
        let single = "FROM x\nRUN make";
        assert_eq!(
            with_labels(single, None, &labels).as_deref(),
            Some("FROM x\nRUN make\nLABEL \"a\"=\"1\" \"b\"=\"say \\\"hi\\\" \\$HOME\"\n")
        );
        let multi = "FROM rust AS build\nRUN cargo build \\\n  from here\nfrom debian as Runtime\nCOPY --from=build /a /a\nFROM scratch AS other\n";
        let out = with_labels(multi, Some("runtime"), &labels[1..]).expect("stage found");
        assert_eq!(
            out,
            "FROM rust AS build\nRUN cargo build \\\n  from here\nfrom debian as Runtime\nCOPY --from=build /a /a\nLABEL \"a\"=\"1\"\nFROM scratch AS other\n"
        );
        assert_eq!(with_labels(multi, Some("nope"), &labels), None);
        assert_eq!(with_labels(single, None, &[]).as_deref(), Some(single));
    }

    #[test]
    fn dockerignore_rules() {
        let ignore =
            Ignore::parse("# comment\ntarget\n*.log\n!keep.log\n/docs/**/*.md\n").expect("parse");
        let ex = |p: &str| ignore.excluded(Path::new(p));
        assert!(ex("target"));
        assert!(ex("target/debug/app"), "a directory's contents too");
        assert!(ex("build.log"));
        assert!(!ex("keep.log"), "`!` re-includes");
        assert!(!ex("src/build.log"), "`*` does not cross directories");
        assert!(ex("docs/a/b/x.md"));
        assert!(!ex("src/main.rs"));
        assert!(Ignore::parse("[").is_err());
    }

    #[test]
    fn context_archive_is_reproducible_and_filtered() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").expect("w");
        std::fs::write(dir.path().join(".dockerignore"), "secret\nDockerfile\n").expect("w");
        std::fs::write(dir.path().join("app"), "bin").expect("w");
        std::fs::write(dir.path().join("secret"), "x").expect("w");
        let first = context_tar(dir.path(), "Dockerfile", None).expect("tar");
        // A fresh copy of the same files has new times: the archive is the same.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(dir.path().join("app"), "bin").expect("w");
        let second = context_tar(dir.path(), "Dockerfile", None).expect("tar");
        assert_eq!(first, second);
        let mut names: Vec<String> = tar::Archive::new(first.as_slice())
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        assert_eq!(names, vec![".dockerignore", "Dockerfile", "app"]);
    }
}
