//! The plan of one run.

use std::collections::BTreeMap;

use ferry_config::expr;
use ferry_config::{EnvVars, Pipeline, Retry, Step};
use minijinja::Value;
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::matrix;

/// Whether a job will run, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Run,
    Skip {
        reason: String,
    },
    /// A re-run of failed jobs keeps this job's success (and artifacts) from an earlier
    /// run instead of running it again.
    Reuse {
        /// The earlier run's id.
        run: String,
        number: i64,
    },
}

/// One job of the plan, after matrix expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanJob {
    /// Unique name, with matrix values: `test (db=16)`.
    pub name: String,
    /// The job's key in `.ferry.yml`.
    pub base: String,
    pub matrix: Vec<(String, String)>,
    /// Names of the plan jobs this one waits for.
    pub needs: Vec<String>,
    /// Depth in the DAG: jobs of the same stage can run in parallel.
    pub stage: usize,
    #[serde(flatten)]
    pub decision: Decision,
    pub steps: Vec<Step>,
    pub env: EnvVars,
    pub working_directory: Option<String>,
    #[serde(with = "ferry_config::model::opt_millis")]
    pub timeout: Option<std::time::Duration>,
    pub retry: Retry,
    pub allow_failure: bool,
    pub artifacts: Vec<String>,
    pub junit: Vec<String>,
    /// The container image of the job's steps; `None`: on the host.
    #[serde(default)]
    pub image: Option<String>,
    /// User, entrypoint and limits of the job's containers.
    #[serde(default)]
    pub container: ferry_config::ContainerOptions,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ferry_config::Service>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<ferry_config::Cache>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_image: Option<ferry_config::BuildImage>,
}

impl PlanJob {
    pub fn runs(&self) -> bool {
        self.decision == Decision::Run
    }
}

/// `concurrency:` of a run: its group and whether it cancels running runs it supersedes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanConcurrency {
    pub group: String,
    pub cancel_in_progress: bool,
}

/// A run's plan. Jobs are in a topological order; ties keep the order of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Format version, for stored plans.
    pub version: u32,
    pub event: Event,
    pub env: EnvVars,
    /// `Some(reason)` when the pipeline's `on:` would not start a run for this event.
    pub not_triggered: Option<String>,
    /// The run's concurrency group, with its expressions evaluated.
    #[serde(default)]
    pub concurrency: Option<PlanConcurrency>,
    pub jobs: Vec<PlanJob>,
    /// `release:`, `environments:` and `deploy:` of the commit's file: what the run seals
    /// when it succeeds and how its release is delivered.
    #[serde(default, skip_serializing_if = "is_default")]
    pub delivery: ferry_config::delivery::Delivery,
    /// How far the run is trusted: decided by the server, never by the commit.
    #[serde(default)]
    pub trust: Trust,
}

/// How far a run is trusted, decided by the server from facts the run's code cannot
/// forge: the event, and for a pull request whether it comes from another repository
/// (see docs/security.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Trust {
    pub level: TrustLevel,
    /// Why, for people: `pull request #4 from a fork (alice/app), opened by alice`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Trust {
    pub fn untrusted(reason: impl Into<String>) -> Self {
        Self {
            level: TrustLevel::Untrusted,
            reason: reason.into(),
        }
    }

    pub fn trusted(reason: impl Into<String>) -> Self {
        Self {
            level: TrustLevel::Trusted,
            reason: reason.into(),
        }
    }

    pub fn is_trusted(&self) -> bool {
        self.level == TrustLevel::Trusted
    }
}

/// `trusted`: the run gets the repository's registry logins, writes caches, may seal a
/// release and runs host jobs. `untrusted`: none of that (see docs/security.md).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TrustLevel {
    #[default]
    Trusted,
    Untrusted,
}

impl TrustLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            TrustLevel::Trusted => "trusted",
            TrustLevel::Untrusted => "untrusted",
        }
    }
}

fn is_default(d: &ferry_config::delivery::Delivery) -> bool {
    *d == ferry_config::delivery::Delivery::default()
}

impl Plan {
    pub fn job(&self, name: &str) -> Option<&PlanJob> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Jobs grouped by stage, for "these run in parallel" displays.
    pub fn stages(&self) -> Vec<Vec<&PlanJob>> {
        let max = self.jobs.iter().map(|j| j.stage).max().unwrap_or(0);
        (0..=max)
            .map(|s| self.jobs.iter().filter(|j| j.stage == s).collect())
            .filter(|v: &Vec<&PlanJob>| !v.is_empty())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("there is no job `{name}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownJob {
        name: String,
        suggestion: Option<String>,
    },
    #[error(
        "job `{job}`: the matrix expands to {count} jobs, more than the limit of {}",
        matrix::MAX_COMBINATIONS
    )]
    MatrixTooLarge { job: String, count: usize },
    #[error("job `{job}`: cannot evaluate `if`: {message}")]
    Condition { job: String, message: String },
    #[error("dependency cycle through job `{job}`")]
    Cycle { job: String },
}

