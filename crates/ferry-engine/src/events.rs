//! What the engine reports while it runs.

use ferry_store::{Status, TestSummary};
use serde::Serialize;

/// An engine event. Borrowed, so that output chunks are not copied for each sink.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EngineEvent<'a> {
    RunStarted {
        run_id: &'a str,
        number: i64,
        jobs: usize,
    },
    JobStarted {
        job: &'a str,
        attempt: u32,
    },
    StepStarted {
        job: &'a str,
        step: usize,
        name: &'a str,
    },
    /// Output of a step (stdout and stderr as written), or a message from Ferry.
    Output {
        job: &'a str,
        /// Where `data` starts in the job's stored log (so a live reader that also read
        /// the stored log can drop what it already has).
        offset: u64,
        #[serde(serialize_with = "lossy")]
        data: &'a [u8],
    },
    StepFinished {
        job: &'a str,
        step: usize,
        status: Status,
        exit_code: Option<i32>,
    },
    JobFinished {
        job: &'a str,
        status: Status,
        reason: Option<&'a str>,
        duration_ms: u64,
        tests: Option<&'a TestSummary>,
    },
    RunFinished {
        status: Status,
        duration_ms: u64,
    },
}

fn lossy<S: serde::Serializer>(data: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(data))
}

/// Receives engine events. Called from the engine's tasks: keep it quick.
pub trait EventSink: Send + Sync {
    fn event(&self, event: &EngineEvent<'_>);
}

/// A sink that ignores everything.
#[derive(Debug, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn event(&self, _: &EngineEvent<'_>) {}
}
