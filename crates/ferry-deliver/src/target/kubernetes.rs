//! The `kubernetes` target: the release's manifests rendered with every image of the
//! release pinned by digest and `${{ }}` replaced, applied with `kubectl` (the
//! environment's kubeconfig secret), then `kubectl rollout status` for each workload.
//! A ConfigMap of the environment's variables and a Secret of its secrets may be applied
//! first (the Secret from memory, through kubectl's standard input: never in a file),
//! and the workloads' pod templates carry a keyed fingerprint of both so that a changed
//! value rolls them. No cluster can run on the machines Ferry is tested on: rendering,
//! the objects and the argument lists are pure and unit-tested, and the invocations are
//! tested against a recording stand-in for `kubectl`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ferry_config::delivery::KubeObject;
use ferry_store::{ReleaseImage, SecretKey};
use serde_json::json;

use super::{DeployContext, Target};

/// The annotation of pod templates that holds the fingerprint of the ConfigMap and
/// Secret Ferry applied: a new value rolls the workload.
pub const CONFIG_ANNOTATION: &str = "ferry.dev/config";

#[derive(educe::Educe)]
#[educe(Debug)]
pub struct KubernetesTarget {
    /// Files or directories of YAML manifests, relative to the release's files.
    pub manifests: Vec<String>,
    /// The secret holding the kubeconfig.
    pub kubeconfig: String,
    pub namespace: Option<String>,
    pub rollout: Vec<String>,
    pub timeout: Option<Duration>,
    pub config_map: Option<KubeObject>,
    pub secret: Option<KubeObject>,
    pub kubectl: PathBuf,
    /// Keys the fingerprint of the objects' data.
    #[educe(Debug(ignore))]
    pub key: SecretKey,
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
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let out = ctx
                .eval(&render_manifest(&text, &ctx.release.images))
                .map_err(|e| format!("{name}: {e}"))?;
            // Rendered files are kept on disk: no secret value goes into one (a
            // sensitive Terraform output is masked like a secret).
            if ctx.log.masker().mask(out.as_bytes()) != out.as_bytes() {
                return Err(format!(
                    "{name} would hold a secret value (a sensitive Terraform output): \
                     give it to the cluster through the target's `secret:` instead"
                ));
            }
            std::fs::write(rendered_dir.join(format!("{i:03}-{name}")), &out)
                .map_err(|e| e.to_string())?;
            texts.push(out);
        }
        let namespace = match &self.namespace {
            Some(n) => Some(ctx.eval(n)?),
            None => None,
        };
        let evaluated = |o: &Option<KubeObject>| -> Result<Option<KubeObject>, String> {
            o.as_ref()
                .map(|o| {
                    Ok(KubeObject {
                        name: ctx.eval(&o.name)?,
                        keys: o.keys.clone(),
                    })
                })
                .transpose()
        };
        let objects = env_objects(&EnvObjectsSpec {
            config_map: evaluated(&self.config_map)?.as_ref(),
            secret: evaluated(&self.secret)?.as_ref(),
            vars: &ctx.vars,
            secrets: &ctx.secrets,
            kubeconfig: &self.kubeconfig,
            environment: ctx.environment(),
            release: &ctx.release.name,
        })?;
        let fingerprint = objects.as_ref().map(|o| {
            let f = self.key.fingerprint(&o.digest_input);
            f[..16].to_string()
        });
        let targets = rollout_targets(&texts, &self.rollout);
        if let Some(bad) = targets.iter().find(|t| !ferry_config::is_rollout_target(t)) {
            return Err(format!(
                "cannot wait for `{bad}`: a workload is KIND/NAME (deployment/web)"
            ));
        }
        // kubectl reads no configuration of the release's (HOME is the release's
        // files for the deployment's own code): a home of its own, kuberc off.
        let home = ctx.env_dir.join("kubectl-home");
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
        let timeout = self.timeout.unwrap_or(Duration::from_secs(300)).as_secs();
        let commands = kubectl_commands(
            &ctx.secrets_dir.join(&self.kubeconfig),
            namespace.as_deref(),
            &rendered_dir,
            &targets,
            timeout,
            fingerprint.as_deref(),
        );
        let kubectl = self.kubectl.display();
        for call in commands {
            let stdin = if call.stdin {
                let Some(objects) = &objects else { continue };
                for line in &objects.summary {
                    ctx.log.line(line);
                }
                Some(serde_json::to_vec(&objects.list).map_err(|e| e.to_string())?)
            } else {
                None
            };
            ctx.log.line(&format!("{kubectl} {}", call.args.join(" ")));
            let out = run(&self.kubectl, &call.args, stdin, &home, ctx)
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
                return Err(format!("kubectl {} failed: {tail}", call.what));
            }
        }
        Ok(())
    }
}

