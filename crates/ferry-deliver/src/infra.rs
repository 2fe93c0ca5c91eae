//! Terraform per environment (issue 14): an environment's `infra: { dir, vars }` is
//! Terraform code of the repository, sealed into each release (under
//! [`SEALED_UNDER`]) so that the same code is promoted from one environment to the next.
//! Before a deployment goes out, the deliverer runs, in the release's copy of the module:
//! `terraform init` against Ferry's own state backend (the server's
//! `/api/v1/infra/{repo}/{environment}/state`, with a credential of this deployment
//! only), `terraform plan -out` (the plan file is kept sealed, with its SHA-256, a
//! summary from its machine-readable output (`-json`), and the state version it was
//! made against),
//! then — once the plan may go (see [`gate`]) — `terraform apply` of exactly that
//! plan, whose outputs (read from the state it wrote to Ferry) are for the deploy and
//! its probes
//! (`${{ infra.outputs.NAME }}`). Every command's output goes to the deployment's log,
//! masked.
//!
//! The pure parts (what a plan changes, what the outputs are, which approvals a plan
//! needs) are functions of their inputs, tested on their own; running Terraform is
//! [`Session`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferry_config::delivery::{ApprovalRule, Policy};
use ferry_exec::OutputSink;
use ferry_exec::sandbox::Spawner;
use ferry_store::DeploymentKind;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::log::DeployLog;

pub mod init;
pub use init::InitCache;

/// Where a release keeps the Terraform code of its environments: `<this>/<dir>/…`.
pub const SEALED_UNDER: &str = ".ferry/infra";
/// The name of the job the sealed Terraform files are listed under in a release.
pub const SEALED_JOB: &str = "infra";
/// The context states are sealed under (by the server's state backend).
pub const STATE_CONTEXT: &str = "infra-state";
/// The context plan files are sealed under.
pub const PLAN_CONTEXT: &str = "infra-plan";
/// The context outputs are sealed under.
pub const OUTPUTS_CONTEXT: &str = "infra-outputs";
/// The file Ferry adds to the module to make its own backend the module's.
pub const BACKEND_FILE: &str = "ferry_backend_override.tf";
/// The saved plan's file name in the module's directory, while Terraform needs it.
const PLAN_FILE: &str = "ferry.tfplan";

/// The release path of the module in `dir` (relative to the repository's root).
pub fn sealed_path(dir: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() || dir == "." {
        SEALED_UNDER.to_string()
    } else {
        format!("{SEALED_UNDER}/{dir}")
    }
}

/// What a plan changes, by resource address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlanSummary {
    /// Resources to create.
    pub create: Vec<String>,
    /// Resources to change in place.
    pub update: Vec<String>,
    /// Resources to destroy and create again.
    pub replace: Vec<String>,
    /// Resources to destroy.
    pub delete: Vec<String>,
    /// Outputs whose value changes.
    pub outputs: Vec<String>,
}

impl PlanSummary {
    /// The plan destroys something (a deletion or a replacement).
    pub fn destroys(&self) -> bool {
        !self.delete.is_empty() || !self.replace.is_empty()
    }

    /// The plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.update.is_empty()
            && self.replace.is_empty()
            && self.delete.is_empty()
            && self.outputs.is_empty()
    }

    /// `2 to add, 0 to change, 1 to replace, 0 to destroy`.
    pub fn counts(&self) -> String {
        format!(
            "{} to add, {} to change, {} to replace, {} to destroy",
            self.create.len(),
            self.update.len(),
            self.replace.len(),
            self.delete.len()
        )
    }
}

/// The module's outputs after an apply (from the state it wrote): each value as
/// text (a string as it is, anything else as compact JSON), and whether it is
/// sensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    pub values: BTreeMap<String, String>,
    pub sensitive: Vec<String>,
}

impl Outputs {
    /// The values of sensitive outputs (to mask).
    pub fn secret_values(&self) -> impl Iterator<Item = &str> {
        self.sensitive
            .iter()
            .filter_map(|n| self.values.get(n).map(String::as_str))
    }
}

/// Reads outputs as Terraform writes them (`terraform output -json`, a state's
/// `outputs`).
pub fn outputs(json: &serde_json::Value) -> Result<Outputs, String> {
    let map = json
        .as_object()
        .ok_or("Terraform's outputs are not an object")?;
    let mut out = Outputs::default();
    for (name, o) in map {
        let value = match o.get("value") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        };
        if o.get("sensitive").and_then(|s| s.as_bool()) == Some(true) {
            out.sensitive.push(name.clone());
        }
        out.values.insert(name.clone(), value);
    }
    Ok(out)
}

