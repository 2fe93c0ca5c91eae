//! A deployment's log: Ferry's own lines with a timestamp, and the output of what the
//! target runs (scripts, `kubectl`, a failed container), all masked.

use std::path::Path;

use chrono::Utc;
use ferry_exec::OutputSink;
use ferry_exec::mask::{FileSink, Masked, Masker};

/// The log file of one deployment. Everything written to it passes the same mask.
#[derive(Debug)]
pub struct DeployLog {
    out: Masked<FileSink>,
}

impl DeployLog {
    /// Appends to `path` (a log that cannot be opened discards what is written).
    pub fn open(path: &Path) -> Self {
        Self {
            out: Masked::new(FileSink::append(path), Masker::default()),
        }
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