/// Runs kubectl once, writing `stdin` to it (and nothing else) if given.
async fn run(
    kubectl: &Path,
    args: &[String],
    stdin: Option<Vec<u8>>,
    home: &Path,
    ctx: &DeployContext<'_>,
) -> std::io::Result<std::process::Output> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(kubectl)
        .args(args)
        .env_clear()
        .envs(ctx.env.iter().map(|(k, v)| (k, v)))
        .env("HOME", home)
        .env("KUBERC", "off")
        .current_dir(&ctx.release_dir)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let input = child.stdin.take();
    let write = async move {
        if let (Some(mut pipe), Some(data)) = (input, stdin) {
            // kubectl may exit without reading it all (a bad kubeconfig): its answer
            // says why, not the broken pipe.
            let _ = pipe.write_all(&data).await;
        }
    };
    let (_, out) = tokio::join!(write, child.wait_with_output());
    out
}

/// What [`env_objects`] makes the objects from.
#[derive(Debug)]
pub struct EnvObjectsSpec<'a> {
    pub config_map: Option<&'a KubeObject>,
    pub secret: Option<&'a KubeObject>,
    pub vars: &'a BTreeMap<String, String>,
    pub secrets: &'a [(String, Vec<u8>)],
    /// The kubeconfig's secret: never put into the Secret.
    pub kubeconfig: &'a str,
    pub environment: &'a str,
    pub release: &'a str,
}

/// The ConfigMap and Secret of one deployment.
pub struct EnvObjects {
    /// A `v1` `List` of them, for `kubectl apply --filename -`.
    pub list: serde_json::Value,
    /// Their names and data in one canonical byte string, to fingerprint.
    pub digest_input: Vec<u8>,
    /// Log lines naming the objects and their keys (never a value).
    pub summary: Vec<String>,
}

impl std::fmt::Debug for EnvObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvObjects")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// A key of a ConfigMap or Secret: letters, digits, `-`, `_` and `.`.
fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && k != "."
        && k != ".."
}