/// The approvals a plan needs before it is applied, if any: the environment's own
/// rule for a deployment that needs approval there (every one but a rollback, which
/// had them when it went live first, unless its plan destroys); and, where the
/// environment's policy asks for none, one approval of an approver when the plan
/// destroys anything (unless the environment says `destroy: allow`) or is a destroy of
/// the whole environment.
pub fn gate(
    policy: &Policy,
    kind: DeploymentKind,
    summary: &PlanSummary,
    destroy_plan: bool,
    destroy_needs_approval: bool,
) -> Option<ApprovalRule> {
    let destroying = destroy_plan || (summary.destroys() && destroy_needs_approval);
    match policy {
        Policy::Approval(rule) if kind != DeploymentKind::Rollback || destroying => {
            Some(rule.clone())
        }
        Policy::Approval(_) => None,
        _ => destroying.then(|| ApprovalRule {
            required: 1,
            from: Vec::new(),
            not: Vec::new(),
            expires: None,
        }),
    }
}

/// How Terraform reaches Ferry's state backend: the server's own address (given once
/// the server listens).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT` (or `https://…`): the server's own port, on this host.
    pub base: String,
    /// Over TLS, the certificate is not checked: the connection goes to the server's
    /// own port on this host (its certificate names the server's public name, which
    /// need not be this host's), and the credential is good for one environment for
    /// one deployment only.
    pub skip_verify: bool,
}

/// The `terraform` program and the backend it is pointed at.
#[derive(Debug, Clone)]
pub struct Terraform {
    pub program: PathBuf,
    endpoint: Arc<OnceLock<Endpoint>>,
}

impl Default for Terraform {
    fn default() -> Self {
        Self {
            program: PathBuf::from("terraform"),
            endpoint: Arc::default(),
        }
    }
}

impl Terraform {
    /// Runs `program` (`terraform` on the `PATH` by default).
    pub fn with_program(mut self, program: PathBuf) -> Self {
        self.program = program;
        self
    }

    /// Tells where the state backend is (once: the first address given stays).
    pub fn set_endpoint(&self, endpoint: Endpoint) {
        let _ = self.endpoint.set(endpoint);
    }

    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.get()
    }
}

/// The environment variables that point Terraform's `http` backend at Ferry's, with a
/// deployment's credential (nothing of it is written to disk).
pub fn backend_env(
    endpoint: &Endpoint,
    repository: &str,
    environment: &str,
    password: &str,
) -> Vec<(String, String)> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let address = format!(
        "{}/api/v1/infra/{}/{}/state",
        endpoint.base.trim_end_matches('/'),
        utf8_percent_encode(repository, NON_ALPHANUMERIC),
        utf8_percent_encode(environment, NON_ALPHANUMERIC)
    );
    let mut env = vec![
        ("TF_HTTP_ADDRESS".to_string(), address.clone()),
        ("TF_HTTP_LOCK_ADDRESS".to_string(), address.clone()),
        ("TF_HTTP_UNLOCK_ADDRESS".to_string(), address),
        ("TF_HTTP_LOCK_METHOD".to_string(), "LOCK".to_string()),
        ("TF_HTTP_UNLOCK_METHOD".to_string(), "UNLOCK".to_string()),
        ("TF_HTTP_USERNAME".to_string(), "ferry".to_string()),
        ("TF_HTTP_PASSWORD".to_string(), password.to_string()),
    ];
    if endpoint.skip_verify {
        env.push(("TF_HTTP_SKIP_CERT_VERIFICATION".into(), "true".into()));
    }
    env
}

/// The override file that makes Ferry's backend the module's, replacing any backend
/// the module names (its settings come from [`backend_env`]).
pub const BACKEND_OVERRIDE: &str = "# Written by Ferry: the state of this environment is kept by Ferry.\n\
terraform {\n  backend \"http\" {}\n}\n";

/// A new password for a deployment's credential, and its hash as the server checks it.
pub fn new_credential() -> (String, String) {
    use rand::RngCore as _;
    use sha2::Digest as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let password = hex::encode(bytes);
    let hash = hex::encode(sha2::Sha256::digest(password.as_bytes()));
    (password, hash)
}

/// `TF_VAR_*` for the module: every variable and secret of the environment under its
/// own name, then the environment's `infra.vars` (which win).
pub fn tf_vars(
    vars: &BTreeMap<String, String>,
    secrets: &[(String, Vec<u8>)],
    infra_vars: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in vars {
        out.insert(k.clone(), v.clone());
    }
    for (k, v) in secrets {
        out.insert(k.clone(), String::from_utf8_lossy(v).into_owned());
    }
    for (k, v) in infra_vars {
        out.insert(k.clone(), v.clone());
    }
    out.into_iter()
        .map(|(k, v)| (format!("TF_VAR_{k}"), v))
        .collect()
}

/// Passes output to the deployment's log and keeps its last bytes, to tell one
/// failure from another.
struct Tee<'a> {
    log: &'a mut DeployLog,
    tail: Vec<u8>,
}

impl OutputSink for Tee<'_> {
    fn chunk(&mut self, data: &[u8]) {
        self.log.chunk(data);
        self.tail.extend_from_slice(data);
        const KEEP: usize = 64 << 10;
        if self.tail.len() > KEEP {
            let cut = self.tail.len() - KEEP;
            self.tail.drain(..cut);
        }
    }
}

/// Why a Terraform command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub reason: String,
    /// What it printed last.
    pub tail: String,
}