/// Options that narrow a plan.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Keep only these jobs (by name or by the name in the file) and what they need.
    pub only: Vec<String>,
}

/// The variables an expression sees: the event, the job's matrix values, the `env:`
/// visible at that place, the built-ins known from the event, and `extra` built-ins
/// known only at run time.
pub fn context(
    event: &Event,
    combo: &[(String, String)],
    env: &EnvVars,
    extra: &[(&str, String)],
) -> Value {
    let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
    let ev: BTreeMap<&str, Value> = [
        ("name", Value::from(event.kind.as_str())),
        (
            "branch",
            Value::from(event.branch.clone().unwrap_or_default()),
        ),
        ("tag", Value::from(event.tag.clone().unwrap_or_default())),
        ("ref", Value::from(event.git_ref.clone())),
        ("sha", Value::from(event.sha.clone())),
        ("short_sha", Value::from(event.short_sha())),
        ("author", Value::from(event.author.clone())),
        ("message", Value::from(event.message.clone())),
        ("changed_files", Value::from_serialize(&event.changed_files)),
        ("pull_request", Value::from_serialize(&event.pull_request)),
    ]
    .into_iter()
    .collect();
    ctx.insert("event".into(), Value::from_serialize(&ev));
    let m: BTreeMap<&str, &str> = combo
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    ctx.insert("matrix".into(), Value::from_serialize(&m));
    let e: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ctx.insert("env".into(), Value::from_serialize(&e));
    for (k, v) in builtins(event).into_iter().chain(extra.iter().cloned()) {
        ctx.insert(k.into(), Value::from(v));
    }
    Value::from_serialize(&ctx)
}

/// The built-in variables known from the event alone (`FERRY_PR_*` only for a pull
/// request).
pub fn builtins(event: &Event) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("CI", "true".into()),
        ("FERRY", "true".into()),
        ("FERRY_EVENT", event.kind.as_str().into()),
        ("FERRY_BRANCH", event.branch.clone().unwrap_or_default()),
        ("FERRY_TAG", event.tag.clone().unwrap_or_default()),
        ("FERRY_REF", event.git_ref.clone()),
        ("FERRY_COMMIT_SHA", event.sha.clone()),
        ("FERRY_COMMIT_SHORT_SHA", event.short_sha().into()),
        ("FERRY_COMMIT_AUTHOR", event.author.clone()),
        ("FERRY_COMMIT_MESSAGE", event.message.clone()),
    ];
    if let Some(pull) = &event.pull_request {
        vars.push(("FERRY_PR_NUMBER", pull.number.to_string()));
        vars.push(("FERRY_PR_BASE", pull.base.clone()));
        vars.push(("FERRY_PR_HEAD", pull.head.clone()));
        vars.push(("FERRY_PR_FORK", pull.fork.to_string()));
    }
    vars
}

/// The expression environment for `if:`, with `changed()` bound to the event's files.
pub fn condition_env(event: &Event) -> minijinja::Environment<'static> {
    let mut env = expr::environment();
    let files = event.changed_files.clone();
    env.add_function(
        "changed",
        move |patterns: minijinja::value::Rest<String>| {
            let Some(files) = &files else { return Ok(true) };
            let mut set = globset::GlobSetBuilder::new();
            for p in patterns.iter() {
                let g = globset::Glob::new(p).map_err(|e| {
                    minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
                })?;
                set.add(g);
            }
            let set = set.build().map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
            })?;
            Ok(files.iter().any(|f| set.is_match(f)))
        },
    );
    env
}

