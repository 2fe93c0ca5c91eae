//! Job logs: append-only files with a time index in the database, stored compressed.
//!
//! A log starts as a plain file, `<job>.log`. Once it holds a frame's worth ([`FRAME`]),
//! a thread of its own takes over: it compresses the log in frames of up to [`FRAME`]
//! bytes, each a Zstandard frame that decompresses on its own, appended to
//! `<job>.log.zst.part`, and lists each frame it wrote (compressed and plain size, 8
//! bytes) in `<job>.log.frames`. Output waits at most [`IDLE`] in memory, so anyone can
//! follow a running job's log from the files. When the job ends the frames get the
//! seek table of the Zstandard seekable format
//! (<https://github.com/facebook/zstd/blob/dev/contrib/seekable_format/zstd_seekable_compression_format.md>)
//! and become `<job>.log.zst`; the plain file and the frame list go. Any zstd tool reads
//! it (`zstd -dc`), and Ferry reads any byte of it by decompressing one frame, so tails
//! and line ranges cost the same for a log of a kilobyte or of a gigabyte.
//!
//! A big log is written to disk once, compressed: the plain file holds only its first
//! frame. If compressing fails (a full disk), the thread writes the rest plain, so
//! nothing is lost and the log stays readable.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Result, Store, now_ms};

/// Bytes of log per compressed frame: the most any read decompresses to reach a byte.
pub const FRAME: usize = 1 << 20;
/// zstd's fastest regular level: it keeps up with a job printing hundreds of MB/s, and
/// logs still shrink by an order of magnitude or more.
const LEVEL: i32 = 1;
/// The longest a byte of a running job's log waits in memory before it is in the files.
pub const IDLE: Duration = Duration::from_secs(1);
/// Logs smaller than this stay plain when they end: they fill a few disk blocks either
/// way, and compressing them would cost a job more than it saves.
pub const SMALLEST: usize = 16 << 10;
/// Frames smaller than this on average (a slow log, framed every [`IDLE`]) are packed
/// again into whole frames when the log ends.
const SMALL: u64 = 64 << 10;

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

/// Where a job's finished log is kept, compressed, next to its plain `path`.
pub fn packed_path(path: &Path) -> PathBuf {
    path.with_extension("log.zst")
}

/// The frames of a log still being written.
fn part_path(path: &Path) -> PathBuf {
    path.with_extension("log.zst.part")
}

/// The list of the frames in the part file (8 bytes each: compressed and plain size).
fn frames_path(path: &Path) -> PathBuf {
    path.with_extension("log.frames")
}

/// Appends one job's output to its log and indexes it by time. Index entries are kept
/// in memory until [`Store::save_log_index`] writes them in one batch; call
/// [`LogWriter::finish`] when the job ends.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    path: PathBuf,
    bytes: i64,
    newlines: i64,
    ends_with_newline: bool,
    last_ts: i64,
    pending: Vec<LogIndexEntry>,
    packer: Packer,
}

#[derive(Debug)]
enum Packer {
    /// Less than a frame so far: all in the plain file, compressed when the log ends.
    Later,
    /// The compressing thread has the log from here on.
    Now {
        tx: mpsc::SyncSender<Vec<u8>>,
        thread: std::thread::JoinHandle<std::io::Result<()>>,
    },
    /// The thread could not be started (the reason is kept): all in the plain file.
    Failed(String),
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
        match &self.packer {
            Packer::Now { tx, .. } => {
                if let Err(mpsc::SendError(data)) = tx.send(data.to_vec()) {
                    // The thread is gone (it only stops when told or on a panic): keep
                    // the bytes in the plain file rather than lose them.
                    self.file.write_all(&data)?;
                }
            }
            Packer::Later | Packer::Failed(_) => self.file.write_all(data)?,
        }
        self.bytes += data.len() as i64;
        // SIMD counting: logs can be dense with newlines, where memchr (built for rare
        // matches) and a plain loop are several times slower.
        self.newlines += bytecount::count(data, b'\n') as i64;
        self.ends_with_newline = data.last() == Some(&b'\n');
        if matches!(self.packer, Packer::Later) && self.bytes >= FRAME as i64 {
            self.packer = match Packing::start(&self.path, self.bytes as u64) {
                Ok(packing) => {
                    // A few writes in flight: a job that prints faster than zstd
                    // compresses waits for it.
                    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(16);
                    let spawned = std::thread::Builder::new()
                        .name("ferry-log-zstd".into())
                        .spawn(move || packing.run(rx));
                    match spawned {
                        Ok(thread) => Packer::Now { tx, thread },
                        Err(e) => Packer::Failed(e.to_string()),
                    }
                }
                Err(e) => Packer::Failed(e.to_string()),
            };
        }
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