impl Failed {
    /// Terraform refused a saved plan made against an older state.
    pub fn stale_plan(&self) -> bool {
        self.tail.contains("Saved plan is stale")
    }

    /// Terraform could not take the state's lock (another holds it): nothing changed.
    pub fn lock_refused(&self) -> bool {
        self.tail.contains("Error acquiring the state lock")
    }
}

/// Terraform run in one module directory for one deployment.
pub struct Session<'a> {
    pub program: &'a Path,
    /// The release's directory. The release's code (Terraform's providers and
    /// provisioners among it) may write there, links too: the server's own reads and
    /// writes in it never follow a link out of it (see [`Session::beneath`]).
    pub root: PathBuf,
    /// The module's directory, relative to `root`.
    pub module: PathBuf,
    /// The module's directory in the repository (`infra.dir`), to name files by.
    pub source: String,
    /// The whole environment of every command, with a credential that reads and
    /// locks the state (a plan runs the release's code before anyone approved it).
    pub env: Vec<(String, String)>,
    /// The environment of `apply`, with a credential that may write the state.
    pub apply_env: Vec<(String, String)>,
    pub spawner: Option<&'a Spawner>,
    pub timeout: Option<Duration>,
    pub stop: CancellationToken,
    /// Masks what failure reasons quote of Terraform's output.
    pub masker: ferry_exec::mask::Masker,
    /// The backend's address Terraform must use (checked after `init`).
    pub address: String,
    /// `init` ran in this session (it is not run again).
    pub initialized: std::sync::atomic::AtomicBool,
    /// `init`'s work was put back from the environment's kept copy (see [`init`]).
    pub restored: std::sync::atomic::AtomicBool,
    /// Where the environment keeps what `init` made (`None`: `init` runs every time).
    pub init_cache: Option<InitCache>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not its environment: it holds the credential and the secrets.
        f.debug_struct("Session")
            .field("program", &self.program)
            .field("root", &self.root)
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

/// Reads Terraform's machine-readable output (`-json`, one JSON object a line): each
/// message goes to the log as Terraform would say it (errors with their place, as
/// [`errors`] reads them), and what the plan changes is kept.
struct JsonUi<'a> {
    log: &'a mut DeployLog,
    line: Vec<u8>,
    summary: PlanSummary,
    tail: Vec<u8>,
}

impl JsonUi<'_> {
    fn say(&mut self, text: &str) {
        self.log.chunk(text.as_bytes());
        self.tail.extend_from_slice(text.as_bytes());
        const KEEP: usize = 64 << 10;
        if self.tail.len() > KEEP {
            let cut = self.tail.len() - KEEP;
            self.tail.drain(..cut);
        }
    }

    fn message(&mut self, raw: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(raw) else {
            let text = format!("{}\n", String::from_utf8_lossy(raw));
            self.say(&text);
            return;
        };
        let said = v
            .get("@message")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        let mut text = format!("{said}\n");
        match v.get("type").and_then(|t| t.as_str()) {
            Some("planned_change") => {
                let addr = v
                    .pointer("/change/resource/addr")
                    .and_then(|a| a.as_str())
                    .unwrap_or_default()
                    .to_string();
                match v.pointer("/change/action").and_then(|a| a.as_str()) {
                    Some("create") => self.summary.create.push(addr),
                    Some("update") => self.summary.update.push(addr),
                    Some("replace") => self.summary.replace.push(addr),
                    Some("delete") => self.summary.delete.push(addr),
                    _ => {} // no-op, read, move, remove (forget), import
                }
            }
            Some("outputs") => {
                if let Some(map) = v.get("outputs").and_then(|o| o.as_object()) {
                    for (name, o) in map {
                        let action = o.get("action").and_then(|a| a.as_str());
                        if action.is_some_and(|a| a != "noop") {
                            self.summary.outputs.push(name.clone());
                        }
                    }
                }
            }
            Some("diagnostic") => {
                if let Some(file) = v
                    .pointer("/diagnostic/range/filename")
                    .and_then(|f| f.as_str())
                {
                    let line = v
                        .pointer("/diagnostic/range/start/line")
                        .and_then(|l| l.as_u64())
                        .unwrap_or(0);
                    text.push_str(&format!("  on {file} line {line}\n"));
                }
                if let Some(detail) = v.pointer("/diagnostic/detail").and_then(|d| d.as_str())
                    && !detail.is_empty()
                {
                    text.push_str(&format!("  {detail}\n"));
                }
            }
            _ => {}
        }
        self.say(&text);
    }
}

impl OutputSink for JsonUi<'_> {
    fn chunk(&mut self, data: &[u8]) {
        self.line.extend_from_slice(data);
        while let Some(at) = self.line.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.line.drain(..=at).collect();
            self.message(&raw[..raw.len() - 1]);
        }
    }
}

fn failed(reason: impl Into<String>) -> Failed {
    Failed {
        reason: reason.into(),
        tail: String::new(),
    }
}

