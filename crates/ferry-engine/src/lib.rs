//! The engine: executes a [`Plan`](ferry_plan::Plan) with an executor, records
//! everything in the store, and tells an [`EventSink`] what happens as it happens.
//!
//! One engine serves every front end: `ferry run` gives it a terminal sink, the server
//! (later) a broadcast sink. There is no second implementation of "how a pipeline runs".

mod artifacts;
pub mod cache;
mod events;
mod job;
mod junit;
mod run;
pub mod schedule;
mod workspace;

pub use events::{EngineEvent, EventSink, NullSink};
pub use junit::parse_junit;
pub use run::{DEFAULT_LOG_LIMIT, Engine, EngineConfig, JobResult, RunOutcome, Source};
pub use workspace::directory_files;

/// Where the engine keeps the artifacts of job `position` (named `name`) of run `run_id`:
/// `<data dir>/artifacts/<run id>/<NNN-job>`.
pub fn artifact_dir(
    data_dir: &std::path::Path,
    run_id: &str,
    position: usize,
    name: &str,
) -> std::path::PathBuf {
    workspace::job_dir(&data_dir.join("artifacts").join(run_id), position, name)
}