/// The ConfigMap of the environment's variables and the Secret of its secrets that the
/// target's `config_map` and `secret` ask for (`None`: neither).
pub fn env_objects(spec: &EnvObjectsSpec<'_>) -> Result<Option<EnvObjects>, String> {
    if spec.config_map.is_none() && spec.secret.is_none() {
        return Ok(None);
    }
    let meta = |name: &str| {
        json!({
            "name": name,
            "labels": { "app.kubernetes.io/managed-by": "ferry" },
            "annotations": {
                "ferry.dev/environment": spec.environment,
                "ferry.dev/release": spec.release,
            },
        })
    };
    let mut items = Vec::new();
    let mut digest = Vec::new();
    let mut summary = Vec::new();
    let mut add = |kind: &str, name: &str, data: &[(&str, &[u8])]| {
        digest.extend_from_slice(format!("{kind}\0{name}\0{}\0", data.len()).as_bytes());
        for (k, v) in data {
            digest.extend_from_slice(format!("{k}\0{}\0", v.len()).as_bytes());
            digest.extend_from_slice(v);
        }
        let keys: Vec<&str> = data.iter().map(|(k, _)| *k).collect();
        summary.push(format!(
            "{kind} {name}: {}",
            if keys.is_empty() {
                "(empty)".to_string()
            } else {
                keys.join(", ")
            }
        ));
    };
    let check_name = |o: &KubeObject, field: &str| {
        if ferry_config::is_dns_subdomain(&o.name) {
            Ok(())
        } else {
            Err(format!(
                "`{field}` of the kubernetes target: `{}` is not a Kubernetes object name",
                o.name
            ))
        }
    };
    if let Some(o) = spec.config_map {
        check_name(o, "config_map")?;
        let mut data = Vec::new();
        if o.keys.is_empty() {
            data.extend(spec.vars.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
        } else {
            for k in &o.keys {
                let v = spec.vars.get(k).ok_or_else(|| {
                    format!(
                        "`config_map` names `{k}`, which is not a variable of `{}`",
                        spec.environment
                    )
                })?;
                data.push((k.as_str(), v.as_bytes()));
            }
        }
        data.sort();
        data.dedup_by(|a, b| a.0 == b.0);
        if let Some((k, _)) = data.iter().find(|(k, _)| !valid_key(k)) {
            return Err(format!("the variable `{k}` cannot be a ConfigMap key"));
        }
        add("ConfigMap", &o.name, &data);
        let map: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into()))
            .collect();
        items.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(&o.name),
            "data": map,
        }));
    }
    if let Some(o) = spec.secret {
        check_name(o, "secret")?;
        let mut data = Vec::new();
        if o.keys.is_empty() {
            data.extend(
                spec.secrets
                    .iter()
                    .filter(|(k, _)| k != spec.kubeconfig)
                    .map(|(k, v)| (k.as_str(), v.as_slice())),
            );
        } else {
            for k in &o.keys {
                if k == spec.kubeconfig {
                    return Err(format!(
                        "`secret` names `{k}`, the kubeconfig: it is not given to the cluster"
                    ));
                }
                let v = spec.secrets.iter().find(|(n, _)| n == k).ok_or_else(|| {
                    format!(
                        "`secret` names `{k}`, which is not a secret of `{}`",
                        spec.environment
                    )
                })?;
                data.push((k.as_str(), v.1.as_slice()));
            }
        }
        data.sort_by(|a, b| a.0.cmp(b.0));
        data.dedup_by(|a, b| a.0 == b.0);
        if let Some((k, _)) = data.iter().find(|(k, _)| !valid_key(k)) {
            return Err(format!("the secret `{k}` cannot be a Secret key"));
        }
        add("Secret", &o.name, &data);
        let b64 = base64::engine::general_purpose::STANDARD;
        let map: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), b64.encode(v).into()))
            .collect();
        items.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(&o.name),
            "type": "Opaque",
            "data": map,
        }));
    }
    Ok(Some(EnvObjects {
        list: json!({ "apiVersion": "v1", "kind": "List", "items": items }),
        digest_input: digest,
        summary,
    }))
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

/// One run of kubectl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub args: Vec<String>,
    /// What it does, for an error ("apply", "rollout status deployment/web").
    pub what: String,
    /// It reads the ConfigMap and Secret from its standard input.
    pub stdin: bool,
}

/// Whether `kubectl rollout` target `t` (`deployment/web`, `sts/db`) is a workload
/// with a pod template.
fn has_pod_template(t: &str) -> bool {
    let kind = t.split('/').next().unwrap_or("").to_ascii_lowercase();
    let kind = kind.strip_suffix(".apps").unwrap_or(&kind);
    matches!(
        kind,
        "deployment"
            | "deployments"
            | "deploy"
            | "statefulset"
            | "statefulsets"
            | "sts"
            | "daemonset"
            | "daemonsets"
            | "ds"
    )
}