impl Session<'_> {
    /// The module's directory, for the server's own reads and writes: opened beneath
    /// the release's directory, so that no link the release's code made leads out.
    fn beneath(&self) -> Result<cap_std::fs::Dir, Failed> {
        let root = cap_std::fs::Dir::open_ambient_dir(&self.root, cap_std::ambient_authority())
            .map_err(|e| failed(format!("cannot open {}: {e}", self.root.display())))?;
        root.open_dir(&self.module)
            .map_err(|e| failed(format!("cannot open the module's directory: {e}")))
    }

    /// Writes `name` in the module's directory afresh (a link there is replaced, never
    /// followed).
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), Failed> {
        let dir = self.beneath()?;
        let _ = dir.remove_file(name);
        let _ = dir.remove_dir_all(name);
        let mut f = dir
            .open_with(
                name,
                cap_std::fs::OpenOptions::new().write(true).create_new(true),
            )
            .map_err(|e| failed(format!("cannot write {name}: {e}")))?;
        use std::io::Write as _;
        f.write_all(bytes)
            .map_err(|e| failed(format!("cannot write {name}: {e}")))
    }

    /// Reads `name` of the module's directory (a regular file beneath the release's).
    fn take(&self, name: &str) -> Result<Vec<u8>, Failed> {
        let dir = self.beneath()?;
        let meta = dir
            .symlink_metadata(name)
            .map_err(|e| failed(format!("terraform wrote no {name}: {e}")))?;
        if !meta.is_file() {
            return Err(failed(format!("{name} is not a file")));
        }
        dir.read(name)
            .map_err(|e| failed(format!("cannot read {name}: {e}")))
    }

    /// Removes `name` from the module's directory, if there.
    fn remove(&self, name: &str) {
        if let Ok(dir) = self.beneath() {
            let _ = dir.remove_file(name);
        }
    }

    /// Runs `terraform ARGS` (a shell word list: `$FERRY_TERRAFORM` is the program),
    /// its output to `log`.
    pub async fn run(&self, args: &str, log: &mut DeployLog) -> Result<(), Failed> {
        self.run_as(args, log, false).await
    }

    /// [`Self::run`], with the credential that may write the state when `write`.
    async fn run_as(&self, args: &str, log: &mut DeployLog, write: bool) -> Result<(), Failed> {
        let mut tee = Tee {
            log,
            tail: Vec::new(),
        };
        let outcome = self
            .spawn(&format!("\"$FERRY_TERRAFORM\" {args}"), &mut tee, write)
            .await;
        let tail = String::from_utf8_lossy(&self.masker.mask(&tee.tail)).into_owned();
        tee.log.flush();
        self.judge(args, outcome, tail)
    }

    async fn spawn(
        &self,
        script: &str,
        sink: &mut dyn OutputSink,
        write: bool,
    ) -> ferry_exec::StepOutcome {
        let mut env = if write {
            self.apply_env.clone()
        } else {
            self.env.clone()
        };
        env.push(("FERRY_TERRAFORM".into(), self.program.display().to_string()));
        let step = ferry_exec::StepSpec {
            script: script.to_string(),
            env,
            cwd: self.root.join(&self.module),
            timeout: self.timeout,
            clear_env: true,
        };
        let force = CancellationToken::new();
        let mut group = 0;
        let outcome = ferry_exec::process::run_in(
            &step,
            self.spawner,
            sink,
            &self.stop,
            Duration::from_secs(10),
            &force,
            |pgid| group = pgid,
        )
        .await;
        ferry_exec::process::signal_group(group, nix::sys::signal::Signal::SIGKILL);
        if let Some(spawner) = self.spawner {
            spawner.sweep().await;
        }
        outcome
    }

    /// What a command's outcome means: `Ok`, or why it failed (Terraform's errors,
    /// masked, at their place in the repository).
    fn judge(
        &self,
        args: &str,
        outcome: ferry_exec::StepOutcome,
        tail: String,
    ) -> Result<(), Failed> {
        let what = args.split_whitespace().next().unwrap_or("terraform");
        let reason = match outcome {
            ferry_exec::StepOutcome::Exited(0) => return Ok(()),
            ferry_exec::StepOutcome::Exited(code) => {
                let said = errors(&tail, &self.source);
                if said.is_empty() {
                    format!("terraform {what} failed (exit code {code})")
                } else {
                    format!(
                        "terraform {what} failed (exit code {code}): {}",
                        said.join("; ")
                    )
                }
            }
            ferry_exec::StepOutcome::TimedOut(after) => {
                format!("terraform {what} timed out after {}s", after.as_secs())
            }
            ferry_exec::StepOutcome::Cancelled => format!("terraform {what} was cancelled"),
            ferry_exec::StepOutcome::Error(e) => {
                format!("terraform {what} could not start: {e}")
            }
        };
        Err(Failed { reason, tail })
    }

    /// `terraform init` against Ferry's backend. Files of the module that would put
    /// another backend in its place (override files naming a `backend` or `cloud`) are
    /// refused, and what `init` configured is checked to be Ferry's backend.
    pub async fn init(&self, log: &mut DeployLog) -> Result<(), Failed> {
        self.init_with(log, true).await
    }

    /// Everything `init` reads from files (see [`init`]): the module's tree, what it
    /// reads in `HOME` (the release's directory) and the CLI configuration file named
    /// by `TF_CLI_CONFIG_FILE`; `None` when one is a link (nothing is kept then).
    fn init_inputs(&self, module: &cap_std::fs::Dir) -> Option<init::Files> {
        let mut files = init::tree_inputs(module, "").ok()??;
        let root =
            cap_std::fs::Dir::open_ambient_dir(&self.root, cap_std::ambient_authority()).ok()?;
        files.extend(init::home_inputs(&root).ok()??);
        if let Some((_, config)) = self.env.iter().find(|(k, _)| k == "TF_CLI_CONFIG_FILE") {
            let path = self.root.join(&self.module).join(config);
            let bytes = match path.strip_prefix(&self.root) {
                // In the release: read beneath it.
                Ok(inside) => {
                    let mut bytes = Vec::new();
                    use std::io::Read as _;
                    root.open(inside)
                        .ok()?
                        .take(1 << 20)
                        .read_to_end(&mut bytes)
                        .ok()?;
                    bytes
                }
                Err(_) => init::host_file(&path),
            };
            files.push(("$TF_CLI_CONFIG_FILE".into(), bytes));
        }
        Some(files)
    }

    /// [`Self::init`]; without `use_cache`, `init` runs even where its work is kept.
    async fn init_with(&self, log: &mut DeployLog, use_cache: bool) -> Result<(), Failed> {
        use std::sync::atomic::Ordering;
        if self.initialized.load(Ordering::Acquire) {
            return Ok(());
        }
        let dir = self.beneath()?;
        let mut names = Vec::new();
        if let Ok(entries) = dir.entries() {
            for e in entries.flatten() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        for name in names {
            let is_override = name.ends_with("_override.tf")
                || name == "override.tf"
                || name.ends_with("_override.tf.json")
                || name == "override.tf.json";
            if !is_override || name == BACKEND_FILE {
                continue;
            }
            let text = dir.read_to_string(&name).unwrap_or_default();
            if text.contains("backend") || text.contains("cloud") {
                return Err(failed(format!(
                    "{}/{name} may name a `backend` or `cloud`: Ferry keeps this \
                     environment's state, so no override file may replace its backend",
                    self.source.trim_end_matches('/')
                )));
            }
        }
        self.put(BACKEND_FILE, BACKEND_OVERRIDE.as_bytes())?;
        // `init`'s work is Ferry's to make (or put back): what the release brought
        // under its name is never used.
        let _ = dir.remove_dir_all(init::TERRAFORM_DIR);
        let _ = dir.remove_file(init::TERRAFORM_DIR);
        let cached = match &self.init_cache {
            Some(cache) if use_cache => self.init_inputs(&dir).map(|files| {
                let fp = init::fingerprint(
                    &cache.key,
                    self.program,
                    BACKEND_OVERRIDE,
                    &files,
                    &self.env,
                );
                (cache, fp)
            }),
            _ => None,
        };
        let restored = match &cached {
            Some((cache, fp)) => match cache.restore(fp, &dir) {
                Ok(restored) => restored,
                Err(e) => {
                    tracing::warn!("cannot put back what terraform init made before: {e}");
                    false
                }
            },
            None => false,
        };
        self.restored.store(restored, Ordering::Release);
        if restored {
            log.line(
                "terraform: init skipped: nothing it reads changed since an earlier \
                 deployment of this environment, whose .terraform/ is used",
            );
        } else {
            self.run("init -input=false -no-color -reconfigure", log)
                .await?;
        }
        // What Terraform keeps of its backend: Ferry's, at Ferry's address.
        let dir = self.beneath()?;
        let kept = dir
            .read(".terraform/terraform.tfstate")
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let backend = kept.as_ref().and_then(|v| v.get("backend"));
        let kind = backend.and_then(|b| b.get("type")).and_then(|t| t.as_str());
        let address = backend
            .and_then(|b| b.pointer("/config/address"))
            .and_then(|a| a.as_str());
        if kind != Some("http") || address.is_some_and(|a| a != self.address) {
            return Err(failed(
                "after `terraform init` the module's backend is not Ferry's: Ferry keeps \
                 this environment's state (remove the backend the module names)",
            ));
        }
        // Kept before `plan` runs any of the release's code.
        if let Some((cache, fp)) = &cached
            && !restored
            && let Err(e) = cache.keep(fp, &dir)
        {
            tracing::warn!("cannot keep what terraform init made: {e}");
        }
        self.initialized.store(true, Ordering::Release);
        Ok(())
    }

    /// `terraform plan -json -out` (of a destroy with `destroy`): the plan file's bytes
    /// and what it changes (read from Terraform's machine-readable output as it plans:
    /// no second command).
    pub async fn plan(
        &self,
        destroy: bool,
        log: &mut DeployLog,
    ) -> Result<(Vec<u8>, PlanSummary), Failed> {
        use std::sync::atomic::Ordering;
        match self.plan_once(destroy, log).await {
            // What `init` made for an earlier deployment may not fit (a local module
            // outside the module's directory asks for a new provider): `init` runs,
            // and the plan is made again.
            Err(_) if self.restored.swap(false, Ordering::AcqRel) => {
                log.line(
                    "terraform: the plan failed with the kept .terraform/: init runs, then \
                     the plan again",
                );
                if let Some(cache) = &self.init_cache {
                    cache.clear();
                }
                self.initialized.store(false, Ordering::Release);
                self.init_with(log, false).await?;
                self.plan_once(destroy, log).await
            }
            other => other,
        }
    }

    async fn plan_once(
        &self,
        destroy: bool,
        log: &mut DeployLog,
    ) -> Result<(Vec<u8>, PlanSummary), Failed> {
        self.remove(PLAN_FILE);
        let mode = if destroy { " -destroy" } else { "" };
        // Without the state's lock: Ferry keeps each version whole (a plan reads one or
        // the next, never half of one), deployments of an environment never overlap,
        // and a plan is applied only if the state is still the version it was made
        // against; the apply takes the lock.
        let args = format!("plan -input=false -lock=false -json{mode} -out={PLAN_FILE}");
        let mut ui = JsonUi {
            log,
            line: Vec::new(),
            summary: PlanSummary::default(),
            tail: Vec::new(),
        };
        let outcome = self
            .spawn(&format!("\"$FERRY_TERRAFORM\" {args}"), &mut ui, false)
            .await;
        if !ui.line.is_empty() {
            let rest = std::mem::take(&mut ui.line);
            ui.message(&rest);
        }
        ui.log.flush();
        let tail = String::from_utf8_lossy(&self.masker.mask(&ui.tail)).into_owned();
        let mut summary = std::mem::take(&mut ui.summary);
        let planned = self.judge(&args, outcome, tail);
        let bytes = self.take(PLAN_FILE);
        self.remove(PLAN_FILE);
        planned?;
        for list in [
            &mut summary.create,
            &mut summary.update,
            &mut summary.replace,
            &mut summary.delete,
            &mut summary.outputs,
        ] {
            list.sort();
        }
        Ok((bytes?, summary))
    }

    /// `terraform apply` of exactly the saved plan `bytes` (its outputs are in the state
    /// it wrote to Ferry: see [`state_outputs`]).
    pub async fn apply(&self, bytes: &[u8], log: &mut DeployLog) -> Result<(), Failed> {
        self.put(PLAN_FILE, bytes)?;
        let applied = self
            .run_as(
                &format!("apply -input=false -no-color {PLAN_FILE}"),
                log,
                true,
            )
            .await;
        self.remove(PLAN_FILE);
        applied
    }
}

