//! `Pipeline + Event → Plan`: pure and deterministic.
//!
//! The plan is everything a run needs to know in advance: which jobs exist after the
//! matrix is expanded, in which order they may run, which are skipped and why. It is
//! serialised and stored with the run, so a re-run replays exactly the same plan.

mod event;
mod matrix;
mod plan;
mod triggers;

pub use event::{Event, EventKind, PullRequestEvent};
pub use plan::{
    Decision, Options, Plan, PlanConcurrency, PlanError, PlanJob, Trust, TrustLevel, builtins,
    condition_env, context, plan,
};
pub use triggers::trigger_matches;
