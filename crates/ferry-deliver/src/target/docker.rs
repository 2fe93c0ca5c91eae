//! The `docker` target: the release's image, by digest, in one container per release and
//! environment (labelled `ferry.deploy`), ports published on 127.0.0.1 by default. The
//! container of the release live before is kept stopped, for an instant rollback.

use std::sync::Arc;
use std::time::Duration;

use ferry_config::model::EnvVars;
use ferry_exec::DockerExecutor;
use ferry_exec::Logins;
use ferry_exec::docker::apps::AppSpec;
use ferry_store::{Deployment, SecretKey, Store};

use super::{DeployContext, Target, WorkloadCheck, scope};
use crate::log::DeployLog;

#[derive(educe::Educe)]
#[educe(Debug)]
pub struct DockerTarget {
    /// The job that built the image to run (default: the release's only image).
    pub image: Option<String>,
    pub ports: Vec<String>,
    #[educe(Debug(ignore))]
    pub env: EnvVars,
    #[educe(Debug(ignore))]
    pub volumes: Vec<String>,
    #[educe(Debug(ignore))]
    pub command: Option<Vec<String>>,
    /// Directories that may be mounted (see [`super::mounts`]).
    pub mounts: Arc<Vec<super::mounts::Allowed>>,
    /// `<data>/deploy`: where containers' config files are kept.
    pub root: std::path::PathBuf,
    /// Where containers' secret files are kept (in memory).
    pub secrets_root: std::path::PathBuf,
    #[educe(Debug(ignore))]
    pub docker: Option<Arc<DockerExecutor>>,
    /// To open the repository's registry logins with.
    #[educe(Debug(ignore))]
    pub store: Store,
    #[educe(Debug(ignore))]
    pub key: SecretKey,
}

/// Files mounted read-only: (host path, container path).
type Mounts = Vec<(String, String)>;

impl DockerTarget {
    fn docker(&self) -> Result<&Arc<DockerExecutor>, String> {
        self.docker
            .as_ref()
            .ok_or_else(|| "the `docker` target needs Docker, which is not available here".into())
    }

    /// The container's configuration for its environment: the files of `config:`
    /// (kept on disk beside the environment, per release) and each secret as a file
    /// (kept in memory, `0444` in a directory only the server enters), mounted
    /// read-only; and the environment's named volumes. (host, container) mounts and
    /// `volume:path` binds.
    fn config_of(&self, ctx: &mut DeployContext<'_>) -> Result<(Mounts, Vec<String>), String> {
        use std::os::unix::fs::PermissionsExt as _;
        let mut mounts = Vec::new();
        let here = crate::layout::component(&ctx.release.name);
        let rendered = super::config::render(&ctx.config, ctx)?;
        let (dir, secrets) = self.kept_dirs(ctx.deployment, &ctx.release.name);
        let _ = std::fs::remove_dir_all(&dir);
        if !rendered.is_empty() {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for (i, (path, content)) in rendered.iter().enumerate() {
                let host = dir.join(i.to_string());
                std::fs::write(&host, content).map_err(|e| format!("{}: {e}", host.display()))?;
                mounts.push((host.display().to_string(), path.clone()));
            }
        }
        let _ = std::fs::remove_dir_all(&secrets);
        if !ctx.secrets.is_empty() {
            std::fs::create_dir_all(&secrets).map_err(|e| e.to_string())?;
            std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| e.to_string())?;
            let inside = ctx
                .config
                .secrets_dir
                .clone()
                .unwrap_or_else(|| super::config::SECRETS_DIR.to_string());
            for (secret, value) in &ctx.secrets {
                let host = secrets.join(secret);
                std::fs::write(&host, value).map_err(|e| format!("secret {secret}: {e}"))?;
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o444))
                    .map_err(|e| e.to_string())?;
                mounts.push((
                    host.display().to_string(),
                    format!("{}/{secret}", inside.trim_end_matches('/')),
                ));
            }
        }
        let named: Vec<String> = ctx
            .config
            .volumes
            .iter()
            .map(|(name, path)| format!("{}:{path}", volume_name(ctx.deployment, name)))
            .collect();
        if !mounts.is_empty() || !named.is_empty() {
            ctx.log.line(&format!(
                "config: {} file(s), {} secret file(s), {} named volume(s) (release {here})",
                rendered.len(),
                ctx.secrets.len(),
                named.len()
            ));
        }
        Ok((mounts, named))
    }

    /// Where the config files (beside the environment) and the secret files (in
    /// memory) of a release's container are kept, for as long as the container is.
    fn kept_dirs(
        &self,
        dep: &Deployment,
        release: &str,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let at = |root: &std::path::Path| {
            crate::layout::environment_dir(root, &dep.repository_id, &dep.environment)
                .join("containers")
                .join(crate::layout::component(release))
        };
        (at(&self.root), at(&self.secrets_root))
    }

    /// Removes a container and what was kept for it.
    async fn remove(
        &self,
        docker: &DockerExecutor,
        dep: &Deployment,
        app: &ferry_exec::docker::apps::App,
    ) {
        docker.remove_app(&app.id).await;
        let (config, secrets) = self.kept_dirs(dep, &app.release);
        let _ = std::fs::remove_dir_all(config);
        let _ = std::fs::remove_dir_all(secrets);
    }
}

