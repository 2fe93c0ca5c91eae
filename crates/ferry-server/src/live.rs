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
    out: &Slow,
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

/// Live streams of one run (or one repository's delivery) at most, of one caller, and
/// in all: past them a client is told to come back later, so that many idle
/// connections cannot hold the server's memory and tasks, and one token cannot take
/// every place.
pub const PER_RUN: usize = 64;
pub const PER_CALLER: usize = 32;
/// Anonymous readers (`--public-reads`) share one caller's count, larger.
pub const ANONYMOUS: usize = 256;
pub const IN_ALL: usize = 1024;

/// How long a client may leave an event untaken before its stream is ended; it
/// reconnects with the offsets it has (`?offsets=`), losing nothing.
pub const SLOW: Duration = Duration::from_secs(30);

/// The live streams open now, by what they follow and by caller.
#[derive(Debug, Clone, Default)]
pub struct Subscribers(Arc<std::sync::Mutex<Counts>>);

#[derive(Debug, Default)]
pub struct Counts {
    by_topic: HashMap<String, usize>,
    by_caller: HashMap<String, usize>,
}

/// One open stream; ends its counts when dropped.
#[derive(Debug)]
pub struct Subscription {
    of: Subscribers,
    topic: String,
    caller: String,
}

fn take(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Subscribers {
    /// A place for a stream of `topic` (a run's id, `repo:ID` for a repository's
    /// delivery) for `caller` (a user id; empty: anonymous), or why there is none.
    pub fn join(&self, topic: &str, caller: &str) -> Result<Subscription, String> {
        let mut open = self.0.lock().map_err(|_| "the stream table is unusable")?;
        let all: usize = open.by_topic.values().sum();
        let here = open.by_topic.get(topic).copied().unwrap_or(0);
        let caller = if caller.is_empty() { "" } else { caller };
        let theirs = open.by_caller.get(caller).copied().unwrap_or(0);
        let (caller_limit, who) = if caller.is_empty() {
            (ANONYMOUS, "anonymous readers have")
        } else {
            (PER_CALLER, "you have")
        };
        if here >= PER_RUN {
            return Err(format!(
                "{topic} has {PER_RUN} live streams already; try again later"
            ));
        }
        if theirs >= caller_limit {
            return Err(format!(
                "{who} {caller_limit} live streams open already; close one first"
            ));
        }
        if all >= IN_ALL {
            return Err(format!(
                "the server has {IN_ALL} live streams already; try again later"
            ));
        }
        open.by_topic.insert(topic.to_string(), here + 1);
        open.by_caller.insert(caller.to_string(), theirs + 1);
        Ok(Subscription {
            of: self.clone(),
            topic: topic.to_string(),
            caller: caller.to_string(),
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut open) = self.of.0.lock() {
            take(&mut open.by_topic, &self.topic);
            take(&mut open.by_caller, &self.caller);
        }
    }
}

/// Streams one run to one client until the run ends or the client goes away (or takes
/// nothing for [`SLOW`]); `offsets`: the bytes of each job's log the client has already.
pub(crate) async fn stream(
    state: AppState,
    run: Run,
    mut rx: broadcast::Receiver<Arc<Live>>,
    out: Out,
    offsets: HashMap<String, u64>,
    _place: Subscription,
) {
    let out = Slow(out);
    let _ = stream_inner(&state, &run, &mut rx, &out, offsets).await;
}

/// The client's side of a stream, whose sends give up on a client that takes nothing
/// for [`SLOW`].
pub(crate) struct Slow(pub(crate) Out);

impl Slow {
    pub(crate) async fn send(&self, ev: Result<Event, Infallible>) -> Result<(), ()> {
        match tokio::time::timeout(SLOW, self.0.send(ev)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}

async fn stream_inner(
    state: &AppState,
    run: &Run,
    rx: &mut broadcast::Receiver<Arc<Live>>,
    out: &Slow,
    offsets: HashMap<String, u64>,
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
    let mut sent: HashMap<String, u64> = offsets;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Streams are counted per run, per caller and in all; a place is given back when
    /// its stream ends.
    #[test]
    fn live_streams_are_limited_per_run_per_caller_and_in_all() {
        let subs = Subscribers::default();
        let mut held: Vec<Subscription> = (0..PER_RUN)
            .map(|i| subs.join("r1", &format!("u{}", i % 4)).expect("a place"))
            .collect();
        let full = subs.join("r1", "u9").expect_err("run full");
        assert!(full.contains("r1 has 64 live streams already"), "{full}");
        assert!(subs.join("r2", "u9").is_ok(), "another run still may");
        held.pop();
        assert!(subs.join("r1", "u9").is_ok(), "a place came back");
        // One caller holds no more than its share, whatever the runs.
        let mine: Vec<Subscription> = (0..PER_CALLER)
            .map(|i| subs.join(&format!("m{i}"), "hog").expect("mine"))
            .collect();
        let hog = subs.join("m-last", "hog").expect_err("the caller's share");
        assert!(hog.contains("you have 32 live streams open"), "{hog}");
        assert!(subs.join("m-last", "someone-else").is_ok());
        drop(mine);
        assert!(subs.join("m-last", "hog").is_ok(), "its places came back");
        let mut many = Vec::new();
        for i in 0..IN_ALL {
            match subs.join(&format!("other-{i}"), &format!("c{i}")) {
                Ok(s) => many.push(s),
                Err(e) => {
                    assert!(e.contains("the server has 1024"), "{e}");
                    break;
                }
            }
        }
        assert!(subs.join("r9", "c-new").is_err(), "the server is full");
        drop(many);
        drop(held);
        assert!(subs.join("r9", "").is_ok(), "anonymous");
        let open = subs.0.lock().expect("lock");
        assert!(open.by_topic.len() <= 1 && open.by_caller.len() <= 1);
    }

    /// A client that takes nothing for [`SLOW`] is let go (its stream ends, its place
    /// is given back); one that takes events is not.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_is_let_go() {
        let (tx, mut rx) = mpsc::channel(1);
        let out = Slow(tx);
        assert_eq!(out.send(event("run", &"first")).await, Ok(()));
        let started = tokio::time::Instant::now();
        assert_eq!(out.send(event("run", &"second")).await, Err(()), "full");
        assert!(started.elapsed() >= SLOW);
        assert!(rx.recv().await.is_some());
        assert_eq!(out.send(event("run", &"third")).await, Ok(()), "taken");
    }
}
