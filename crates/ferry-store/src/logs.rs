//! Job logs: append-only files with a time index in the database.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use crate::{Result, Store, now_ms};

/// "Bytes from `byte_offset` on were read at `ts`": one entry per read that happened in
/// a new millisecond, so a line's time is that of the chunk holding its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogIndexEntry {
    pub byte_offset: i64,
    /// 0-based number of the line that holds `byte_offset`.
    pub first_line: i64,
    pub ts: i64,
}

// The columns [`log_index_entry_from_row`] reads (of `log_chunks`).
#[rustfmt::skip]
crate::row::record!(LOG_INDEX_COLUMNS, log_index_entry_from_row, LogIndexEntry {
    byte_offset, first_line, ts
});

/// Appends one job's output to its log file and indexes it by time. Index entries are
/// kept in memory until [`Store::save_log_index`] writes them in one batch.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    bytes: i64,
    newlines: i64,
    ends_with_newline: bool,
    last_ts: i64,
    pending: Vec<LogIndexEntry>,
}

impl LogWriter {
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let ts = now_ms();
        if ts != self.last_ts {
            self.pending.push(LogIndexEntry {
                byte_offset: self.bytes,
                first_line: self.newlines,
                ts,
            });
            self.last_ts = ts;
        }
        self.file.write_all(data)?;
        self.bytes += data.len() as i64;
        // SIMD counting: logs can be dense with newlines, where memchr (built for rare
        // matches) and a plain loop are several times slower.
        self.newlines += bytecount::count(data, b'\n') as i64;
        self.ends_with_newline = data.last() == Some(&b'\n');
        Ok(())
    }

    /// Index entries not yet saved.
    pub fn take_index(&mut self) -> Vec<LogIndexEntry> {
        std::mem::take(&mut self.pending)
    }

    pub fn bytes(&self) -> i64 {
        self.bytes
    }

    /// Lines written, counting an unfinished last line.
    pub fn lines(&self) -> i64 {
        self.newlines + i64::from(self.bytes > 0 && !self.ends_with_newline)
    }
}

/// One line of a stored log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// 1-based.
    pub number: i64,
    pub ts: i64,
    pub text: Vec<u8>,
}

/// Reads a stored log line by line, each with its timestamp.
#[derive(Debug)]
pub struct LogReader {
    reader: Option<BufReader<File>>,
    index: Vec<LogIndexEntry>,
    offset: i64,
    line: i64,
    at: usize,
}

impl Iterator for LogReader {
    type Item = std::io::Result<LogLine>;

    fn next(&mut self) -> Option<Self::Item> {
        let reader = self.reader.as_mut()?;
        let mut text = Vec::new();
        match reader.read_until(b'\n', &mut text) {
            Ok(0) => None,
            Ok(n) => {
                while self.at + 1 < self.index.len()
                    && self.index[self.at + 1].byte_offset <= self.offset
                {
                    self.at += 1;
                }
                let ts = self.index.get(self.at).map(|e| e.ts).unwrap_or(0);
                self.offset += n as i64;
                self.line += 1;
                if text.last() == Some(&b'\n') {
                    text.pop();
                }
                Some(Ok(LogLine {
                    number: self.line,
                    ts,
                    text,
                }))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl Store {
    pub fn log_path(&self, run_id: &str, job_id: &str) -> PathBuf {
        self.data_dir
            .join("logs")
            .join(run_id)
            .join(format!("{job_id}.log"))
    }

    /// Opens a job's log for appending (a retried job appends to the same log, and its
    /// line numbers and count go on from the earlier attempts').
    pub fn log_writer(&self, run_id: &str, job_id: &str) -> Result<LogWriter> {
        let path = self.log_path(run_id, job_id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let (mut newlines, mut last) = (0i64, b'\n');
        let mut reader = BufReader::with_capacity(1 << 16, &file);
        loop {
            let buf = reader.fill_buf()?;
            let Some(&end) = buf.last() else { break };
            newlines += bytecount::count(buf, b'\n') as i64;
            last = end;
            let n = buf.len();
            reader.consume(n);
        }
        let bytes = file.metadata()?.len() as i64;
        Ok(LogWriter {
            file,
            bytes,
            newlines,
            ends_with_newline: last == b'\n',
            last_ts: 0,
            pending: Vec::new(),
        })
    }

    /// A reader over a job's log; an empty reader if the job wrote nothing.
    pub async fn read_log(&self, run_id: &str, job_id: &str) -> Result<LogReader> {
        let rows = sqlx::query(&format!(
            "SELECT {LOG_INDEX_COLUMNS} FROM log_chunks WHERE job_id = $1 ORDER BY byte_offset"
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        let index = rows
            .iter()
            .map(log_index_entry_from_row)
            .collect::<Result<Vec<_>>>()?;
        let reader = match File::open(self.log_path(run_id, job_id)) {
            Ok(f) => Some(BufReader::with_capacity(1 << 16, f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        Ok(LogReader {
            reader,
            index,
            offset: 0,
            line: 0,
            at: 0,
        })
    }
}

/// Where the last `lines` lines of a log start: found by reading backwards from the end
/// in 64 KiB pieces, so it costs the same for a log of a kilobyte or of a gigabyte. A
/// newline ending the log does not start another line.
pub fn tail_offset<F: std::io::Read + std::io::Seek>(
    file: &mut F,
    lines: u64,
) -> std::io::Result<u64> {
    use std::io::SeekFrom;
    const PIECE: u64 = 64 << 10;
    let len = file.seek(SeekFrom::End(0))?;
    if lines == 0 {
        return Ok(len);
    }
    let mut end = len;
    let mut seen = 0u64;
    let mut buf = vec![0u8; PIECE as usize];
    while end > 0 {
        let start = end.saturating_sub(PIECE);
        let piece = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(piece)?;
        for (i, byte) in piece.iter().enumerate().rev() {
            let at = start + i as u64;
            // The newline that ends the log ends its last line; it starts nothing.
            if *byte == b'\n' && at + 1 < len {
                seen += 1;
                if seen == lines {
                    return Ok(at + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::tail_offset;

    #[test]
    fn the_last_lines_of_a_log() {
        let offset =
            |text: &[u8], n| tail_offset(&mut std::io::Cursor::new(text), n).expect("tail");
        assert_eq!(offset(b"", 3), 0);
        assert_eq!(offset(b"a\nb\nc\n", 1), 4);
        assert_eq!(offset(b"a\nb\nc\n", 2), 2);
        assert_eq!(offset(b"a\nb\nc\n", 9), 0);
        assert_eq!(offset(b"a\nb\nc", 1), 4, "an unfinished last line counts");
        assert_eq!(offset(b"a\nb\nc\n", 0), 6);
        // Across the 64 KiB pieces it reads.
        let mut big = Vec::new();
        for i in 0..100_000 {
            big.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let at = offset(&big, 2) as usize;
        assert_eq!(&big[at..], b"line 99998\nline 99999\n");
        let at = offset(&big, 20_000) as usize;
        assert!(big[at..].starts_with(b"line 80000\n"));
    }
}