    /// Ends the log: it becomes `<job>.log.zst` (readers that have the log open go on
    /// reading), unless it is smaller than [`SMALLEST`]. Blocks until it is compressed, so call it off the async threads. On an
    /// error the log stays whole and readable, plain, and the error says why.
    pub fn finish(self) -> std::io::Result<()> {
        let LogWriter {
            file,
            path,
            bytes,
            packer,
            ..
        } = self;
        drop(file);
        match packer {
            Packer::Failed(reason) => Err(std::io::Error::other(reason)),
            // A log of a few blocks gains nothing from compression: it stays plain.
            Packer::Later if bytes < SMALLEST as i64 => Ok(()),
            Packer::Later => Packing::start(&path, bytes as u64)?.finish(),
            Packer::Now { tx, thread } => {
                drop(tx); // the thread compresses what is left and finishes
                thread
                    .join()
                    .map_err(|_| std::io::Error::other("the compressing thread panicked"))?
            }
        }
    }
}

/// Compresses one log: the first `plain_len` bytes from the plain file, then what it is
/// handed, in frames appended to the part file.
struct Packing {
    path: PathBuf,
    plain_len: u64,
    part: File,
    frames: File,
    table: zeekstd::SeekTable,
    /// Plain bytes in frames so far.
    packed: u64,
    cctx: zstd_safe::CCtx<'static>,
    out: Vec<u8>,
    /// Handed over, not yet compressed.
    buf: Vec<u8>,
    since: Option<Instant>,
}

impl Packing {
    fn start(path: &Path, plain_len: u64) -> std::io::Result<Self> {
        let part = File::create(part_path(path))?;
        let frames = File::create(frames_path(path))?;
        let mut packing = Packing {
            path: path.to_path_buf(),
            plain_len,
            part,
            frames,
            table: zeekstd::SeekTable::new(),
            packed: 0,
            cctx: zstd_safe::CCtx::create(),
            out: Vec::with_capacity(zstd_safe::compress_bound(FRAME)),
            buf: Vec::with_capacity(2 * FRAME),
            since: None,
        };
        // What the plain file holds (still in the page cache): whole frames now, the
        // rest with what comes next.
        let mut plain = File::open(path)?.take(plain_len);
        loop {
            let room = FRAME - packing.buf.len();
            let n = (&mut plain)
                .take(room as u64)
                .read_to_end(&mut packing.buf)?;
            if packing.buf.len() == FRAME {
                packing.frame()?;
            } else if n == 0 {
                break;
            }
        }
        Ok(packing)
    }

    /// Compresses all of `buf` (if any) as one frame and lists it.
    fn frame(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.write_frame()
    }

    /// [`Packing::frame`], even of nothing.
    fn write_frame(&mut self) -> std::io::Result<()> {
        self.out.clear();
        self.cctx
            .compress(&mut self.out, &self.buf, LEVEL)
            .map_err(|code| std::io::Error::other(zstd_safe::get_error_name(code)))?;
        self.part.write_all(&self.out)?;
        let (c, d) = (self.out.len() as u32, self.buf.len() as u32);
        self.table.log_frame(c, d).map_err(std::io::Error::other)?;
        // Listed only once the frame is whole in the part file.
        let mut entry = [0u8; 8];
        entry[..4].copy_from_slice(&c.to_le_bytes());
        entry[4..].copy_from_slice(&d.to_le_bytes());
        self.frames.write_all(&entry)?;
        self.packed += u64::from(d);
        self.buf.clear();
        self.since = None;
        Ok(())
    }