/// Makes the plan of `pipeline` for `event`.
pub fn plan(pipeline: &Pipeline, event: &Event, options: &Options) -> Result<Plan, PlanError> {
    let cond_env = condition_env(event);
    // 1. Expand matrices, evaluate conditions.
    let mut jobs: Vec<PlanJob> = Vec::new();
    let mut expansions: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for job in &pipeline.jobs {
        let combos = match &job.matrix {
            Some(m) => matrix::expand(m).map_err(|count| PlanError::MatrixTooLarge {
                job: job.name.clone(),
                count,
            })?,
            None => vec![Vec::new()],
        };
        let mut names = Vec::new();
        for combo in combos {
            let mut env = pipeline.env.clone();
            env.extend(job.env.iter().cloned());
            let decision = match &job.condition {
                None => Decision::Run,
                Some(cond) => {
                    let inner = expr::condition_text(&cond.value);
                    let value = expr::eval(&cond_env, inner, &context(event, &combo, &env, &[]))
                        .map_err(|message| PlanError::Condition {
                            job: job.name.clone(),
                            message,
                        })?;
                    if value.is_true() {
                        Decision::Run
                    } else {
                        Decision::Skip {
                            reason: format!("condition `{inner}` is false"),
                        }
                    }
                }
            };
            let name = matrix::job_name(&job.name, &combo);
            names.push(name.clone());
            jobs.push(PlanJob {
                name,
                base: job.name.clone(),
                matrix: combo,
                needs: Vec::new(),
                stage: 0,
                decision,
                steps: job.steps.clone(),
                env: job.env.clone(),
                working_directory: job.working_directory.clone(),
                timeout: job.timeout,
                retry: job.retry.clone(),
                allow_failure: job.allow_failure,
                artifacts: job.artifacts.clone(),
                junit: job.junit.clone(),
                image: job.image.clone(),
                container: job.container.clone(),
                services: job.services.clone(),
                caches: job.caches.clone(),
                build_image: job.build_image.clone(),
            });
        }
        expansions.insert(job.name.as_str(), names);
    }
    for pj in &mut jobs {
        let Some(job) = pipeline.job(&pj.base) else {
            continue;
        };
        pj.needs = job
            .needs
            .iter()
            .flat_map(|n| {
                expansions
                    .get(n.value.as_str())
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
    }

    // 2. Narrow to the requested jobs and what they need.
    if !options.only.is_empty() {
        let mut keep: Vec<String> = Vec::new();
        let mut todo: Vec<String> = Vec::new();
        for want in &options.only {
            let matched: Vec<String> = jobs
                .iter()
                .filter(|j| &j.name == want || &j.base == want)
                .map(|j| j.name.clone())
                .collect();
            if matched.is_empty() {
                let suggestion = ferry_config::diagnostic::did_you_mean(
                    want,
                    jobs.iter().map(|j| j.base.as_str()),
                )
                .map(str::to_string);
                return Err(PlanError::UnknownJob {
                    name: want.clone(),
                    suggestion,
                });
            }
            todo.extend(matched);
        }
        while let Some(name) = todo.pop() {
            if keep.contains(&name) {
                continue;
            }
            if let Some(j) = jobs.iter().find(|j| j.name == name) {
                todo.extend(j.needs.iter().cloned());
            }
            keep.push(name);
        }
        jobs.retain(|j| keep.contains(&j.name));
    }

    // 3. Order topologically (ties by position in the file) and assign stages.
    let mut ordered: Vec<PlanJob> = Vec::with_capacity(jobs.len());
    let mut remaining = jobs;
    while !remaining.is_empty() {
        let ready = remaining
            .iter()
            .position(|j| j.needs.iter().all(|n| ordered.iter().any(|o| &o.name == n)));
        let Some(i) = ready else {
            return Err(PlanError::Cycle {
                job: remaining[0].name.clone(),
            });
        };
        let mut job = remaining.remove(i);
        job.stage = job
            .needs
            .iter()
            .filter_map(|n| ordered.iter().find(|o| &o.name == n))
            .map(|o| o.stage + 1)
            .max()
            .unwrap_or(0);
        // 4. A job that needs a skipped job is skipped too.
        if job.runs()
            && let Some(skipped) = job
                .needs
                .iter()
                .find(|n| ordered.iter().any(|o| &o.name == *n && !o.runs()))
        {
            job.decision = Decision::Skip {
                reason: format!("needs `{skipped}`, which is skipped"),
            };
        }
        ordered.push(job);
    }

    let concurrency = match &pipeline.concurrency {
        None => None,
        Some(c) => {
            let ctx = context(event, &[], &pipeline.env, &[]);
            let group = expr::interpolate(&cond_env, &c.group.value, &ctx).map_err(|message| {
                PlanError::Condition {
                    job: "concurrency".into(),
                    message,
                }
            })?;
            Some(PlanConcurrency {
                group,
                cancel_in_progress: c.cancel_in_progress,
            })
        }
    };

    Ok(Plan {
        version: 1,
        event: event.clone(),
        env: pipeline.env.clone(),
        not_triggered: crate::trigger_matches(&pipeline.on, event).err(),
        concurrency,
        jobs: ordered,
        delivery: pipeline.delivery.clone(),
        trust: Trust::default(),
    })
}
