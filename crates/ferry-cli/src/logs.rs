//! `ferry runs` and `ferry logs`.

use std::io::{Read, Seek as _, Write};

use ferry_store::Status;

use crate::args::{LogsArgs, RunsArgs};
use crate::{Failure, exit, local, style};

/// A time (milliseconds since the epoch) as local `YYYY-MM-DD HH:MM:SS`.
pub fn local_time(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| {
        t.with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    })
}

pub async fn runs(args: RunsArgs) -> Result<u8, Failure> {
    if args.server.server.is_some() {
        return crate::client::runs(&args.server, args.repo.clone(), args.limit, args.json).await;
    }
    let local = local::open(&args.dir, &args.store).await?;
    let runs = local
        .store
        .list_runs(&local.repository_id, args.limit as i64)
        .await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        return Ok(exit::OK);
    }
    if runs.is_empty() {
        println!("no runs yet: start one with `ferry run`");
        return Ok(exit::OK);
    }
    let color = style::color_enabled(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let mut out = format!(
        "{:>4}  {:<9}  {:<12}  {:<20}  {:<10}  {:<19}  {:>8}\n",
        "RUN", "STATUS", "EVENT", "REF", "COMMIT", "STARTED", "DURATION"
    );
    for r in runs {
        let reference = r
            .tag
            .clone()
            .or(r.branch.clone())
            .unwrap_or_else(|| r.git_ref.clone());
        let commit = format!(
            "{}{}",
            &r.commit_sha[..r.commit_sha.len().min(8)],
            if r.dirty { "+" } else { "" }
        );
        let duration = match (r.started_at, r.finished_at) {
            (Some(s), Some(f)) => style::duration((f - s).max(0) as u64),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:>4}  {}  {:<12}  {:<20}  {:<10}  {:<19}  {:>8}\n",
            r.number,
            style::paint(
                &format!("{:<9}", r.status.as_str()),
                style::status_code(r.status),
                color
            ),
            r.event,
            reference,
            commit,
            local_time(r.started_at.unwrap_or(r.created_at)).unwrap_or_default(),
            duration
        ));
    }
    print!("{out}");
    Ok(exit::OK)
}

pub async fn logs(args: LogsArgs) -> Result<u8, Failure> {
    if args.server.server.is_some() {
        let job = args.job.as_deref();
        let part = match (args.tail, args.range) {
            (Some(n), _) => crate::client::LogPart::Tail(n),
            (None, Some(range)) => crate::client::LogPart::Lines(range),
            (None, None) => crate::client::LogPart::All,
        };
        return crate::client::logs(&args.server, &args.run, job, args.follow, part).await;
    }
    if args.follow {
        return Err(Failure::usage(
            "--follow needs a server (--server or FERRY_SERVER)",
        ));
    }
    let local = local::open(&args.dir, &args.store).await?;
    let number = if args.run == "last" {
        local
            .store
            .list_runs(&local.repository_id, 1)
            .await?
            .first()
            .map(|r| r.number)
            .ok_or_else(|| Failure::usage("there are no runs yet"))?
    } else {
        args.run
            .trim_start_matches('#')
            .parse::<i64>()
            .map_err(|_| {
                Failure::usage(format!(
                    "`{}` is not a run number (see `ferry runs`)",
                    args.run
                ))
            })?
    };
    let run = local
        .store
        .run_by_number(&local.repository_id, number)
        .await
        .map_err(|e| match e {
            ferry_store::Error::NotFound(_) => {
                Failure::usage(format!("there is no run {number} (see `ferry runs`)"))
            }
            e => e.into(),
        })?;
    let jobs = local.store.jobs(&run.id).await?;
    let selected: Vec<&ferry_store::Job> = match &args.job {
        None => jobs.iter().collect(),
        Some(name) => {
            let exact: Vec<_> = jobs.iter().filter(|j| &j.name == name).collect();
            let matched = if exact.is_empty() {
                jobs.iter()
                    .filter(|j| j.name.split(" (").next() == Some(name.as_str()))
                    .collect()
            } else {
                exact
            };
            if matched.is_empty() {
                let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
                return Err(Failure::usage(format!(
                    "run {number} has no job `{name}`; its jobs are: {}",
                    names.join(", ")
                )));
            }
            matched
        }
    };
    let color = style::color_enabled(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let prefix_jobs = selected.len() > 1;
    let width = selected
        .iter()
        .map(|j| j.name.chars().count())
        .max()
        .unwrap_or(0);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    for (i, job) in selected.iter().enumerate() {
        if job.status == Status::Skipped {
            if prefix_jobs {
                let _ = writeln!(
                    out,
                    "{:<width$} │ (skipped: {})",
                    job.name,
                    job.reason.clone().unwrap_or_default()
                );
            }
            continue;
        }
        let prefix = if prefix_jobs {
            format!(
                "{} │ ",
                style::paint(&format!("{:<width$}", job.name), style::job_color(i), color)
            )
        } else {
            String::new()
        };
        let written = if args.timestamps {
            let reader = local.store.read_log(&run.id, &job.id).await?;
            write_stamped(reader, args.range, prefix.as_bytes(), &mut out)
        } else {
            // Without timestamps the index is not needed: stream the log in big chunks
            // (with --tail, from where its last lines start; with --range, from where its
            // first line starts, found from the index).
            let opened = match args.range {
                Some(range) => local
                    .store
                    .log_at_line(&run.id, &job.id, range.first)
                    .await
                    .map(|found| found.map(|(_, log)| log))
                    .map_err(|e| std::io::Error::other(e.to_string())),
                None => local.store.open_log(&run.id, &job.id),
            };
            match opened {
                Ok(Some(mut log)) => {
                    let start = match args.tail {
                        Some(n) => ferry_store::tail_offset(&mut log, n)
                            .and_then(|at| log.seek(std::io::SeekFrom::Start(at))),
                        None => Ok(0),
                    };
                    let lines = args.range.and_then(|r| r.count()).unwrap_or(u64::MAX);
                    start.and_then(|_| {
                        write_prefixed(LineLimit::new(log, lines), prefix.as_bytes(), &mut out)
                    })
                }
                Ok(None) => Ok(()),
                Err(e) => return Err(Failure::failed(format!("cannot read the log: {e}"))),
            }
        };
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                // The reader went away (e.g. `| head`): stop quietly.
                return Ok(exit::OK);
            }
            return Err(Failure::failed(format!("cannot show the log: {e}")));
        }
    }
    let _ = out.flush();
    Ok(exit::OK)
}