/// The `kubectl` invocations of one deployment, in order. With `fingerprint` (the
/// target makes a ConfigMap or Secret): the objects are applied first, from standard
/// input, and each workload's pod template is annotated with it after the manifests.
pub fn kubectl_commands(
    kubeconfig: &Path,
    namespace: Option<&str>,
    rendered_dir: &Path,
    rollout: &[String],
    timeout_s: u64,
    fingerprint: Option<&str>,
) -> Vec<Invocation> {
    let mut base = vec!["--kubeconfig".to_string(), kubeconfig.display().to_string()];
    if let Some(ns) = namespace {
        base.extend(["--namespace".to_string(), ns.to_string()]);
    }
    let call = |rest: &[&str], what: String, stdin: bool| {
        let mut args = base.clone();
        args.extend(rest.iter().map(|s| s.to_string()));
        Invocation { args, what, stdin }
    };
    let mut out = Vec::new();
    if fingerprint.is_some() {
        out.push(call(
            &[
                "apply",
                "--server-side",
                "--field-manager=ferry",
                "--force-conflicts",
                "--filename",
                "-",
            ],
            "apply (ConfigMap and Secret)".into(),
            true,
        ));
    }
    let dir = rendered_dir.display().to_string();
    out.push(call(&["apply", "--filename", &dir], "apply".into(), false));
    if let Some(f) = fingerprint {
        let patch = json!({
            "spec": { "template": { "metadata": { "annotations": { CONFIG_ANNOTATION: f } } } }
        })
        .to_string();
        for target in rollout.iter().filter(|t| has_pod_template(t)) {
            out.push(call(
                &["patch", target, "--type", "merge", "--patch", &patch],
                format!("patch {target}"),
                false,
            ));
        }
    }
    for target in rollout {
        out.push(call(
            &[
                "rollout",
                "status",
                target,
                &format!("--timeout={timeout_s}s"),
            ],
            format!("rollout status {target}"),
            false,
        ));
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
        // A name in a manifest that kubectl would read as a flag is refused before
        // kubectl runs.
        let hostile = "kind: Deployment\nmetadata:\n  name: --filename=/etc/passwd\n";
        let targets = rollout_targets(&[hostile.to_string()], &[]);
        assert_eq!(targets, ["deployment/--filename=/etc/passwd"]);
        assert!(!ferry_config::is_rollout_target(&targets[0]));
        for ok in ["deployment/web", "deployments.apps/web", "sts/db-0"] {
            assert!(ferry_config::is_rollout_target(ok), "{ok}");
        }
        for bad in [
            "--filename=/x",
            "deployment",
            "Deployment/web",
            "deployment/Web",
            "/web",
        ] {
            assert!(!ferry_config::is_rollout_target(bad), "{bad}");
        }
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kubectl_invocations() {
        let cmds = kubectl_commands(
            Path::new("/s/KUBECONFIG"),
            Some("shop"),
            Path::new("/d/rendered"),
            &["deployment/web".into()],
            300,
            None,
        );
        let base = ["--kubeconfig", "/s/KUBECONFIG", "--namespace", "shop"];
        assert_eq!(
            cmds,
            vec![
                Invocation {
                    args: args(&[&base[..], &["apply", "--filename", "/d/rendered"]].concat()),
                    what: "apply".into(),
                    stdin: false,
                },
                Invocation {
                    args: args(
                        &[
                            &base[..],
                            &["rollout", "status", "deployment/web", "--timeout=300s"]
                        ]
                        .concat()
                    ),
                    what: "rollout status deployment/web".into(),
                    stdin: false,
                },
            ]
        );
    }

    #[test]
    fn kubectl_invocations_with_config_objects() {
        let cmds = kubectl_commands(
            Path::new("/s/K"),
            None,
            Path::new("/d/r"),
            &[
                "deployment/web".into(),
                "sts/db".into(),
                "job.batch/migrate".into(),
            ],
            60,
            Some("0123abcd"),
        );
        let lines: Vec<String> = cmds.iter().map(|c| c.args[2..].join(" ")).collect();
        let patch = r#"--type merge --patch {"spec":{"template":{"metadata":{"annotations":{"ferry.dev/config":"0123abcd"}}}}}"#;
        assert_eq!(
            lines,
            vec![
                "apply --server-side --field-manager=ferry --force-conflicts --filename -"
                    .to_string(),
                "apply --filename /d/r".into(),
                format!("patch deployment/web {patch}"),
                format!("patch sts/db {patch}"),
                "rollout status deployment/web --timeout=60s".into(),
                "rollout status sts/db --timeout=60s".into(),
                "rollout status job.batch/migrate --timeout=60s".into(),
            ]
        );
        assert!(cmds[0].stdin && cmds.iter().skip(1).all(|c| !c.stdin));
        assert_eq!(cmds[2].what, "patch deployment/web");
    }

    fn spec<'a>(
        config_map: Option<&'a KubeObject>,
        secret: Option<&'a KubeObject>,
        vars: &'a BTreeMap<String, String>,
        secrets: &'a [(String, Vec<u8>)],
    ) -> EnvObjectsSpec<'a> {
        EnvObjectsSpec {
            config_map,
            secret,
            vars,
            secrets,
            kubeconfig: "KUBECONFIG",
            environment: "production",
            release: "r-7",
        }
    }

    fn object(name: &str, keys: &[&str]) -> KubeObject {
        KubeObject {
            name: name.into(),
            keys: args(keys),
        }
    }

    #[test]
    fn config_map_and_secret_from_the_environment() {
        let vars: BTreeMap<String, String> = [("LOG_LEVEL", "debug"), ("API_URL", "https://x/")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let secrets = vec![
            ("KUBECONFIG".to_string(), b"apiVersion: v1".to_vec()),
            ("DB_PASSWORD".to_string(), b"hunter2".to_vec()),
            ("TLS_KEY".to_string(), vec![0, 159, 146, 150]),
        ];
        let (cm, sec) = (object("shop-config", &[]), object("shop-secrets", &[]));
        assert!(
            env_objects(&spec(None, None, &vars, &secrets))
                .expect("none")
                .is_none()
        );
        let o = env_objects(&spec(Some(&cm), Some(&sec), &vars, &secrets))
            .expect("objects")
            .expect("some");
        let meta = json!({
            "labels": { "app.kubernetes.io/managed-by": "ferry" },
            "annotations": { "ferry.dev/environment": "production", "ferry.dev/release": "r-7" },
        });
        let with_name = |name: &str| {
            let mut m = meta.clone();
            m["name"] = name.into();
            m
        };
        assert_eq!(
            o.list,
            json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": with_name("shop-config"),
                        "data": { "API_URL": "https://x/", "LOG_LEVEL": "debug" },
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": with_name("shop-secrets"),
                        "type": "Opaque",
                        // The kubeconfig is never given to the cluster; bytes stay bytes.
                        "data": { "DB_PASSWORD": "aHVudGVyMg==", "TLS_KEY": "AJ+Slg==" },
                    },
                ],
            })
        );
        assert_eq!(
            o.summary,
            vec![
                "ConfigMap shop-config: API_URL, LOG_LEVEL",
                "Secret shop-secrets: DB_PASSWORD, TLS_KEY"
            ]
        );
        // The digest input changes with any value, and names no value in a summary.
        let mut other = secrets.clone();
        other[1].1 = b"hunter3".to_vec();
        let o2 = env_objects(&spec(Some(&cm), Some(&sec), &vars, &other))
            .expect("objects")
            .expect("some");
        assert_ne!(o.digest_input, o2.digest_input);
        assert_eq!(o.summary, o2.summary);

        // Chosen keys only.
        let picked = object("db", &["DB_PASSWORD"]);
        let o = env_objects(&spec(None, Some(&picked), &vars, &secrets))
            .expect("objects")
            .expect("some");
        assert_eq!(
            o.list["items"][0]["data"],
            json!({ "DB_PASSWORD": "aHVudGVyMg==" })
        );
        assert_eq!(o.list["items"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn config_objects_refused() {
        let vars: BTreeMap<String, String> = BTreeMap::new();
        let secrets = vec![("KUBECONFIG".to_string(), b"k".to_vec())];
        let cases = [
            (
                Some(object("cfg", &["NOPE"])),
                None,
                "`config_map` names `NOPE`, which is not a variable of `production`",
            ),
            (
                None,
                Some(object("s", &["KUBECONFIG"])),
                "`secret` names `KUBECONFIG`, the kubeconfig: it is not given to the cluster",
            ),
            (
                None,
                Some(object("s", &["MISSING"])),
                "`secret` names `MISSING`, which is not a secret of `production`",
            ),
            (
                Some(object("Shop_Config", &[])),
                None,
                "`config_map` of the kubernetes target: `Shop_Config` is not a Kubernetes object name",
            ),
        ];
        for (cm, sec, want) in cases {
            let got = env_objects(&spec(cm.as_ref(), sec.as_ref(), &vars, &secrets)).map(|_| ());
            assert_eq!(got, Err(want.to_string()));
        }
    }
}
