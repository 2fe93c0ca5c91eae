//! How `ferry run` shows a run as it happens: job-prefixed output lines, a status line
//! on terminals, or one JSON event per line.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use ferry_engine::{EngineEvent, EventSink};
use ferry_store::Status;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::style;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Text,
    Quiet,
    Json,
}

#[derive(Debug, Default)]
struct State {
    partial: HashMap<String, Vec<u8>>,
    running: HashSet<String>,
    done: usize,
}

/// The terminal sink.
#[derive(educe::Educe)]
#[educe(Debug)]
pub struct Terminal {
    mode: Mode,
    #[educe(Debug(ignore))]
    color: bool,
    #[educe(Debug(ignore))]
    colors: HashMap<String, usize>,
    #[educe(Debug(ignore))]
    width: usize,
    #[educe(Debug(ignore))]
    runnable: usize,
    #[educe(Debug(ignore))]
    state: Mutex<State>,
    #[educe(Debug(ignore))]
    bar: Option<ProgressBar>,
}

impl Terminal {
    /// `jobs`: every job of the plan; `runnable`: how many of them will run.
    pub fn new(mode: Mode, jobs: &[String], runnable: usize, stdout_tty: bool) -> Self {
        let color = style::color_enabled(stdout_tty);
        let width = jobs
            .iter()
            .map(|j| j.chars().count())
            .max()
            .unwrap_or(0)
            .min(40);
        let bar = (mode == Mode::Text && stdout_tty).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} · {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let t = Terminal {
            mode,
            color,
            colors: jobs
                .iter()
                .enumerate()
                .map(|(i, j)| (j.clone(), i))
                .collect(),
            width,
            runnable,
            state: Mutex::new(State::default()),
            bar,
        };
        if let Ok(state) = t.state.lock() {
            t.update_bar(&state);
        }
        t
    }

    fn prefix(&self, job: &str) -> String {
        let padded = format!("{job:<width$}", width = self.width);
        let i = self.colors.get(job).copied().unwrap_or(0);
        style::paint(&padded, style::job_color(i), self.color)
    }

    fn write(&self, bytes: &[u8]) {
        let emit = || {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes);
            let _ = out.flush();
        };
        match &self.bar {
            Some(bar) => bar.suspend(emit),
            None => emit(),
        }
    }

    fn update_bar(&self, state: &State) {
        if let Some(bar) = &self.bar {
            let running = state.running.len();
            let pending = self.runnable.saturating_sub(state.done + running);
            bar.set_message(format!(
                "{} done · {running} running · {pending} pending",
                state.done
            ));
        }
    }

    /// Appends complete lines of `data` (with the job's prefix) to `out`; keeps an
    /// unfinished last line in `partial` for the next chunk.
    fn lines(&self, job: &str, partial: &mut Vec<u8>, data: &[u8], out: &mut Vec<u8>) {
        let mut head = self.prefix(job).into_bytes();
        head.push(b' ');
        head.extend_from_slice(style::paint("│", "90", self.color).as_bytes());
        head.push(b' ');
        // One allocation for the whole chunk: a chunk of short lines grows several-fold.
        let lines = bytecount::count(data, b'\n');
        out.reserve(data.len() + partial.len() + lines * head.len());
        let mut rest = data;
        // A plain scan: memchr's setup per call costs more than it saves on short lines.
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            out.extend_from_slice(&head);
            if !partial.is_empty() {
                out.append(partial);
            }
            out.extend_from_slice(&rest[..=nl]);
            rest = &rest[nl + 1..];
        }
        partial.extend_from_slice(rest);
    }

    /// Stops the status line (before the summary is printed).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl EventSink for Terminal {
    fn event(&self, event: &EngineEvent<'_>) {
        match self.mode {
            Mode::Json => {
                if let Ok(mut line) = serde_json::to_vec(event) {
                    line.push(b'\n');
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&line);
                }
                return;
            }
            Mode::Quiet => return,
            Mode::Text => {}
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let mut out = Vec::new();
        match event {
            EngineEvent::Output { job, data, .. } => {
                let mut partial = state.partial.remove(*job).unwrap_or_default();
                self.lines(job, &mut partial, data, &mut out);
                state.partial.insert(job.to_string(), partial);
            }
            EngineEvent::JobStarted { job, attempt } => {
                state.running.insert(job.to_string());
                let what = if *attempt > 1 {
                    format!("started (attempt {attempt})")
                } else {
                    "started".into()
                };
                out.extend(
                    format!(
                        "{} {} {what}\n",
                        self.prefix(job),
                        style::paint("▶", "36", self.color)
                    )
                    .bytes(),
                );
            }
            EngineEvent::JobFinished {
                job,
                status,
                reason,
                duration_ms,
                ..
            } => {
                if let Some(mut partial) = state.partial.remove(*job)
                    && !partial.is_empty()
                {
                    partial.push(b'\n');
                    self.lines(job, &mut Vec::new(), &partial, &mut out);
                }
                state.running.remove(*job);
                state.done += 1;
                let mark = match status {
                    Status::Success => "✓",
                    Status::Skipped => "-",
                    Status::Cancelled => "■",
                    _ => "✗",
                };
                let mut line = format!(
                    "{} {} {}",
                    self.prefix(job),
                    style::paint(mark, style::status_code(*status), self.color),
                    style::status_word(*status, self.color)
                );
                if *status != Status::Skipped {
                    line.push_str(&format!(" in {}", style::duration(*duration_ms)));
                }
                if let Some(r) = reason {
                    line.push_str(&format!(": {r}"));
                }
                line.push('\n');
                out.extend(line.bytes());
            }
            _ => {}
        }
        self.update_bar(&state);
        drop(state);
        if !out.is_empty() {
            self.write(&out);
        }
    }
}
