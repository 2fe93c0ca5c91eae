//! Live updates: the engine's events fanned out to Server-Sent Events streams.
//!
//! A client that connects in the middle of a run first gets what is stored (states,
//! and each job's log so far), then live events. It subscribes *before* reading what is
//! stored, and every log event carries its byte offset in the job's log, so overlap
//! between the two is dropped and nothing in between is lost: no gap, no duplicate.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::sse::Event;
use ferry_engine::{EngineEvent, EventSink};
use ferry_store::{Run, Status};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::AppState;

/// One live event of one run, as the stream sends it (the SSE event's name is `log`,
/// `job`, `run` or `end`; its data is this, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Live {
    Log {
        run: String,
        job: String,
        /// Where `text` starts in the job's log, in bytes.
        offset: u64,
        /// The bytes as written; sent as (lossy UTF-8) `text`.
        #[serde(rename = "text", serialize_with = "lossy", deserialize_with = "text")]
        #[schemars(with = "String")]
        data: Vec<u8>,
    },
    Job {
        run: String,
        job: String,
        status: Status,
        reason: Option<String>,
    },
    Run {
        run: String,
        status: Status,
    },
}

fn lossy<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(data))
}

fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    String::deserialize(d).map(String::into_bytes)
}

impl Live {
    fn run(&self) -> &str {
        match self {
            Live::Log { run, .. } | Live::Job { run, .. } | Live::Run { run, .. } => run,
        }
    }
}

/// Publishes one run's engine events.
#[derive(educe::Educe)]
#[educe(Debug)]
pub struct BroadcastSink {
    pub run: String,
    #[educe(Debug(ignore))]
    pub tx: broadcast::Sender<Arc<Live>>,
}

impl EventSink for BroadcastSink {
    fn event(&self, event: &EngineEvent<'_>) {
        let live = match event {
            EngineEvent::Output { job, offset, data } => Live::Log {
                run: self.run.clone(),
                job: job.to_string(),
                offset: *offset,
                data: data.to_vec(),
            },
            EngineEvent::JobStarted { job, .. } => Live::Job {
                run: self.run.clone(),
                job: job.to_string(),
                status: Status::Running,
                reason: None,
            },
            EngineEvent::JobFinished {
                job,
                status,
                reason,
                ..
            } => Live::Job {
                run: self.run.clone(),
                job: job.to_string(),
                status: *status,
                reason: reason.map(str::to_string),
            },
            EngineEvent::RunFinished { status, .. } => Live::Run {
                run: self.run.clone(),
                status: *status,
            },
            _ => return,
        };
        // No subscriber is fine: nobody is watching.
        let _ = self.tx.send(Arc::new(live));
    }
}

type Out = mpsc::Sender<Result<Event, Infallible>>;

fn event(kind: &str, data: &impl Serialize) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event(kind)
        .data(serde_json::to_string(data).unwrap_or_default()))
}

/// Reads `[from, ..)` of a job's stored log, at most `limit` bytes.
fn read_from(path: &std::path::Path, from: u64, limit: u64) -> Vec<u8> {
    let Ok(Some(mut f)) = ferry_store::open_log(path) else {
        return Vec::new();
    };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(limit).read_to_end(&mut buf);
    buf
}

/// Sends stored log bytes of `job` from `sent[job]` up to `until` (or the end).
async fn catch_up(
    state: &AppState,
    run: &Run,
    job: &str,
    job_id: &str,
    sent: &mut HashMap<String, u64>,
    until: Option<u64>,
    out: &Out,
) -> Result<(), ()> {
    let path = state.store.log_path(&run.id, job_id);
    let deadline = Instant::now() + 3 * ferry_store::logs::IDLE;
    loop {
        let from = *sent.get(job).unwrap_or(&0);
        let limit = match until {
            Some(u) if u <= from => return Ok(()),
            Some(u) => (u - from).min(256 << 10),
            None => 256 << 10,
        };
        let p = path.clone();
        let bytes = tokio::task::spawn_blocking(move || read_from(&p, from, limit))
            .await
            .unwrap_or_default();
        if bytes.is_empty() {
            // A gap the live events skipped over is in the files within
            // `ferry_store::logs::IDLE` (a big log's newest output waits in memory until
            // it is compressed): wait for it rather than leave a hole.
            if until.is_some() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
            return Ok(());
        }
        sent.insert(job.to_string(), from + bytes.len() as u64);
        let live = Live::Log {
            run: run.id.clone(),
            job: job.to_string(),
            offset: from,
            data: bytes,
        };
        out.send(event("log", &live)).await.map_err(|_| ())?;
    }
}