    /// Takes `data`, compressing each frame as it fills.
    fn take(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut data = data;
        while !data.is_empty() {
            let n = (FRAME - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            self.since.get_or_insert_with(Instant::now);
            data = &data[n..];
            if self.buf.len() == FRAME {
                self.frame()?;
            }
        }
        Ok(())
    }

    /// The thread: frames what it is handed, a partial frame after [`IDLE`] without a
    /// full one, and finishes when the writer hangs up.
    fn run(mut self, rx: mpsc::Receiver<Vec<u8>>) -> std::io::Result<()> {
        loop {
            let next = match self.since {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(since) => rx.recv_timeout(IDLE.saturating_sub(since.elapsed())),
            };
            let step = match next {
                Ok(data) => self.take(&data),
                Err(mpsc::RecvTimeoutError::Timeout) => self.frame(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return self.finish(),
            };
            if let Err(e) = step {
                return self.fall_back(rx, e);
            }
        }
    }

    /// Compressing failed: the rest of the log goes to the plain file, which then has
    /// it all (what went into frames is decompressed back first).
    fn fall_back(self, rx: mpsc::Receiver<Vec<u8>>, error: std::io::Error) -> std::io::Result<()> {
        let saved = (|| -> std::io::Result<()> {
            let mut plain = std::fs::OpenOptions::new().append(true).open(&self.path)?;
            if self.packed > self.plain_len {
                let mut frames = zeekstd::DecodeOptions::new(File::open(part_path(&self.path))?)
                    .seek_table(self.table)
                    .offset(self.plain_len)
                    .into_decoder()
                    .map_err(std::io::Error::other)?;
                std::io::copy(&mut frames, &mut plain)?;
            }
            plain.write_all(&self.buf)?;
            for data in rx {
                plain.write_all(&data)?;
            }
            Ok(())
        })();
        let _ = std::fs::remove_file(frames_path(&self.path));
        let _ = std::fs::remove_file(part_path(&self.path));
        saved?;
        Err(error)
    }

    /// The last frame, the seek table, and the compressed log in the plain one's place.
    fn finish(mut self) -> std::io::Result<()> {
        let (part, packed) = (part_path(&self.path), packed_path(&self.path));
        let again = part.with_extension("again");
        let done = (|| -> std::io::Result<()> {
            // An empty log is one empty frame: readers of the format expect one.
            if !self.buf.is_empty() || self.table.num_frames() == 0 {
                self.write_frame()?;
            }
            let frames = self.table.num_frames();
            let table = std::mem::replace(&mut self.table, zeekstd::SeekTable::new());
            if frames > 1 && self.packed / u64::from(frames) < SMALL {
                // Many small frames (a slow log): pack them again, whole.
                let mut from = zeekstd::DecodeOptions::new(File::open(&part)?)
                    .seek_table(table)
                    .into_decoder()
                    .map_err(std::io::Error::other)?;
                let mut to = zeekstd::EncodeOptions::new()
                    .compression_level(LEVEL)
                    .frame_size_policy(zeekstd::FrameSizePolicy::Uncompressed(FRAME as u32))
                    .into_encoder(File::create(&again)?)
                    .map_err(std::io::Error::other)?;
                std::io::copy(&mut from, &mut to)?;
                to.finish().map_err(std::io::Error::other)?;
                std::fs::rename(&again, &packed)?;
                std::fs::remove_file(&part)?;
            } else {
                let mut serializer = table.into_serializer();
                let mut buf = [0u8; 4096];
                loop {
                    let n = serializer.write_into(&mut buf);
                    if n == 0 {
                        break;
                    }
                    self.part.write_all(&buf[..n])?;
                }
                std::fs::rename(&part, &packed)?;
            }
            let _ = std::fs::remove_file(frames_path(&self.path));
            std::fs::remove_file(&self.path)
        })();
        if done.is_err() {
            // The plain log, frames and list stay: still readable as they are.
            let _ = std::fs::remove_file(&again);
        }
        done
    }
}

/// A stored log to read, whatever its state: plain, running and partly compressed, or
/// finished and compressed. Read and sought as one plain file would be (seeking past
/// the end stops at the end).
pub enum LogFile {
    Plain(File),
    /// Finished: the seekable zstd file.
    Packed(Box<zeekstd::Decoder<'static, File>>),
    /// Running: frames for `[0, framed)`, then the plain file.
    Growing {
        frames: Option<Box<zeekstd::Decoder<'static, File>>>,
        framed: u64,
        plain: File,
        pos: u64,
    },
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogFile::Plain(_) => f.write_str("LogFile::Plain"),
            LogFile::Packed(d) => write!(f, "LogFile::Packed(at {})", d.offset()),
            LogFile::Growing { framed, pos, .. } => {
                write!(f, "LogFile::Growing(framed {framed}, at {pos})")
            }
        }
    }
}

impl LogFile {
    /// The log's length in bytes (uncompressed), as far as it is in the files.
    pub fn len(&mut self) -> std::io::Result<u64> {
        match self {
            LogFile::Plain(f) => Ok(f.metadata()?.len()),
            LogFile::Packed(d) => Ok(d.seek_table().size_decomp()),
            LogFile::Growing { framed, plain, .. } => Ok((*framed).max(plain.metadata()?.len())),
        }
    }