/// The Docker volume of an environment's named volume `name`: its own for each
/// repository and environment (`ferry-ENV-NAME-<hash of the repository and
/// environment>`), kept across releases.
pub fn volume_name(dep: &Deployment, name: &str) -> String {
    use sha2::Digest as _;
    let hash = hex::encode(&sha2::Sha256::digest(scope(dep).as_bytes())[..6]);
    let env: String = dep
        .environment
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("ferry-{env}-{name}-{hash}")
}

/// The container's name: `ferry-ENV-RELEASE-N`, with what Docker refuses replaced.
fn container_name(dep: &Deployment, release: &str) -> String {
    format!(
        "ferry-{}-{}-{}",
        dep.environment,
        release.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.',
            "-"
        ),
        dep.number
    )
}

#[async_trait::async_trait]
impl Target for DockerTarget {
    async fn deploy(&self, ctx: &mut DeployContext<'_>) -> Result<(), String> {
        let docker = self.docker()?;
        let release = ctx.release;
        let wanted = release.images.iter().find(|i| match &self.image {
            Some(job) => i.job == *job || i.job.starts_with(&format!("{job} (")),
            None => true,
        });
        let wanted =
            wanted.ok_or_else(|| format!("release {} has no image to run", release.name))?;
        let mut mapped = Vec::new();
        for p in &self.ports {
            let text = ctx.eval(p)?;
            mapped.push(
                ferry_config::port_mapping(&text)
                    .ok_or_else(|| format!("`{text}` is not a port mapping"))?,
            );
        }
        // The container's own environment: the image keeps its PATH and HOME.
        let mut app_env: Vec<(String, String)> = ctx
            .env
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "PATH" | "HOME" | "FERRY_RELEASE_DIR" | "FERRY_SECRETS_DIR"
                )
            })
            .cloned()
            .collect();
        for (k, v) in &self.env {
            app_env.push((k.clone(), ctx.eval(v)?));
        }
        let mut vols = Vec::new();
        for v in &self.volumes {
            let volume = ctx.eval(v)?;
            super::mounts::check(&volume, &self.mounts)?;
            vols.push(volume);
        }
        let scope = ctx.scope();
        let apps = docker.apps(&scope).await?;
        if let Some(same) = apps.iter().find(|a| a.release == release.name) {
            // This release ran here before (a rollback): start it again at once.
            for other in apps.iter().filter(|a| a.running && a.id != same.id) {
                docker.stop_app(&other.id).await;
            }
            ctx.log.line(&format!(
                "starting the kept container of release {} again",
                release.name
            ));
            if !same.running {
                docker.start_app(&same.id).await?;
            }
            return Ok(());
        }
        // Two containers cannot hold one host port: with published ports the old one
        // stops (and is kept) before the new one starts.
        if !mapped.is_empty() {
            for old in apps.iter().filter(|a| a.running) {
                ctx.log.line(&format!(
                    "stopping the container of release {} (kept)",
                    old.release
                ));
                docker.stop_app(&old.id).await;
            }
        }
        let name = container_name(ctx.deployment, &release.name);
        let (files, named) = self.config_of(ctx)?;
        vols.extend(named);
        ctx.log
            .line(&format!("running {} as {name}", wanted.reference()));
        let logins = self
            .store
            .registry_credentials(&self.key, &ctx.deployment.repository_id)
            .await
            .map_err(|e| format!("cannot open the registry logins: {e}"))?;
        docker
            .run_app(
                &AppSpec {
                    image: wanted.reference(),
                    name,
                    scope,
                    release: release.name.clone(),
                    env: app_env,
                    ports: mapped,
                    volumes: vols,
                    files,
                    command: self.command.clone(),
                },
                &Logins::new(logins),
            )
            .await?;
        Ok(())
    }

    async fn alive(&self, dep: &Deployment, release: &str) -> Option<String> {
        let docker = self.docker.as_ref()?;
        let app = docker
            .apps(&scope(dep))
            .await
            .ok()?
            .into_iter()
            .find(|x| x.release == release);
        match app {
            Some(app) => docker.app_exit(&app.id).await,
            None => Some("the container is gone".into()),
        }
    }

    async fn workload(
        &self,
        dep: &Deployment,
        release: &str,
    ) -> Option<crate::supervisor::Workload> {
        let docker = self.docker.as_ref()?;
        let app = docker
            .apps(&scope(dep))
            .await
            .ok()?
            .into_iter()
            .find(|x| x.release == release)?;
        let u = docker.app_usage(&app.id).await?;
        Some(crate::supervisor::Workload {
            cpu_seconds: u.cpu_seconds,
            memory_bytes: u.memory_bytes,
            restarts: u.restarts,
            started_at: u.started_at,
        })
    }

    async fn watch(&self, dep: &Deployment, release: &str) -> WorkloadCheck {
        let Some(docker) = &self.docker else {
            return super::never_dies();
        };
        let app = docker
            .apps(&scope(dep))
            .await
            .ok()
            .and_then(|a| a.into_iter().find(|x| x.release == release));
        let Some(app) = app else {
            return Arc::new(|| Some("the container is gone".to_string()));
        };
        let state: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let (docker, watch) = (docker.clone(), Arc::downgrade(&state));
        // Polled in the background (the check must not wait) for as long as the check
        // is held.
        tokio::spawn(async move {
            loop {
                let gone = docker.app_exit(&app.id).await;
                let Some(watch) = watch.upgrade() else { break };
                if let Ok(mut w) = watch.lock() {
                    *w = gone;
                }
                drop(watch);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        Arc::new(move || state.lock().ok().and_then(|s| s.clone()))
    }

    /// After a release goes live, the others stop and only the one before it is kept
    /// (for an instant rollback); after it fails, its container goes (with its output
    /// copied into the deployment's log first).
    async fn tidy(&self, dep: &Deployment, release: &str, failed: bool, log: &mut DeployLog) {
        let Some(docker) = &self.docker else { return };
        let Ok(apps) = docker.apps(&scope(dep)).await else {
            return;
        };
        if failed {
            for app in apps.iter().filter(|a| a.release == release) {
                log.line("the container's output:");
                log.output(&docker.app_logs(&app.id).await);
                self.remove(docker, dep, app).await;
            }
            return;
        }
        let mut kept = 0;
        for app in apps.iter().filter(|a| a.release != release) {
            if app.running {
                docker.stop_app(&app.id).await;
            }
            kept += 1;
            if kept > 1 {
                self.remove(docker, dep, app).await;
            }
        }
    }

    fn replaces_live(&self) -> bool {
        true
    }

    /// After a reboot the secret files (in memory) are gone, and a container whose
    /// mounts are missing does not start: they are written again, and it is started.
    async fn restore(&self, ctx: &mut DeployContext<'_>) -> Result<(), String> {
        let docker = self.docker()?.clone();
        let apps = docker.apps(&ctx.scope()).await?;
        let Some(app) = apps.into_iter().find(|a| a.release == ctx.release.name) else {
            return Ok(());
        };
        let (_, secrets) = self.kept_dirs(ctx.deployment, &ctx.release.name);
        if !ctx.secrets.is_empty() && !secrets.is_dir() {
            ctx.log
                .line("writing the container's secret and config files again");
            self.config_of(ctx)?;
        }
        if !app.running {
            ctx.log.line("starting the container again");
            docker.start_app(&app.id).await?;
        }
        Ok(())
    }
}
