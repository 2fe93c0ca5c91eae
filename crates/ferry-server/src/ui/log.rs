//! A job's log in the page: built for size. The page shows a window of at most
//! [`WINDOW_LINES`] lines and [`WINDOW_BYTES`] bytes (by default the log's end); earlier
//! and later windows come by byte range (links, or `lines` fragments the page's script
//! fetches), a line by its number (`?line=`, through the log's time index), and a
//! search reads the whole log on the server. The page never holds the whole log, and
//! every cut is said on the page.

use std::io::{Read, Seek, SeekFrom};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_store::{Job, LogIndexEntry, Repository, Run, Step, TestSummary};

use super::pages::{Html, error_page, took};
use super::{Chrome, Nav, Ui, Viewer};
use crate::ApiError;

/// The most lines one window shows.
pub const WINDOW_LINES: usize = 1000;
/// The most bytes one window reads.
pub const WINDOW_BYTES: u64 = 512 << 10;
/// The most lines a search lists.
pub const SEARCH_LIMIT: usize = 200;
/// How long one search may read; past it the page says how far it got.
pub const SEARCH_TIME: std::time::Duration = std::time::Duration::from_secs(5);
/// Searches at once, in all (each reads a whole log on a thread of its own).
static SEARCHES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// Whole-log downloads at once, in all; and how long one may wait for a client that
/// reads nothing before it is ended.
const DOWNLOADS: usize = 8;
static DOWNLOADING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(DOWNLOADS);
const STALLED: std::time::Duration = std::time::Duration::from_secs(30);

/// A reader that ends (reads nothing more) at its deadline, saying so.
struct Budget<R> {
    inner: R,
    deadline: std::time::Instant,
    read: u64,
    ran_out: bool,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if std::time::Instant::now() >= self.deadline {
            self.ran_out = true;
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Which part of the log to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The end.
    Tail,
    /// What comes before this byte.
    Before(u64),
    /// What starts at this byte (a line's start).
    From(u64),
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct LogParams {
    before: Option<u64>,
    from: Option<u64>,
    /// 1-based: show the log around this line.
    line: Option<u64>,
    /// Search the whole log for this.
    q: Option<String>,
    /// Show each line's time.
    ts: Option<String>,
}

impl LogParams {
    fn show_time(&self) -> bool {
        self.ts
            .as_deref()
            .is_some_and(|t| !t.is_empty() && t != "0")
    }
}

/// One shown line.
#[derive(Debug, Clone)]
pub struct Line {
    /// 1-based.
    pub number: u64,
    /// Its text as HTML (escaped, colours as classes).
    pub html: String,
    /// When its first byte was written (`HH:MM:SS.mmm`, UTC).
    pub time: String,
}

/// A window of a log.
#[derive(Debug, Clone, Default)]
pub struct Slice {
    /// Where it starts and ends, in bytes.
    pub start: u64,
    pub end: u64,
    /// The log's size when read.
    pub len: u64,
    pub lines: Vec<Line>,
    /// The first line began before `start` (a line longer than a window).
    pub head_cut: bool,
    /// The last line has not ended (yet).
    pub open_end: bool,
}

impl Slice {
    /// The number of the line after the window (the next to show).
    pub fn next_line(&self) -> u64 {
        self.lines.last().map_or(1, |l| l.number + 1)
    }
    pub fn first_line(&self) -> u64 {
        self.lines.first().map_or(1, |l| l.number)
    }
}

/// Reads a window of a log: `(start, bytes, len, head_cut)`, cut to whole lines.
fn read_window(
    path: &std::path::Path,
    window: Window,
) -> std::io::Result<(u64, Vec<u8>, u64, bool)> {
    let Some(mut log) = ferry_store::open_log(path)? else {
        return Ok((0, Vec::new(), 0, false));
    };
    let len = log.len()?;
    let read = |log: &mut ferry_store::LogFile, from: u64, to: u64| -> std::io::Result<Vec<u8>> {
        log.seek(SeekFrom::Start(from))?;
        let mut buf = Vec::with_capacity((to - from) as usize);
        log.take(to - from).read_to_end(&mut buf)?;
        Ok(buf)
    };
    // Cuts the head of `bytes` (starting at `start`) to the next line's start.
    let align = |start: u64, bytes: Vec<u8>| -> (u64, Vec<u8>, bool) {
        match memchr::memchr(b'\n', &bytes) {
            Some(nl) if nl + 1 < bytes.len() => {
                (start + nl as u64 + 1, bytes[nl + 1..].to_vec(), false)
            }
            _ => (start, bytes, true),
        }
    };
    let (start, bytes, head_cut) = match window {
        Window::Tail => {
            // Never more than a window back, however few newlines the log has.
            let from =
                ferry_store::tail_offset_within(&mut log, WINDOW_LINES as u64, WINDOW_BYTES)?;
            let bytes = read(&mut log, from, len)?;
            let at_line_start = from == 0 || read(&mut log, from - 1, from)? == b"\n";
            if at_line_start {
                (from, bytes, false)
            } else {
                align(from, bytes)
            }
        }
        Window::Before(before) => {
            let before = before.min(len);
            let from = before.saturating_sub(WINDOW_BYTES);
            let bytes = read(&mut log, from, before)?;
            let (mut start, mut bytes, cut) = if from > 0 {
                align(from, bytes)
            } else {
                (0, bytes, false)
            };
            // At most WINDOW_LINES lines: the last ones.
            let mut seen = 0;
            let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            if let Some(nl) = memchr::memrchr_iter(b'\n', body).find(|_| {
                seen += 1;
                seen == WINDOW_LINES
            }) {
                start += nl as u64 + 1;
                bytes = bytes[nl + 1..].to_vec();
                (start, bytes, false)
            } else {
                (start, bytes, cut)
            }
        }
        Window::From(from) => {
            let from = from.min(len);
            let to = (from + WINDOW_BYTES).min(len);
            let mut bytes = read(&mut log, from, to)?;
            if to < len
                && let Some(nl) = memchr::memrchr(b'\n', &bytes)
            {
                bytes.truncate(nl + 1);
            }
            if let Some(nl) = memchr::memchr_iter(b'\n', &bytes).nth(WINDOW_LINES - 1) {
                bytes.truncate(nl + 1);
            }
            // Not at a line's start: the window goes on a line begun before it.
            let cut = from > 0 && read(&mut log, from - 1, from)? != b"\n";
            (from, bytes, cut)
        }
    };
    Ok((start, bytes, len, head_cut))
}

/// Counts the newlines in `[from, to)` of a log.
fn newlines(path: &std::path::Path, from: u64, to: u64) -> std::io::Result<u64> {
    let Some(mut log) = ferry_store::open_log(path)? else {
        return Ok(0);
    };
    log.seek(SeekFrom::Start(from))?;
    let mut rest = log.take(to.saturating_sub(from));
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let got = rest.read(&mut buf)?;
        if got == 0 {
            return Ok(n);
        }
        n += memchr::memchr_iter(b'\n', &buf[..got]).count() as u64;
    }
}

fn io_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("reading a log: {e}"))
}