    pub fn is_empty(&mut self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Whether the log is finished and stored compressed.
    pub fn is_packed(&self) -> bool {
        matches!(self, LogFile::Packed(_))
    }
}

impl Read for LogFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            LogFile::Plain(f) => f.read(buf),
            LogFile::Packed(d) => d.read(buf),
            LogFile::Growing {
                frames,
                framed,
                plain,
                pos,
            } => {
                let n = match frames {
                    Some(d) if *pos < *framed => {
                        d.seek(SeekFrom::Start(*pos))?;
                        d.read(buf)?
                    }
                    _ => {
                        plain.seek(SeekFrom::Start(*pos))?;
                        plain.read(buf)?
                    }
                };
                *pos += n as u64;
                Ok(n)
            }
        }
    }
}

impl Seek for LogFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let len = self.len()?;
        let current = match self {
            LogFile::Plain(f) => f.stream_position()?,
            LogFile::Packed(d) => d.offset(),
            LogFile::Growing { pos, .. } => *pos,
        };
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(n) => len.checked_add_signed(n),
            SeekFrom::Current(n) => current.checked_add_signed(n),
        }
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the log",
            )
        })?
        .min(len);
        match self {
            LogFile::Plain(f) => f.seek(SeekFrom::Start(target)),
            LogFile::Packed(d) => d.seek(SeekFrom::Start(target)),
            LogFile::Growing { pos, .. } => {
                *pos = target;
                Ok(target)
            }
        }
    }
}

/// Opens the log whose plain file is `path`, in whatever state it is; `None` if the job
/// wrote no log. A log that changes state while this looks is found all the same.
pub fn open_log(path: &Path) -> std::io::Result<Option<LogFile>> {
    use std::io::ErrorKind::NotFound;
    let packed = packed_path(path);
    for _ in 0..3 {
        match File::open(&packed) {
            Ok(f) => match zeekstd::Decoder::new(f) {
                Ok(d) => return Ok(Some(LogFile::Packed(Box::new(d)))),
                Err(e) => {
                    // Damaged (a crash before it was whole on disk): what is left of
                    // the running log's files may still have it all.
                    if !path.exists() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("the log {} is damaged: {e}", packed.display()),
                        ));
                    }
                }
            },
            Err(e) if e.kind() == NotFound => {}
            Err(e) => return Err(e),
        }
        let plain = match File::open(path) {
            Ok(f) => f,
            // Finished between the two looks: look again.
            Err(e) if e.kind() == NotFound => continue,
            Err(e) => return Err(e),
        };
        let list = match std::fs::read(frames_path(path)) {
            Ok(list) => list,
            Err(e) if e.kind() == NotFound => return Ok(Some(LogFile::Plain(plain))),
            Err(e) => return Err(e),
        };
        let part = match File::open(part_path(path)) {
            Ok(f) => f,
            Err(e) if e.kind() == NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut table = zeekstd::SeekTable::new();
        for entry in list.chunks_exact(8) {
            let c = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let d = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
            table.log_frame(c, d).map_err(std::io::Error::other)?;
        }
        let framed = table.size_decomp();
        let frames = if table.num_frames() == 0 {
            None
        } else {
            let d = zeekstd::DecodeOptions::new(part)
                .seek_table(table)
                .into_decoder()
                .map_err(std::io::Error::other)?;
            Some(Box::new(d))
        };
        return Ok(Some(LogFile::Growing {
            frames,
            framed,
            plain,
            pos: 0,
        }));
    }
    Ok(None)
}

