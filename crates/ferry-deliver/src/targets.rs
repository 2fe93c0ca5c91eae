//! The `script` and `kubernetes` targets. Both run commands with the release in
//! context and log like a job; the Kubernetes target renders the release's manifests
//! (every image of the release pinned by digest) and drives `kubectl`.

use std::path::{Path, PathBuf};

use ferry_engine::mask::{MaskStream, Masker};
use ferry_exec::{Executor, JobSpec, OutputSink, StepOutcome, StepSpec};
use ferry_store::ReleaseImage;
use tokio_util::sync::CancellationToken;

/// A log file that masks secret values in everything written to it (process output,
/// script output).
#[derive(Debug)]
pub struct MaskedFile {
    file: std::fs::File,
    mask: MaskStream,
}

impl OutputSink for MaskedFile {
    fn chunk(&mut self, data: &[u8]) {
        use std::io::Write as _;
        let masked = self.mask.push(data);
        let _ = self.file.write_all(&masked);
    }
}

impl MaskedFile {
    pub fn new(file: std::fs::File, masker: Masker) -> Self {
        Self {
            file,
            mask: MaskStream::new(masker),
        }
    }

    /// Writes what the mask held back (at the end of some output).
    pub fn flush(&mut self) {
        use std::io::Write as _;
        let rest = self.mask.finish();
        let _ = self.file.write_all(&rest);
    }

    /// A line from Ferry itself, after the output before it.
    pub fn note(&mut self, text: &str) {
        use std::io::Write as _;
        self.flush();
        let _ = writeln!(self.file, "ferry: {text}");
    }
}

/// Runs `script` with `env` in `dir`, on the host or (with `image`) in a container of
/// it with `dir` mounted at `/workspace`; output goes to `log`, masked.
#[allow(clippy::too_many_arguments)]
pub async fn run_script(
    executor: &dyn Executor,
    name: &str,
    image: Option<String>,
    script: &str,
    env: Vec<(String, String)>,
    dir: &Path,
    log: std::fs::File,
    masker: Masker,
) -> Result<(), String> {
    let job = JobSpec {
        name: format!("deploy-{name}"),
        workspace: dir.to_path_buf(),
        image,
        container: Default::default(),
        network: None,
        logins: Default::default(),
    };
    let prepared = executor.prepare(&job).await?;
    let step = StepSpec {
        script: script.to_string(),
        env,
        cwd: dir.to_path_buf(),
        timeout: None,
        clear_env: true,
    };
    let mut out = MaskedFile::new(log, masker);
    let outcome = executor
        .run_step(&prepared, &step, &mut out, &CancellationToken::new())
        .await;
    out.flush();
    executor.cleanup(&prepared).await;
    match outcome {
        StepOutcome::Exited(0) => Ok(()),
        StepOutcome::Exited(code) => Err(format!("the script exited with code {code}")),
        StepOutcome::TimedOut(_) => Err("the script timed out".into()),
        StepOutcome::Cancelled => Err("cancelled".into()),
        StepOutcome::Error(e) => Err(e),
    }
}