/// The outputs of a state (Terraform's state file: `outputs` with `value`, and
/// `sensitive` when they are).
pub fn state_outputs(state: &serde_json::Value) -> Outputs {
    outputs(state.get("outputs").unwrap_or(&serde_json::json!({}))).unwrap_or_default()
}

/// Removes what Terraform runs may have left in the releases under `root`
/// (`<data>/deploy`) when the server stopped under them: saved plans and a failed
/// apply's state hold the variables' values.
pub fn sweep(root: &Path) {
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy();
        let leftover =
            name == PLAN_FILE || name == "errored.tfstate" || name == ".ferry-terraform.err";
        if leftover
            && entry.file_type().is_file()
            && entry.path().components().any(|c| c.as_os_str() == ".ferry")
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The errors Terraform printed, each with where it is when Terraform says (`on FILE
/// line N`), as the repository names the file (`dir/FILE:N`); its generic
/// "problems during initialisation" only when it says nothing else.
fn errors(output: &str, dir: &str) -> Vec<String> {
    let lines: Vec<&str> = output
        .lines()
        .map(|l| l.trim_start_matches(['│', '╷', '╵', ' ']).trim())
        .collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(what) = line.strip_prefix("Error: ") else {
            continue;
        };
        let place = lines
            .iter()
            .skip(i + 1)
            .take(4)
            .find_map(|l| l.strip_prefix("on "))
            .and_then(|on| {
                let (file, rest) = on.split_once(" line ")?;
                let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let dir = dir.trim_matches('/');
                let file = if dir.is_empty() || dir == "." {
                    file.to_string()
                } else {
                    format!("{dir}/{file}")
                };
                Some(format!("{file}:{n}: "))
            })
            .unwrap_or_default();
        found.push(format!("{place}{what}"));
    }
    if found.len() > 1 {
        found.retain(|e| !e.starts_with("Terraform encountered problems during initiali"));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outputs_are_text_and_sensitive_ones_are_known() {
        let o = outputs(&json!({
            "url": {"value": "http://127.0.0.1:8080/", "type": "string", "sensitive": false},
            "port": {"value": 8080, "type": "number", "sensitive": false},
            "token": {"value": "s3cret-value", "type": "string", "sensitive": true},
            "list": {"value": ["a", 1], "sensitive": false},
            "none": {"value": null}
        }))
        .expect("outputs");
        assert_eq!(o.values["url"], "http://127.0.0.1:8080/");
        assert_eq!(o.values["port"], "8080");
        assert_eq!(o.values["list"], r#"["a",1]"#);
        assert_eq!(o.values["none"], "");
        assert_eq!(o.secret_values().collect::<Vec<_>>(), ["s3cret-value"]);
        assert!(outputs(&json!("x")).is_err());
    }

    /// Which approvals a plan needs, by the environment's policy, the deployment's kind
    /// and what the plan does.
    #[test]
    fn which_plans_wait_for_an_approval() {
        let rule = ApprovalRule {
            required: 2,
            from: vec!["ops".into()],
            not: Vec::new(),
            expires: None,
        };
        let approval = Policy::Approval(rule.clone());
        let creates = PlanSummary {
            create: vec!["a".into()],
            ..Default::default()
        };
        let destroys = PlanSummary {
            delete: vec!["a".into()],
            ..Default::default()
        };
        let replaces = PlanSummary {
            replace: vec!["a".into()],
            ..Default::default()
        };
        use DeploymentKind::{Auto, Promotion, Rollback};
        let one = Some(1);
        for (policy, kind, summary, destroy_plan, needs, want) in [
            // The environment's rule, whatever the plan.
            (&approval, Promotion, &creates, false, true, Some(2)),
            (&approval, Auto, &destroys, false, false, Some(2)),
            // A rollback had its approvals; it waits only when it destroys.
            (&approval, Rollback, &creates, false, true, None),
            (&approval, Rollback, &destroys, false, true, Some(2)),
            (&approval, Rollback, &destroys, false, false, None),
            (&approval, Rollback, &destroys, true, false, Some(2)),
            // Automatic: a plan that destroys or replaces waits, unless `destroy: allow`.
            (&Policy::Auto, Auto, &creates, false, true, None),
            (&Policy::Auto, Auto, &destroys, false, true, one),
            (&Policy::Auto, Auto, &replaces, false, true, one),
            (&Policy::Auto, Auto, &destroys, false, false, None),
            (&Policy::Manual, Promotion, &replaces, false, true, one),
            // A destroy of the environment always waits.
            (&Policy::Auto, Promotion, &destroys, true, false, one),
            (&approval, Promotion, &destroys, true, false, Some(2)),
        ] {
            let got = gate(policy, kind, summary, destroy_plan, needs).map(|r| r.required);
            assert_eq!(
                got, want,
                "{policy:?} {kind:?} {summary:?} destroy plan {destroy_plan} needs {needs}"
            );
        }
    }

    /// `plan -json` as Terraform 1.11 prints it: the messages reach the log as text
    /// (errors with their place), the changes are kept.
    #[test]
    fn the_machine_readable_plan_is_summarized_and_said() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut log = DeployLog::open(&tmp.path().join("log"));
        let mut ui = JsonUi {
            log: &mut log,
            line: Vec::new(),
            summary: PlanSummary::default(),
            tail: Vec::new(),
        };
        let lines = [
            r#"{"@level":"info","@message":"Terraform 1.11.4","type":"version"}"#,
            r#"{"@message":"terraform_data.a: Plan to create","change":{"resource":{"addr":"terraform_data.a"},"action":"create"},"type":"planned_change"}"#,
            r#"{"@message":"terraform_data.b: Plan to replace","change":{"resource":{"addr":"terraform_data.b"},"action":"replace"},"type":"planned_change"}"#,
            r#"{"@message":"data.x: Plan to read","change":{"resource":{"addr":"data.x"},"action":"read"},"type":"planned_change"}"#,
            r#"{"@message":"Outputs: 2","outputs":{"url":{"sensitive":false,"action":"create"},"same":{"action":"noop"}},"type":"outputs"}"#,
            r#"{"@level":"error","@message":"Error: Unclosed configuration block","diagnostic":{"severity":"error","summary":"Unclosed configuration block","detail":"There is no closing brace.","range":{"filename":"main.tf","start":{"line":3}}},"type":"diagnostic"}"#,
        ];
        let text = lines.join("\n");
        let (a, b) = text.as_bytes().split_at(100);
        ui.chunk(a);
        ui.chunk(b);
        ui.chunk(b"\n");
        assert_eq!(ui.summary.create, ["terraform_data.a"]);
        assert_eq!(ui.summary.replace, ["terraform_data.b"]);
        assert_eq!(ui.summary.outputs, ["url"]);
        let said = String::from_utf8_lossy(&ui.tail).into_owned();
        assert!(
            said.contains("terraform_data.a: Plan to create\n"),
            "{said}"
        );
        assert_eq!(
            errors(&said, "infra"),
            ["infra/main.tf:3: Unclosed configuration block"]
        );
        let state = serde_json::json!({
            "outputs": {
                "url": {"value": "http://x", "type": "string"},
                "token": {"value": "t0ken", "type": "string", "sensitive": true}
            }
        });
        let o = state_outputs(&state);
        assert_eq!(o.values["url"], "http://x");
        assert_eq!(o.sensitive, ["token"]);
        assert!(state_outputs(&serde_json::json!({})).values.is_empty());
    }

    /// The server's own files in the module's directory never lead out of the release
    /// through a link the release's code made.
    #[test]
    fn the_servers_files_in_the_module_follow_no_link_out() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("release");
        let module = root.join("m");
        std::fs::create_dir_all(&module).expect("mkdir");
        let outside = tmp.path().join("secret.key");
        std::fs::write(&outside, "the server's key").expect("write");
        std::os::unix::fs::symlink(&outside, module.join(BACKEND_FILE)).expect("link");
        std::os::unix::fs::symlink(&outside, module.join(PLAN_FILE)).expect("link");
        let program = PathBuf::from("terraform");
        let session = |module: &str| Session {
            program: &program,
            root: root.clone(),
            module: PathBuf::from(module),
            source: "infra".into(),
            env: Vec::new(),
            apply_env: Vec::new(),
            spawner: None,
            timeout: None,
            stop: CancellationToken::new(),
            masker: ferry_exec::mask::Masker::new(std::iter::empty()),
            address: String::new(),
            initialized: Default::default(),
            restored: Default::default(),
            init_cache: None,
        };
        let s = session("m");
        assert!(s.take(PLAN_FILE).is_err(), "a link is not a plan");
        s.put(BACKEND_FILE, BACKEND_OVERRIDE.as_bytes())
            .expect("written");
        assert_eq!(
            std::fs::read_to_string(&outside).expect("read"),
            "the server's key",
            "written in place of the link, not through it"
        );
        assert_eq!(
            std::fs::read_to_string(module.join(BACKEND_FILE)).expect("read"),
            BACKEND_OVERRIDE
        );
        // The module's directory itself swapped for a link out of the release.
        std::os::unix::fs::symlink(tmp.path(), root.join("out")).expect("link");
        let out = session("out");
        assert!(out.put("x", b"x").is_err());
        assert!(!tmp.path().join("x").exists());
        assert!(out.take("secret.key").is_err());
    }

    #[test]
    fn variables_become_tf_vars_and_infra_vars_win() {
        let vars = BTreeMap::from([
            ("region".to_string(), "eu".to_string()),
            ("name".to_string(), "app".to_string()),
        ]);
        let secrets = vec![("token".to_string(), b"t0k".to_vec())];
        let infra = vec![("name".to_string(), "app-prod".to_string())];
        assert_eq!(
            tf_vars(&vars, &secrets, &infra),
            [
                ("TF_VAR_name".to_string(), "app-prod".to_string()),
                ("TF_VAR_region".to_string(), "eu".to_string()),
                ("TF_VAR_token".to_string(), "t0k".to_string()),
            ]
        );
    }

    #[test]
    fn the_backend_is_ferrys_own_by_environment() {
        let e = Endpoint {
            base: "http://127.0.0.1:8080/".into(),
            skip_verify: false,
        };
        let env = backend_env(&e, "my app", "prod", "pw");
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        };
        assert_eq!(
            get("TF_HTTP_ADDRESS"),
            "http://127.0.0.1:8080/api/v1/infra/my%20app/prod/state"
        );
        assert_eq!(get("TF_HTTP_LOCK_METHOD"), "LOCK");
        assert_eq!(get("TF_HTTP_PASSWORD"), "pw");
        assert_eq!(sealed_path("infra/prod/"), ".ferry/infra/infra/prod");
        assert_eq!(sealed_path("."), ".ferry/infra");
        let (pw, hash) = new_credential();
        assert_eq!((pw.len(), hash.len()), (64, 64));
        assert_ne!(pw, new_credential().0);
    }

    /// The errors Terraform printed are the reason, each where the repository has it.
    #[test]
    fn the_errors_terraform_printed_are_the_reason() {
        let out = "\n╷\n│ Error: Error acquiring the state lock\n│ \n│ Lock Info:\n╵\n";
        assert_eq!(errors(out, "infra"), ["Error acquiring the state lock"]);
        assert!(errors("all fine", "infra").is_empty());
        let init = "Initializing the backend...

Error: Terraform encountered problems during initialisation, including problems
with the configuration, described below.

Error: Unclosed configuration block

  on main.tf line 1, in resource \"terraform_data\":
   1: resource \"terraform_data\" {

Error: Missing name for resource

  on modules/x.tf line 12, in resource \"terraform_data\":
";
        assert_eq!(
            errors(init, "deploy/tf/"),
            [
                "deploy/tf/main.tf:1: Unclosed configuration block",
                "deploy/tf/modules/x.tf:12: Missing name for resource",
            ]
        );
        let only = "Error: Terraform encountered problems during initialisation, x\n";
        assert_eq!(errors(only, ".").len(), 1);
        let stale = Failed {
            reason: String::new(),
            tail: "│ Error: Saved plan is stale\n".into(),
        };
        assert!(stale.stale_plan());
    }
}