/// Makes a log plain again (for appending to it), whatever state it is in.
fn unpack(path: &Path) -> std::io::Result<()> {
    let packed = packed_path(path);
    if !packed.exists() && !frames_path(path).exists() {
        return Ok(());
    }
    if let Some(mut log) = open_log(path)? {
        let again = path.with_extension("log.plain");
        let mut plain = File::create(&again)?;
        std::io::copy(&mut log, &mut plain)?;
        std::fs::rename(&again, path)?;
    }
    for leftover in [packed, part_path(path), frames_path(path)] {
        match std::fs::remove_file(&leftover) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
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
    reader: Option<BufReader<LogFile>>,
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
    /// The plain file of a job's log (see [`open_log`] for reading it).
    pub fn log_path(&self, run_id: &str, job_id: &str) -> PathBuf {
        self.data_dir
            .join("logs")
            .join(run_id)
            .join(format!("{job_id}.log"))
    }

    /// Opens a job's log, compressed or not; `None` if the job wrote none.
    pub fn open_log(&self, run_id: &str, job_id: &str) -> std::io::Result<Option<LogFile>> {
        open_log(&self.log_path(run_id, job_id))
    }

    /// Opens a job's log for appending (a retried job appends to the same log, and its
    /// line numbers and count go on from the earlier attempts'). A log already
    /// compressed, whole or in part, is first made plain again.
    pub fn log_writer(&self, run_id: &str, job_id: &str) -> Result<LogWriter> {
        let path = self.log_path(run_id, job_id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        unpack(&path)?;
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
            path,
            bytes,
            newlines,
            ends_with_newline: last == b'\n',
            last_ts: 0,
            pending: Vec::new(),
            packer: Packer::Later,
        })
    }

    /// A reader over a job's log; an empty reader if the job wrote nothing.
    pub async fn read_log(&self, run_id: &str, job_id: &str) -> Result<LogReader> {
        let rows = sqlx::query(&index_query("ORDER BY byte_offset"))
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        let index = rows
            .iter()
            .map(log_index_entry_from_row)
            .collect::<Result<Vec<_>>>()?;
        let reader = self
            .open_log(run_id, job_id)?
            .map(|f| BufReader::with_capacity(1 << 16, f));
        Ok(LogReader {
            reader,
            index,
            offset: 0,
            line: 0,
            at: 0,
        })
    }

    /// Where 1-based line `line` of a job's log starts (the log's end if it has fewer
    /// lines), and the log opened there; `None` if the job wrote no log. The time
    /// index gives the nearest earlier point, so only the bytes from there are read.
    pub async fn log_at_line(
        &self,
        run_id: &str,
        job_id: &str,
        line: u64,
    ) -> Result<Option<(u64, LogFile)>> {
        // Beyond any line number a log can have: its end, found from the last entry.
        let wanted = i64::try_from(line.saturating_sub(1)).unwrap_or(i64::MAX);
        let nearest = index_query("AND first_line < $2 ORDER BY byte_offset DESC LIMIT 1");
        let row = sqlx::query(&nearest)
            .bind(job_id)
            .bind(wanted)
            .fetch_optional(&self.pool)
            .await?;
        let from = row
            .as_ref()
            .map(log_index_entry_from_row)
            .transpose()?
            .map(|e| (e.byte_offset as u64, e.first_line as u64))
            .unwrap_or((0, 0));
        let path = self.log_path(run_id, job_id);
        let found = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let Some(mut log) = open_log(&path)? else {
                return Ok(None);
            };
            let at = line_offset(&mut log, from, wanted as u64)?;
            log.seek(SeekFrom::Start(at))?;
            Ok(Some((at, log)))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(found)
    }
}

