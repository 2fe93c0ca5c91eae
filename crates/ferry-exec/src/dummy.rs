//! The dummy executor: starts no process and no container. It reads each step's script
//! as a tiny language and records what it was asked to do, so engine scenarios
//! (ordering, concurrency, retries, timeouts, cancellation, skip reasons) run in
//! milliseconds and assert on exactly what ran.
//!
//! Each line of a step's script is one of:
//! - `echo TEXT`: TEXT and a newline go to the step's output (nothing is expanded);
//! - `sleep SECONDS`: waits (a timeout or a cancel ends the wait as they end a process);
//! - `exit N`, `true`, `false`: the step ends with that code (0, 0, 1);
//! - anything else is ignored (and echoed as `dummy: LINE`).
//!
//! The step ends with code 0 after its last line. A job whose name is in
//! [`DummyExecutor::fail_prepare`] fails to prepare.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{ExecError, Executor, JobSpec, Prepared, StepIo, StepOutcome, StepSpec};

/// One step the dummy ran.
#[derive(Debug, Clone)]
pub struct DummyStep {
    pub job: String,
    pub script: String,
    pub env: Vec<(String, String)>,
    pub started: Instant,
    pub ended: Instant,
    pub outcome: StepOutcome,
}

/// Runs nothing, records everything. Cheap to clone; clones share the record.
#[derive(Debug, Clone, Default)]
pub struct DummyExecutor {
    steps: Arc<Mutex<Vec<DummyStep>>>,
    /// Jobs (by name) whose `prepare` fails.
    pub fail_prepare: Vec<String>,
    cleaned: Arc<Mutex<Vec<String>>>,
    begun: Arc<Mutex<Vec<String>>>,
}

impl DummyExecutor {
    /// A dummy whose `prepare` fails for these jobs.
    pub fn failing_prepare(jobs: &[&str]) -> Self {
        Self {
            fail_prepare: jobs.iter().map(|j| j.to_string()).collect(),
            ..Self::default()
        }
    }

    /// The steps run so far, in the order they ended.
    pub fn steps(&self) -> Vec<DummyStep> {
        self.steps.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The scripts of the steps begun so far, in order (a sync marker for tests: a step
    /// is here as soon as it runs).
    pub fn begun(&self) -> Vec<String> {
        self.begun.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The jobs cleaned up so far (each exactly once, also after a failed prepare).
    pub fn cleaned(&self) -> Vec<String> {
        self.cleaned.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// What a line of a dummy script asks for.
#[derive(Debug, Clone, PartialEq)]
enum Line {
    Echo(String),
    Sleep(Duration),
    Exit(i32),
    Other(String),
}

fn parse(line: &str) -> Option<Line> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    Some(match word {
        "echo" => Line::Echo(rest.to_string()),
        "sleep" => match rest.trim().parse::<f64>() {
            Ok(s) if s >= 0.0 => Line::Sleep(Duration::from_secs_f64(s)),
            _ => Line::Other(line.to_string()),
        },
        "exit" => Line::Exit(rest.trim().parse().unwrap_or(1)),
        "true" => Line::Exit(0),
        "false" => Line::Exit(1),
        _ => Line::Other(line.to_string()),
    })
}

#[async_trait::async_trait]
impl Executor for DummyExecutor {
    async fn prepare(&self, job: &JobSpec) -> Result<Prepared, ExecError> {
        if self.fail_prepare.contains(&job.name) {
            return Err(ExecError::Backend(format!(
                "the dummy refuses to prepare `{}`",
                job.name
            )));
        }
        Ok(Prepared::new(job.clone(), ()))
    }

    async fn run_step(&self, job: &Prepared, step: &StepSpec, io: StepIo<'_>) -> StepOutcome {
        let StepIo { output, cancel } = io;
        let started = Instant::now();
        if let Ok(mut b) = self.begun.lock() {
            b.push(step.script.clone());
        }
        let deadline = step.timeout.map(|t| started + t);
        let mut outcome = StepOutcome::Exited(0);
        for line in step.script.lines().filter_map(parse) {
            match line {
                Line::Echo(text) => output.chunk(format!("{text}\n").as_bytes()),
                Line::Other(text) => output.chunk(format!("dummy: {text}\n").as_bytes()),
                Line::Exit(code) => {
                    outcome = StepOutcome::Exited(code);
                    break;
                }
                Line::Sleep(d) => {
                    let until = Instant::now() + d;
                    let wake = match deadline {
                        Some(dl) if dl < until => dl,
                        _ => until,
                    };
                    tokio::select! {
                        _ = tokio::time::sleep_until(wake.into()) => {}
                        _ = cancel.cancelled() => {
                            outcome = StepOutcome::Cancelled;
                            break;
                        }
                    }
                    if wake < until {
                        outcome = StepOutcome::TimedOut(step.timeout.unwrap_or_default());
                        break;
                    }
                }
            }
        }
        if let Ok(mut steps) = self.steps.lock() {
            steps.push(DummyStep {
                job: job.spec.name.clone(),
                script: step.script.clone(),
                env: step.env.clone(),
                started,
                ended: Instant::now(),
                outcome: outcome.clone(),
            });
        }
        outcome
    }

    async fn cleanup(&self, job: &Prepared) {
        if let Ok(mut c) = self.cleaned.lock() {
            c.push(job.spec.name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::OutputSink;

    #[test]
    fn lines() {
        assert_eq!(parse("echo hi there"), Some(Line::Echo("hi there".into())));
        assert_eq!(
            parse("sleep 0.5"),
            Some(Line::Sleep(Duration::from_millis(500)))
        );
        assert_eq!(parse("exit 3"), Some(Line::Exit(3)));
        assert_eq!(parse("false"), Some(Line::Exit(1)));
        assert_eq!(parse("  # note"), None);
        assert_eq!(parse("make test"), Some(Line::Other("make test".into())));
    }

    #[tokio::test]
    async fn steps_are_steered_by_their_script() {
        #[derive(Default)]
        struct Out(Vec<u8>);
        impl OutputSink for Out {
            fn chunk(&mut self, data: &[u8]) {
                self.0.extend_from_slice(data);
            }
        }
        let dummy = DummyExecutor::default();
        let spec = JobSpec {
            name: "j".into(),
            workspace: std::env::temp_dir(),
            container: None,
        };
        let job = dummy.prepare(&spec).await.expect("prepare");
        let step = |script: &str, timeout: Option<Duration>| StepSpec {
            script: script.into(),
            env: vec![],
            cwd: std::env::temp_dir(),
            timeout,
            clear_env: false,
        };
        let mut out = Out::default();
        let cancel = CancellationToken::new();
        let twenty_ms = Some(Duration::from_millis(20));
        let cases = [
            ("echo a\nexit 4\necho b", None, StepOutcome::Exited(4)),
            (
                "sleep 30",
                twenty_ms,
                StepOutcome::TimedOut(Duration::from_millis(20)),
            ),
            ("sleep 30", None, StepOutcome::Cancelled),
        ];
        for (i, (script, timeout, want)) in cases.into_iter().enumerate() {
            if i == 2 {
                cancel.cancel();
            }
            let io = StepIo::new(&mut out, &cancel);
            let ran = dummy.run_step(&job, &step(script, timeout), io).await;
            assert_eq!(ran, want, "{script}");
        }
        assert_eq!(out.0, b"a\n");
        dummy.cleanup(&job).await;
        assert_eq!(dummy.steps().len(), 3);
        assert_eq!(dummy.cleaned(), ["j"]);
    }
}
