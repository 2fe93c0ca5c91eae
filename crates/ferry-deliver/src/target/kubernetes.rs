//! The `kubernetes` target: the release's manifests rendered with every image of the
//! release pinned by digest, applied with `kubectl` (the environment's kubeconfig
//! secret), then `kubectl rollout status` for each workload. No cluster can run on the
//! machines Ferry is tested on: rendering and the argument lists are pure and
//! unit-tested, and the invocations are tested against a recording stand-in for
//! `kubectl`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_store::ReleaseImage;

use super::{DeployContext, Target};

#[derive(Debug)]
pub struct KubernetesTarget {
    /// Files or directories of YAML manifests, relative to the release's files.
    pub manifests: Vec<String>,
    /// The secret holding the kubeconfig.
    pub kubeconfig: String,
    pub namespace: Option<String>,
    pub rollout: Vec<String>,
    pub timeout: Option<Duration>,
    pub kubectl: PathBuf,
}

#[async_trait::async_trait]
impl Target for KubernetesTarget {
    async fn deploy(&self, ctx: &mut DeployContext<'_>) -> Result<(), String> {
        if !ctx.secrets.iter().any(|(n, _)| *n == self.kubeconfig) {
            return Err(format!(
                "the kubeconfig secret `{}` is not set for `{}`",
                self.kubeconfig,
                ctx.environment()
            ));
        }
        let files = manifest_files(&ctx.release_dir, &self.manifests)?;
        let rendered_dir = ctx
            .env_dir
            .join("rendered")
            .join(crate::layout::component(&ctx.release.name));
        let _ = std::fs::remove_dir_all(&rendered_dir);
        std::fs::create_dir_all(&rendered_dir).map_err(|e| e.to_string())?;
        let mut texts = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let out = render_manifest(&text, &ctx.release.images);
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            std::fs::write(rendered_dir.join(format!("{i:03}-{name}")), &out)
                .map_err(|e| e.to_string())?;
            texts.push(out);
        }
        let namespace = match &self.namespace {
            Some(n) => Some(ctx.eval(n)?),
            None => None,
        };
        let targets = rollout_targets(&texts, &self.rollout);
        let timeout = self.timeout.unwrap_or(Duration::from_secs(300)).as_secs();
        let commands = kubectl_commands(
            &ctx.secrets_dir.join(&self.kubeconfig),
            namespace.as_deref(),
            &rendered_dir,
            &targets,
            timeout,
        );
        let kubectl = self.kubectl.display();
        for args in commands {
            ctx.log.line(&format!("{kubectl} {}", args.join(" ")));
            let out = tokio::process::Command::new(&self.kubectl)
                .args(&args)
                .env_clear()
                .envs(ctx.env.iter().map(|(k, v)| (k, v)))
                .current_dir(&ctx.release_dir)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| format!("cannot run {kubectl}: {e}"))?;
            let mut text = out.stdout;
            text.extend_from_slice(&out.stderr);
            ctx.log.output(&text);
            if !out.status.success() {
                let masked = ctx.log.masker().mask(&text);
                let tail = String::from_utf8_lossy(&masked)
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string();
                return Err(format!(
                    "kubectl {} failed: {tail}",
                    args.iter()
                        .skip_while(|a| a.starts_with("--") || a.contains('/'))
                        .take(2)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
        }
        Ok(())
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