impl Store {
    /// The time index's entries that cover bytes `[from, to)` of a job's log: the last
    /// at or before `from` (if any), then every one after it before `to`. Each line's
    /// number and time in that range follow from them.
    pub async fn log_index_range(
        &self,
        job_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<LogIndexEntry>> {
        let from_i = i64::try_from(from).unwrap_or(i64::MAX);
        let to_i = i64::try_from(to).unwrap_or(i64::MAX);
        let first = sqlx::query(&index_query(
            "AND byte_offset <= $2 ORDER BY byte_offset DESC LIMIT 1",
        ))
        .bind(job_id)
        .bind(from_i)
        .fetch_optional(&self.pool)
        .await?;
        let rest = sqlx::query(&index_query(
            "AND byte_offset > $2 AND byte_offset < $3 ORDER BY byte_offset",
        ))
        .bind(job_id)
        .bind(from_i)
        .bind(to_i)
        .fetch_all(&self.pool)
        .await?;
        first
            .iter()
            .chain(rest.iter())
            .map(log_index_entry_from_row)
            .collect()
    }
}

/// A line of a log that holds what was searched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// 1-based.
    pub line: u64,
    /// Where the line starts.
    pub offset: u64,
    /// The line (its first [`FOUND_TEXT`] bytes).
    pub text: Vec<u8>,
}

/// How much of a found line is kept.
pub const FOUND_TEXT: usize = 400;
/// A "line" longer than this is searched in pieces of this size.
const LONGEST_LINE: usize = 4 << 20;

/// The lines of a log that hold `needle` (ASCII letters in any case), the first
/// `limit` of them, and whether there are more. Reads the log once, in 1 MiB pieces.
pub fn search_log<R: Read>(
    mut log: R,
    needle: &str,
    limit: usize,
) -> std::io::Result<(Vec<Found>, bool)> {
    let needle = needle.to_ascii_lowercase().into_bytes();
    let mut found = Vec::new();
    if needle.is_empty() || limit == 0 {
        return Ok((found, false));
    }
    let finder = memchr::memmem::Finder::new(&needle);
    // `data` starts at byte `base` of the log, at the start of line `line`.
    let (mut data, mut base, mut line) = (Vec::<u8>::new(), 0u64, 1u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = log.read(&mut buf)?;
        let last = n == 0;
        data.extend_from_slice(&buf[..n]);
        // Whole lines only, unless the log ended or a line is too long to hold.
        let upto = if last || data.len() > LONGEST_LINE {
            data.len()
        } else {
            match memchr::memrchr(b'\n', &data) {
                Some(nl) => nl + 1,
                None => continue,
            }
        };
        let lower = data[..upto].to_ascii_lowercase();
        let (mut line_start, mut counted) = (0usize, 0usize);
        let mut last_line = None;
        for at in finder.find_iter(&lower) {
            // The line holding `at`: count the newlines up to it.
            line += memchr::memchr_iter(b'\n', &lower[counted..at]).count() as u64;
            if let Some(nl) = memchr::memrchr(b'\n', &lower[counted..at]) {
                line_start = counted + nl + 1;
            }
            counted = at;
            if last_line == Some(line) {
                continue;
            }
            last_line = Some(line);
            if found.len() == limit {
                return Ok((found, true));
            }
            let end =
                memchr::memchr(b'\n', &data[line_start..upto]).map_or(upto, |e| line_start + e);
            found.push(Found {
                line,
                offset: base + line_start as u64,
                text: data[line_start..end.min(line_start + FOUND_TEXT)].to_vec(),
            });
        }
        line += memchr::memchr_iter(b'\n', &lower[counted..upto]).count() as u64;
        base += upto as u64;
        data.drain(..upto);
        if last {
            return Ok((found, false));
        }
    }
}

/// A query of one job's time index (`$1`: the job), narrowed and ordered by `rest`.
fn index_query(rest: &str) -> String {
    format!("SELECT {LOG_INDEX_COLUMNS} FROM log_chunks WHERE job_id = $1 {rest}")
}

/// Where 0-based line `line` starts, reading forward from `from`: a byte offset and the
/// 0-based line it lies in (at or before `line`). The log's end if it is shorter.
pub fn line_offset<F: Read + Seek>(
    file: &mut F,
    from: (u64, u64),
    line: u64,
) -> std::io::Result<u64> {
    let (mut at, mut current) = from;
    file.seek(SeekFrom::Start(at))?;
    let mut buf = vec![0u8; 64 << 10];
    while current < line {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for nl in memchr::memchr_iter(b'\n', &buf[..n]) {
            current += 1;
            if current == line {
                return Ok(at + nl as u64 + 1);
            }
        }
        at += n as u64;
    }
    Ok(at)
}

