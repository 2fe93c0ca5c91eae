//! A deployment's log: Ferry's own lines with a timestamp, and the output of what the
//! target runs (scripts, `kubectl`, a failed container), all masked.

use std::path::Path;

use chrono::Utc;
use ferry_exec::OutputSink;
use ferry_exec::mask::{FileSink, Masked, Masker};
use tokio_util::sync::CancellationToken;

/// The log file of one deployment. Everything written to it passes the same mask.
#[derive(Debug)]
pub struct DeployLog {
    out: Masked<Capped>,
}

/// The log file, up to a size: past it, a last line says so, the rest is dropped and
/// what the deployment runs is stopped.
#[derive(Debug)]
struct Capped {
    file: FileSink,
    written: u64,
    limit: Option<u64>,
    exceeded: Option<u64>,
    stop: CancellationToken,
}

impl OutputSink for Capped {
    fn chunk(&mut self, data: &[u8]) {
        if data.is_empty() || self.exceeded.is_some() {
            return;
        }
        if let Some(limit) = self.limit
            && self.written.saturating_add(data.len() as u64) > limit
        {
            let room = limit.saturating_sub(self.written) as usize;
            self.file.chunk(&data[..room.min(data.len())]);
            let end = format!(
                "\nferry: error: log limit of {} exceeded\n",
                ferry_engine::cache::human_bytes(limit)
            );
            self.file.chunk(end.as_bytes());
            self.written = limit;
            self.exceeded = Some(limit);
            self.stop.cancel();
            return;
        }
        self.written += data.len() as u64;
        self.file.chunk(data);
    }
}

impl DeployLog {
    /// Appends to `path` (a log that cannot be opened discards what is written).
    pub fn open(path: &Path) -> Self {
        let written = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let file = Capped {
            file: FileSink::append(path),
            written,
            limit: None,
            exceeded: None,
            stop: CancellationToken::new(),
        };
        Self {
            out: Masked::new(file, Masker::default()),
        }
    }

    /// The log takes at most `limit` bytes (`None`: no limit); past it, what the
    /// deployment runs is stopped (see [`stop`](Self::stop)).
    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.out.inner_mut().limit = limit;
        self
    }

    /// Cancelled once the log reaches its limit: what the deployment runs stops then.
    pub fn stop(&self) -> CancellationToken {
        self.out.inner().stop.clone()
    }

    /// Why the log ended early, if it did: `log limit of N exceeded`.
    pub fn exceeded(&self) -> Option<String> {
        self.out.inner().exceeded.map(|limit| {
            format!(
                "log limit of {} exceeded",
                ferry_engine::cache::human_bytes(limit)
            )
        })
    }

    /// Masks these values from now on (the deployment's secrets, once they are opened).
    pub fn set_masker(&mut self, masker: Masker) {
        self.out.set_masker(masker);
    }

    pub fn masker(&self) -> Masker {
        self.out.masker()
    }

    /// A line from Ferry: `2026-12-02T10:00:00.000Z TEXT`.
    pub fn line(&mut self, text: &str) {
        let stamp = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        self.out.flush();
        self.out.write_all(format!("{stamp} {text}\n").as_bytes());
    }

    /// Output of something the target ran, written whole.
    pub fn output(&mut self, data: &[u8]) {
        self.out.write_all(data);
    }

    /// Writes what the mask held back of streamed output.
    pub fn flush(&mut self) {
        self.out.flush();
    }
}

/// Streamed output (a script's): masked as it arrives; [`flush`](DeployLog::flush)
/// at its end.
impl OutputSink for DeployLog {
    fn chunk(&mut self, data: &[u8]) {
        self.out.chunk(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deployment's log stops at its limit with a line that says so, and stops what
    /// the deployment runs.
    #[test]
    fn a_deployment_log_stops_at_its_limit_and_says_so() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("d/1.log");
        let mut log = DeployLog::open(&path).with_limit(Some(100));
        let stop = log.stop();
        log.chunk(&[b'y'; 60]);
        assert!(!stop.is_cancelled());
        log.chunk(&[b'y'; 60]);
        log.chunk(b"more");
        log.flush();
        assert!(stop.is_cancelled());
        assert_eq!(
            log.exceeded().as_deref(),
            Some("log limit of 100 B exceeded")
        );
        let text = std::fs::read_to_string(&path).expect("log");
        assert_eq!(
            text,
            format!(
                "{}\nferry: error: log limit of 100 B exceeded\n",
                "y".repeat(100)
            )
        );
    }

    #[test]
    fn lines_and_output_are_masked() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("d/1.log");
        let mut log = DeployLog::open(&path);
        log.line("before hunter2-secret is known");
        log.set_masker(Masker::new([b"hunter2-secret".as_slice()]));
        log.line("deploying with hunter2-secret");
        log.chunk(b"script says hunter2-");
        log.chunk(b"secret\n");
        log.flush();
        log.output(b"container: hunter2-secret\n");
        let text = std::fs::read_to_string(&path).expect("log");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with(" before hunter2-secret is known"),
            "{text}"
        );
        assert!(lines[1].ends_with("Z deploying with ***"), "{text}");
        assert_eq!(&lines[2..], ["script says ***", "container: ***"]);
    }
}