/// A window of job `job`'s log, its lines numbered and (with `times`) timed.
pub async fn slice(
    s: &crate::AppState,
    run: &Run,
    job: &Job,
    window: Window,
) -> Result<Slice, ApiError> {
    let path = s.store.log_path(&run.id, &job.id);
    let p = path.clone();
    let (start, bytes, len, head_cut) = tokio::task::spawn_blocking(move || {
        match read_window(&p, window)? {
            // Past the end (a line the log does not have, a stale byte): its end.
            (start, bytes, len, _) if bytes.is_empty() && start >= len && len > 0 => {
                read_window(&p, Window::Tail)
            }
            found => Ok(found),
        }
    })
    .await
    .map_err(io_error)?
    .map_err(io_error)?;
    let end = start + bytes.len() as u64;
    let index = s.store.log_index_range(&job.id, start, end).await?;
    // The number of the window's first line: from the index entry at or before it.
    let (base_offset, base_line) = index
        .first()
        .filter(|e| e.byte_offset as u64 <= start)
        .map_or((0, 0), |e| (e.byte_offset as u64, e.first_line as u64));
    let p = path.clone();
    let before = tokio::task::spawn_blocking(move || newlines(&p, base_offset, start))
        .await
        .map_err(io_error)?
        .map_err(io_error)?;
    let first = base_line + before + 1;
    Ok(Slice {
        start,
        end,
        len,
        lines: render_lines(&bytes, start, first, &index),
        head_cut,
        open_end: bytes.last().is_some_and(|b| *b != b'\n'),
    })
}