/// `image: NAME`, `image: NAME:TAG` or `image: NAME@…` of a release image becomes
/// `image: NAME@DIGEST`; everything else is kept as written.
pub fn render_manifest(text: &str, images: &[ReleaseImage]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let trimmed = body.trim_start();
        let indent = &body[..body.len() - trimmed.len()];
        let (dash, rest) = match trimmed.strip_prefix("- ") {
            Some(r) => ("- ", r),
            None => ("", trimmed),
        };
        if let Some(value) = rest.strip_prefix("image:") {
            let v = value.trim().trim_matches(['"', '\'']);
            let repo = v.split('@').next().unwrap_or(v);
            let repo = match repo.rsplit_once(':') {
                // A `:` after the last `/` is a tag; before it, a registry port.
                Some((r, tag)) if !tag.contains('/') => r,
                _ => repo,
            };
            if let Some(image) = images.iter().find(|i| i.name == repo) {
                out.push_str(&format!(
                    "{indent}{dash}image: {}{ending}",
                    image.reference()
                ));
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// The manifest files under `paths` (files, or directories searched for `.yaml`/`.yml`),
/// relative to `root`, sorted.
pub fn manifest_files(root: &Path, paths: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        let full = root.join(p);
        if full.is_file() {
            out.push(full);
        } else if full.is_dir() {
            for e in walkdir::WalkDir::new(&full)
                .sort_by_file_name()
                .into_iter()
                .flatten()
            {
                let yaml = e
                    .path()
                    .extension()
                    .is_some_and(|x| x == "yaml" || x == "yml");
                if e.file_type().is_file() && yaml {
                    out.push(e.path().to_path_buf());
                }
            }
        } else {
            return Err(format!("the release has no manifests at `{p}`"));
        }
    }
    if out.is_empty() {
        return Err("the release holds no manifest files".into());
    }
    Ok(out)
}

/// What to wait for: `rollout` as given, else every Deployment, StatefulSet and
/// DaemonSet named in the manifests (`kind/name`).
pub fn rollout_targets(manifests: &[String], rollout: &[String]) -> Vec<String> {
    if !rollout.is_empty() {
        return rollout.to_vec();
    }
    let mut out = Vec::new();
    for text in manifests {
        for doc in text.split("\n---") {
            let mut kind = None;
            let mut name = None;
            let mut in_metadata = false;
            for line in doc.lines() {
                if let Some(k) = line.strip_prefix("kind:") {
                    kind = Some(k.trim().to_string());
                }
                if line.starts_with("metadata:") {
                    in_metadata = true;
                    continue;
                }
                if in_metadata {
                    if !line.starts_with(' ') && !line.trim().is_empty() {
                        in_metadata = false;
                    } else if let Some(n) = line.trim().strip_prefix("name:")
                        && line.starts_with("  ")
                        && !line.starts_with("   ")
                    {
                        name = Some(n.trim().trim_matches(['"', '\'']).to_string());
                    }
                }
            }
            if let (Some(k), Some(n)) = (kind, name)
                && matches!(k.as_str(), "Deployment" | "StatefulSet" | "DaemonSet")
            {
                out.push(format!("{}/{n}", k.to_ascii_lowercase()));
            }
        }
    }
    out
}

/// The `kubectl` invocations of one deployment, in order.
pub fn kubectl_commands(
    kubeconfig: &Path,
    namespace: Option<&str>,
    rendered_dir: &Path,
    rollout: &[String],
    timeout_s: u64,
) -> Vec<Vec<String>> {
    let mut base = vec!["--kubeconfig".to_string(), kubeconfig.display().to_string()];
    if let Some(ns) = namespace {
        base.extend(["--namespace".to_string(), ns.to_string()]);
    }
    let mut out = Vec::new();
    let mut apply = base.clone();
    apply.extend(["apply", "--filename"].map(String::from));
    apply.push(rendered_dir.display().to_string());
    out.push(apply);
    for target in rollout {
        let mut wait = base.clone();
        wait.extend(["rollout", "status"].map(String::from));
        wait.push(target.clone());
        wait.push(format!("--timeout={timeout_s}s"));
        out.push(wait);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> Vec<ReleaseImage> {
        vec![ReleaseImage {
            job: "image".into(),
            name: "127.0.0.1:5000/team/app".into(),
            digest: "sha256:abc".into(),
        }]
    }

    #[test]
    fn manifests_pin_release_images_by_digest() {
        let text = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: { app: web }
spec:
  template:
    spec:
      containers:
        - name: web
          image: 127.0.0.1:5000/team/app:latest
        - name: side
          image: \"busybox:1\"
      initContainers:
        - image: 127.0.0.1:5000/team/app
---
kind: Service
metadata:
  name: web
";
        let out = render_manifest(text, &images());
        assert!(
            out.contains("          image: 127.0.0.1:5000/team/app@sha256:abc\n"),
            "{out}"
        );
        assert!(
            out.contains("        - image: 127.0.0.1:5000/team/app@sha256:abc\n"),
            "{out}"
        );
        assert!(out.contains("image: \"busybox:1\""), "other images stay");
        assert_eq!(
            rollout_targets(&[out], &[]),
            vec!["deployment/web".to_string()]
        );
        assert_eq!(
            rollout_targets(&[], &["statefulset/db".into()]),
            vec!["statefulset/db".to_string()]
        );
    }

    #[test]
    fn kubectl_invocations() {
        let cmds = kubectl_commands(
            Path::new("/s/KUBECONFIG"),
            Some("shop"),
            Path::new("/d/rendered"),
            &["deployment/web".into()],
            300,
        );
        assert_eq!(
            cmds,
            vec![
                vec![
                    "--kubeconfig",
                    "/s/KUBECONFIG",
                    "--namespace",
                    "shop",
                    "apply",
                    "--filename",
                    "/d/rendered"
                ],
                vec![
                    "--kubeconfig",
                    "/s/KUBECONFIG",
                    "--namespace",
                    "shop",
                    "rollout",
                    "status",
                    "deployment/web",
                    "--timeout=300s"
                ],
            ]
            .into_iter()
            .map(|v| v.into_iter().map(String::from).collect::<Vec<_>>())
            .collect::<Vec<_>>()
        );
    }
}
