//! Ferry's pipeline file: `.ferry.yml` text → a typed, validated [`Pipeline`].
//!
//! Pure: no I/O. Every problem in the file is collected as a [`Diagnostic`] before
//! anything is reported, so a user fixes them all in one round.

mod check;
pub mod compose;
pub mod delivery;
pub mod diagnostic;
pub mod duration;
pub mod expr;
mod load;
mod load_delivery;
pub mod model;
pub mod schema;
mod yaml;

pub use diagnostic::{Diagnostic, Pos, Severity, Span, render_all};
pub use load::{is_env_name, parse_memory};
pub use load_delivery::{is_dns_subdomain, is_environment_name, is_rollout_target, port_mapping};
pub use model::*;

/// The file name Ferry looks for at the root of a repository.
pub const FILE_NAME: &str = ".ferry.yml";

/// The most bytes a pipeline file may have.
pub const MAX_SIZE: usize = 1 << 20;

/// A valid pipeline and the warnings found in it.
#[derive(Debug)]
pub struct Loaded {
    pub pipeline: Pipeline,
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates a pipeline. On failure returns every diagnostic (errors and
/// warnings); on success the pipeline and its warnings.
pub fn load(source: &str) -> Result<Loaded, Vec<Diagnostic>> {
    if source.len() > MAX_SIZE {
        return Err(vec![
            Diagnostic::error(
                Span::default_at_start(),
                format!("the file is larger than {} KiB", MAX_SIZE / 1024),
            )
            .with_help(
                "a pipeline file should be small; move scripts into files in the repository",
            ),
        ]);
    }
    let root = yaml::parse(source).map_err(|d| vec![d])?;
    let mut loader = load::Loader::new();
    let pipeline = loader.pipeline(root.as_ref());
    let mut diags = loader.diags;
    check::check(&pipeline, source, &mut diags);
    if diags.iter().any(Diagnostic::is_error) {
        diags.sort_by_key(|d| (d.span.start, d.severity));
        return Err(diags);
    }
    Ok(Loaded {
        pipeline,
        warnings: diags,
    })
}

/// The key lists the loader accepts, for the schema's consistency test.
pub mod keys {
    pub use crate::load::{
        BUILD_KEYS, CACHE_KEYS, CONCURRENCY_KEYS, FILTER_KEYS, IMAGE_KEYS, JOB_KEYS, ON_KEYS,
        REPORT_KEYS, RESOURCE_KEYS, RETRY_KEYS, SERVICE_KEYS, STEP_KEYS, TOP_KEYS,
    };
    pub use crate::load_delivery::{
        APPROVAL_KEYS, CONFIG_KEYS, DEPLOY_KEYS, DOCKER_KEYS, ENVIRONMENT_KEYS, FREEZE_KEYS,
        GITOPS_KEYS, HTTP_KEYS, INFRA_KEYS, KUBE_OBJECT_KEYS, KUBERNETES_KEYS, NOTIFY_KEYS,
        PROCESS_KEYS, RELEASE_KEYS, SCRIPT_KEYS, SWARM_KEYS, VERIFY_KEYS, WATCH_KEYS, WEBHOOK_KEYS,
    };
}