/// Copies a log, putting `prefix` before every line (and ending an unfinished last line).
fn write_prefixed(mut log: impl Read, prefix: &[u8], out: &mut impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    let mut at_line_start = true;
    loop {
        let n = log.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if prefix.is_empty() {
            out.write_all(chunk)?;
            at_line_start = chunk.last() == Some(&b'\n');
            continue;
        }
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', chunk) {
            if at_line_start {
                out.write_all(prefix)?;
            }
            out.write_all(&chunk[start..=nl])?;
            start = nl + 1;
            at_line_start = true;
        }
        if start < chunk.len() {
            if at_line_start {
                out.write_all(prefix)?;
            }
            out.write_all(&chunk[start..])?;
            at_line_start = false;
        }
    }
    if !at_line_start {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes each line with its prefix and the time it was written.
fn write_stamped(
    reader: ferry_store::LogReader,
    range: Option<crate::args::LineRange>,
    prefix: &[u8],
    out: &mut impl Write,
) -> std::io::Result<()> {
    for line in reader {
        let line = line?;
        if let Some(range) = range {
            if range.last.is_some_and(|last| line.number as u64 > last) {
                break;
            }
            if !range.contains(line.number as u64) {
                continue;
            }
        }
        let stamp = chrono::DateTime::from_timestamp_millis(line.ts)
            .map(|t| format!("{} ", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")))
            .unwrap_or_default();
        out.write_all(prefix)?;
        out.write_all(stamp.as_bytes())?;
        out.write_all(&line.text)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads from a log up to the end of its `lines`-th line.
#[derive(Debug)]
pub(crate) struct LineLimit<R> {
    inner: R,
    left: u64,
}

impl<R> LineLimit<R> {
    pub(crate) fn new(inner: R, lines: u64) -> Self {
        Self { inner, left: lines }
    }
}

impl<R: Read> Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if self.left == u64::MAX {
            return Ok(n); // no limit
        }
        // Counted with SIMD first: logs can be dense with newlines.
        let lines = bytecount::count(&buf[..n], b'\n') as u64;
        if lines < self.left {
            self.left -= lines;
            return Ok(n);
        }
        let end = memchr::memchr_iter(b'\n', &buf[..n])
            .nth((self.left - 1) as usize)
            .map_or(n, |nl| nl + 1);
        self.left = 0;
        Ok(end)
    }
}