/// `bytes` (whole lines from byte `start`, the first numbered `first`) as HTML lines,
/// each with the time of the index entry that holds its first byte.
pub fn render_lines(bytes: &[u8], start: u64, first: u64, index: &[LogIndexEntry]) -> Vec<Line> {
    let mut ansi = super::ansi::AnsiHtml::new();
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    let mut lines = Vec::new();
    let (mut at, mut entry) = (start, 0usize);
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        while entry + 1 < index.len() && index[entry + 1].byte_offset as u64 <= at {
            entry += 1;
        }
        let time = index
            .get(entry)
            .filter(|e| e.byte_offset as u64 <= at)
            .and_then(|e| chrono::DateTime::from_timestamp_millis(e.ts))
            .map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        // A carriage return redraws the line (progress bars): its last drawing counts.
        let text = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = match memchr::memrchr(b'\r', text) {
            Some(cr) => &text[cr + 1..],
            None => text,
        };
        lines.push(Line {
            number: first + i as u64,
            html: ansi.push(text),
            time,
        });
        ansi.end_line();
        at += raw.len() as u64 + 1;
    }
    lines
}

/// The job's page: its steps, tests, and a window of its log.
#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    c: Chrome,
    repo: Repository,
    run: Run,
    job: Job,
    steps: Vec<Step>,
    tests: Option<TestSummary>,
    slice: Slice,
    /// The line asked for (highlighted).
    target: u64,
    show_ts: bool,
    q: String,
    found: Vec<(u64, String)>,
    more_found: bool,
    /// The search ran out of time after this many bytes.
    searched: Option<u64>,
    /// The job still writes: the page follows its log.
    live: bool,
    base: String,
    took: String,
    names_json: String,
}

/// The lines alone, for the page's script (`lines?before=` / `?from=`).
#[derive(Template)]
#[template(path = "log_lines.html")]
struct LinesFragment {
    slice: Slice,
    target: u64,
    show_ts: bool,
}

async fn find(ui: &Ui, run: &str, job: &str) -> Result<(Repository, Run, Job), ApiError> {
    let (run, job) = crate::api::runs::run_job(&ui.app, run, job).await?;
    let repo = ui.app.store.repository(&run.repository_id).await?;
    Ok((repo, run, job))
}

/// `GET /ui/runs/{run}/jobs/{job}`.
pub(crate) async fn page(
    State(ui): State<Ui>,
    viewer: Viewer,
    Path((run, job)): Path<(String, String)>,
    Query(q): Query<LogParams>,
) -> Response {
    match page_inner(&ui, &viewer, &run, &job, &q).await {
        Ok(r) => r,
        Err(e) => error_page(e),
    }
}

async fn page_inner(
    ui: &Ui,
    viewer: &Viewer,
    run: &str,
    job: &str,
    q: &LogParams,
) -> Result<Response, ApiError> {
    let (repo, run, job) = find(ui, run, job).await?;
    let (window, target) = window_of(ui, &run, &job, q).await?;
    let slice = slice(&ui.app, &run, &job, window).await?;
    let steps = ui.app.store.steps(&job.id).await?;
    let names: Vec<String> = ui
        .app
        .store
        .jobs(&run.id)
        .await?
        .into_iter()
        .map(|j| j.name)
        .collect();
    let needle = q.q.clone().unwrap_or_default();
    let mut searched = None;
    let (found, more_found) = if needle.trim().chars().count() < 2 {
        (Vec::new(), false)
    } else {
        // A few searches at once; each reads for at most SEARCH_TIME.
        let _turn = SEARCHES.acquire().await.map_err(ApiError::internal)?;
        let path = ui.app.store.log_path(&run.id, &job.id);
        let n = needle.clone();
        let (found, more, budget) = tokio::task::spawn_blocking(move || {
            let Some(log) = ferry_store::open_log(&path)? else {
                return Ok::<_, std::io::Error>((Vec::new(), false, None));
            };
            let mut budget = Budget {
                inner: log,
                deadline: std::time::Instant::now() + SEARCH_TIME,
                read: 0,
                ran_out: false,
            };
            let (found, more) = ferry_store::search_log(
                std::io::BufReader::with_capacity(1 << 20, &mut budget),
                &n,
                SEARCH_LIMIT,
            )?;
            Ok((found, more, Some((budget.read, budget.ran_out))))
        })
        .await
        .map_err(io_error)?
        .map_err(io_error)?;
        if let Some((read, true)) = budget {
            searched = Some(read);
        }
        let found = found
            .into_iter()
            .map(|f| (f.line, super::ansi::strip(&f.text)))
            .collect();
        (found, more)
    };
    let live = !job.status.is_finished() && slice.end >= slice.len;
    let page = JobPage {
        c: viewer.chrome(Nav::repo(&repo.name, "runs")),
        base: format!("/ui/runs/{}/jobs/{}", run.id, job.id),
        tests: job.tests.clone(),
        took: took(job.started_at, job.finished_at),
        names_json: serde_json::to_string(&names).unwrap_or_default(),
        repo,
        run,
        job,
        steps,
        slice,
        target,
        show_ts: q.show_time(),
        q: needle,
        found,
        more_found,
        searched,
        live,
    };
    Ok(Html(page).into_response())
}