/// Streams one run to one client until the run ends or the client goes away.
pub(crate) async fn stream(
    state: AppState,
    run: Run,
    mut rx: broadcast::Receiver<Arc<Live>>,
    out: Out,
) {
    let _ = stream_inner(&state, &run, &mut rx, &out).await;
}

async fn stream_inner(
    state: &AppState,
    run: &Run,
    rx: &mut broadcast::Receiver<Arc<Live>>,
    out: &Out,
) -> Result<(), ()> {
    // 1. What is stored.
    let jobs = state.store.jobs(&run.id).await.map_err(|_| ())?;
    let ids: HashMap<String, String> = jobs
        .iter()
        .map(|j| (j.name.clone(), j.id.clone()))
        .collect();
    let current = state.store.run_by_id(&run.id).await.map_err(|_| ())?;
    out.send(event(
        "run",
        &Live::Run {
            run: run.id.clone(),
            status: current.status,
        },
    ))
    .await
    .map_err(|_| ())?;
    let mut sent: HashMap<String, u64> = HashMap::new();
    for job in &jobs {
        let live = Live::Job {
            run: run.id.clone(),
            job: job.name.clone(),
            status: job.status,
            reason: job.reason.clone(),
        };
        out.send(event("job", &live)).await.map_err(|_| ())?;
        catch_up(state, run, &job.name, &job.id, &mut sent, None, out).await?;
    }
    if current.status.is_finished() {
        return out
            .send(event(
                "end",
                &Live::Run {
                    run: run.id.clone(),
                    status: current.status,
                },
            ))
            .await
            .map_err(|_| ());
    }
    // 2. Live, dropping what was already sent and filling any gap from the stored log.
    loop {
        let live = match rx.recv().await {
            Ok(l) => l,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too slow: what was missed is in the stored logs.
                for (name, id) in &ids {
                    catch_up(state, run, name, id, &mut sent, None, out).await?;
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        if live.run() != run.id {
            continue;
        }
        match live.as_ref() {
            Live::Log {
                job, offset, data, ..
            } => {
                let have = *sent.get(job).unwrap_or(&0);
                let end = offset + data.len() as u64;
                if end <= have {
                    continue; // already sent from the stored log
                }
                if *offset > have {
                    // A gap: fill it from the stored log first.
                    if let Some(id) = ids.get(job) {
                        catch_up(state, run, job, id, &mut sent, Some(*offset), out).await?;
                    }
                }
                let have = *sent.get(job).unwrap_or(&0);
                let skip = (have.saturating_sub(*offset) as usize).min(data.len());
                let rest = &data[skip..];
                if !rest.is_empty() {
                    let l = Live::Log {
                        run: run.id.clone(),
                        job: job.clone(),
                        offset: offset + skip as u64,
                        data: rest.to_vec(),
                    };
                    out.send(event("log", &l)).await.map_err(|_| ())?;
                }
                sent.insert(job.clone(), end);
            }
            Live::Job { .. } => out
                .send(event("job", live.as_ref()))
                .await
                .map_err(|_| ())?,
            Live::Run { status, .. } => {
                if status.is_finished() {
                    return out.send(event("end", live.as_ref())).await.map_err(|_| ());
                }
                out.send(event("run", live.as_ref()))
                    .await
                    .map_err(|_| ())?;
            }
        }
    }
}