/// Where the last `lines` lines of a log start: found by reading backwards from the end
/// in 64 KiB pieces, so it costs the same for a log of a kilobyte or of a gigabyte
/// (with enough newlines: see [`tail_offset_within`]). A newline ending the log does
/// not start another line.
pub fn tail_offset<F: std::io::Read + std::io::Seek>(
    file: &mut F,
    lines: u64,
) -> std::io::Result<u64> {
    tail_offset_within(file, lines, u64::MAX)
}

/// [`tail_offset`], reading back at most `within` bytes: where the last `lines` lines
/// start, or (a log with fewer newlines at its end) `within` bytes before the end, which
/// may be inside a line. What it costs is bounded by `within`, whatever the log holds.
pub fn tail_offset_within<F: std::io::Read + std::io::Seek>(
    file: &mut F,
    lines: u64,
    within: u64,
) -> std::io::Result<u64> {
    use std::io::SeekFrom;
    const PIECE: u64 = 64 << 10;
    let len = file.seek(SeekFrom::End(0))?;
    if lines == 0 {
        return Ok(len);
    }
    let floor = len.saturating_sub(within);
    let mut end = len;
    let mut seen = 0u64;
    let mut buf = vec![0u8; PIECE as usize];
    while end > floor {
        let start = end.saturating_sub(PIECE).max(floor);
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
    Ok(floor)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    #[test]
    fn search_finds_lines_in_any_case_once_each_with_numbers_and_offsets() {
        let log = b"one\nTwo two\nthree\nfour TWO\nlast two";
        let (found, more) = super::search_log(&log[..], "two", 10).expect("reads");
        let lines: Vec<_> = found.iter().map(|f| (f.line, f.offset)).collect();
        assert_eq!(lines, [(2, 4), (4, 18), (5, 27)]);
        assert_eq!(found[0].text, b"Two two");
        assert_eq!(found[2].text, b"last two");
        assert!(!more);
        let (found, more) = super::search_log(&log[..], "two", 2).expect("reads");
        assert_eq!(found.len(), 2);
        assert!(more);
    }

    #[test]
    fn search_counts_lines_across_pieces() {
        // Lines across several 1 MiB reads: the numbers stay exact.
        let mut log = Vec::new();
        for i in 1..=200_000u32 {
            log.extend_from_slice(format!("line {i:06} of the log\n").as_bytes());
        }
        let (found, _) = super::search_log(&log[..], "line 150000", 5).expect("reads");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, 150_000);
        let at = found[0].offset as usize;
        assert!(log[at..].starts_with(b"line 150000"));
    }

    use super::{Packing, open_log, packed_path, tail_offset};

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

    /// A slow log is framed every second; at the end its many small frames are packed
    /// again into whole ones.
    #[test]
    fn small_frames_are_packed_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("job.log");
        std::fs::write(&path, b"").expect("plain");
        let mut packing = Packing::start(&path, 0).expect("start");
        let mut text = Vec::new();
        for i in 0..50 {
            let line = format!("slow line {i}\n");
            packing.take(line.as_bytes()).expect("take");
            packing.frame().expect("frame"); // as if a second passed
            text.extend_from_slice(line.as_bytes());
        }
        assert_eq!(packing.table.num_frames(), 50);
        let read_all = || {
            let mut all = Vec::new();
            open_log(&path)
                .expect("open")
                .expect("a log")
                .read_to_end(&mut all)
                .expect("read");
            all
        };
        // Readable as it is, frame by frame.
        assert_eq!(read_all(), text);
        packing.finish().expect("finish");
        let packed = std::fs::File::open(packed_path(&path)).expect("packed");
        let decoder = zeekstd::Decoder::new(packed).expect("seekable");
        assert_eq!(decoder.seek_table().num_frames(), 1);
        assert_eq!(read_all(), text);
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            1,
            "only the compressed log is left"
        );
    }
}