/// The window a page's parameters ask for, and the line to mark.
async fn window_of(
    ui: &Ui,
    run: &Run,
    job: &Job,
    q: &LogParams,
) -> Result<(Window, u64), ApiError> {
    Ok(match (q.line, q.before, q.from) {
        (Some(line), ..) => {
            // A few lines of context above the one asked for.
            let from = line.saturating_sub(10).max(1);
            let offset = match ui.app.store.log_at_line(&run.id, &job.id, from).await? {
                Some((offset, _)) => offset,
                None => 0,
            };
            (Window::From(offset), line)
        }
        (None, Some(before), _) => (Window::Before(before), 0),
        (None, None, Some(from)) => (Window::From(from), 0),
        (None, None, None) => (Window::Tail, 0),
    })
}

/// `GET /ui/runs/{run}/jobs/{job}/lines?before=|from=`: a window's lines as an HTML
/// fragment, with where it starts and ends in `X-Ferry-Log-Start` and
/// `X-Ferry-Log-End`.
pub(crate) async fn lines(
    State(ui): State<Ui>,
    _viewer: Viewer,
    Path((run, job)): Path<(String, String)>,
    Query(q): Query<LogParams>,
) -> Response {
    let inner = async {
        let (_, run, job) = find(&ui, &run, &job).await?;
        let (window, target) = window_of(&ui, &run, &job, &q).await?;
        let slice = slice(&ui.app, &run, &job, window).await?;
        Ok::<_, ApiError>((slice, target))
    };
    match inner.await {
        Ok((slice, target)) => {
            let (start, end, head_cut) = (slice.start, slice.end, slice.head_cut);
            let fragment = LinesFragment {
                slice,
                target,
                show_ts: q.show_time(),
            };
            let mut resp = Html(fragment).into_response();
            let h = resp.headers_mut();
            for (name, value) in [
                ("x-ferry-log-start", start.to_string()),
                ("x-ferry-log-end", end.to_string()),
                ("x-ferry-log-head-cut", head_cut.to_string()),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(name, v);
                }
            }
            resp
        }
        Err(e) => error_page(e),
    }
}

/// `GET /ui/runs/{run}/jobs/{job}/raw`: the whole log as it was written, as a download
/// (streamed: never all in memory).
pub(crate) async fn raw(
    State(ui): State<Ui>,
    _viewer: Viewer,
    Path((run, job)): Path<(String, String)>,
) -> Response {
    let (repo, run, job) = match find(&ui, &run, &job).await {
        Ok(found) => found,
        Err(e) => return error_page(e),
    };
    let Ok(place) = DOWNLOADING.try_acquire() else {
        return error_page(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::error::ErrorCode::Busy,
            format!("{DOWNLOADS} logs are being downloaded already; try again in a moment"),
        ));
    };
    place.forget();
    let path = ui.app.store.log_path(&run.id, &job.id);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::task::spawn_blocking(move || {
        // The place is given back however this ends.
        struct Place;
        impl Drop for Place {
            fn drop(&mut self) {
                DOWNLOADING.add_permits(1);
            }
        }
        let _place = Place;
        let mut log = match ferry_store::open_log(&path) {
            Ok(Some(log)) => log,
            Ok(None) => return,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; 256 << 10];
            let mut item = match log.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    Ok(buf)
                }
                Err(e) => Err(e),
            };
            let last = item.is_err();
            // A client that takes nothing for STALLED is let go.
            let since = std::time::Instant::now();
            loop {
                match tx.try_send(item) {
                    Ok(()) => break,
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(back)) => {
                        if since.elapsed() > STALLED {
                            return;
                        }
                        item = back;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
            }
            if last {
                return;
            }
        }
    });
    let name: String = format!("{}-{}-{}.log", repo.name, run.number, job.name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}
