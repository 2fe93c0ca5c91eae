//! Masking secret values in output: each value, its base64 forms (standard and URL-safe,
//! at any alignment inside longer base64 text), its percent-encoded forms, and each line
//! of a value that spans lines, is replaced by `***`. [`MaskStream`] does the same for
//! output that arrives in chunks, holding back just enough bytes that a value split
//! across two chunks is still caught, and [`Masked`] wraps any [`OutputSink`] in one:
//! it is the one way secret values are kept out of job logs, live output, deployment
//! logs and deployed processes' output.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::OutputSink;

/// What a masked value becomes.
pub const MASK: &[u8] = b"***";

/// Values shorter than this are not masked: masking `a` or `1` would garble every log.
pub const MIN_LEN: usize = 4;

/// encodeURIComponent's set: everything but letters, digits and `-_.!~*'()`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The texts to mask for a set of secret values.
#[derive(Clone, Default)]
pub struct Masker {
    /// Longest first, so that a longer form wins over a shorter one inside it.
    needles: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} forms)", self.needles.len())
    }
}

/// The base64 characters fully determined by `value` when it starts `k` bytes into the
/// encoded data (so the form is found inside longer base64 text too).
fn base64_forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for k in 0..3usize {
            let mut data = vec![0u8; k];
            data.extend_from_slice(value);
            let encoded = engine.encode(&data);
            let start = (4 * k).div_ceil(3);
            let end = (8 * (k + value.len())) / 6;
            if end > start {
                out.push(encoded.as_bytes()[start..end].to_vec());
            }
        }
    }
    out
}

/// `text` inside a JSON string as encoders write it: `\"`, `\n`, `\u0001` (serde,
/// every encoder); also `\/` (PHP, some Java); `<`, `>`, `&` as `\u003c`… (Go's
/// `encoding/json`, .NET); everything beyond ASCII as `\u00e9` or `\ud83d\ude00` (Python's
/// `json.dumps`, JavaScript's ASCII-safe printers), in either case of hex digit.
fn json_forms(text: &str) -> Vec<String> {
    let Ok(json) = serde_json::to_string(text) else {
        return Vec::new();
    };
    let inner = &json[1..json.len() - 1];
    let escape = |c: char, upper: bool, html: bool| -> Option<String> {
        let units = |c: char| {
            let mut buf = [0u16; 2];
            c.encode_utf16(&mut buf)
                .iter()
                .map(|u| {
                    if upper {
                        format!("\\u{u:04X}")
                    } else {
                        format!("\\u{u:04x}")
                    }
                })
                .collect::<String>()
        };
        match c {
            '<' | '>' | '&' if html => Some(units(c)),
            '\u{2028}' | '\u{2029}' if html => Some(units(c)),
            c if !c.is_ascii() && !html => Some(units(c)),
            _ => None,
        }
    };
    let mut forms = vec![inner.to_string(), inner.replace('/', "\\/")];
    for (upper, html) in [(false, true), (true, true), (false, false), (true, false)] {
        let mut form = String::with_capacity(inner.len());
        for c in inner.chars() {
            match escape(c, upper, html) {
                Some(e) => form.push_str(&e),
                None => form.push(c),
            }
        }
        // PHP's `json_encode` also writes `/` as `\/`.
        if !html && !upper {
            forms.push(form.replace('/', "\\/"));
        }
        forms.push(form);
    }
    // .NET's System.Text.Json: everything beyond ASCII, the HTML-sensitive characters
    // and `"`, `'`, `+`, `` ` `` as `\u00XX` with capital hex digits.
    let mut dotnet = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        let unit = |u: u16| format!("\\u{u:04X}");
        match c {
            '\\' => dotnet.push_str("\\\\"),
            '\n' => dotnet.push_str("\\n"),
            '\r' => dotnet.push_str("\\r"),
            '\t' => dotnet.push_str("\\t"),
            '<' | '>' | '&' | '"' | '\'' | '+' | '`' => dotnet.push_str(&unit(c as u16)),
            c if c.is_control() || !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf).iter() {
                    dotnet.push_str(&unit(*u));
                }
            }
            c => dotnet.push(c),
        }
    }
    forms.push(dotnet);
    forms.sort();
    forms.dedup();
    forms
}

impl Masker {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for value in values {
            let trimmed = value.strip_suffix(b"\n").unwrap_or(value);
            // Too short to mask, in every form: a longer encoding (hex doubles it) would
            // otherwise mask text that happens to match, and tell the value to a reader.
            if trimmed.len() < MIN_LEN {
                continue;
            }
            let mut forms = vec![trimmed.to_vec()];
            forms.extend(base64_forms(trimmed));
            forms.extend(base64_forms(value));
            if let Ok(text) = std::str::from_utf8(trimmed) {
                let encoded = utf8_percent_encode(text, COMPONENT).to_string();
                forms.push(encoded.as_bytes().to_vec());
                forms.push(encoded.to_ascii_lowercase().into_bytes());
                forms.push(encoded.replace("%20", "+").into_bytes());
                // Inside a JSON string, as the common encoders write it.
                forms.extend(json_forms(text).into_iter().map(String::into_bytes));
            }
            // Hexadecimal, as `xxd -p`, `od` piped through `tr` or a program's dump print it.
            forms.push(hex::encode(trimmed).into_bytes());
            forms.push(hex::encode_upper(trimmed).into_bytes());
            // A value that spans lines may be printed line by line.
            for line in trimmed.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                forms.push(line.to_vec());
            }
            for f in forms {
                if f.len() >= MIN_LEN && !needles.contains(&f) {
                    needles.push(f);
                }
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Self { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The longest form, in bytes.
    pub fn longest(&self) -> usize {
        self.needles.first().map(Vec::len).unwrap_or(0)
    }

    /// `data` with every form replaced by [`MASK`].
    pub fn mask(&self, data: &[u8]) -> Vec<u8> {
        if self.needles.is_empty() {
            return data.to_vec();
        }
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        'outer: while i < data.len() {
            for n in &self.needles {
                if data[i..].starts_with(n) {
                    out.extend_from_slice(MASK);
                    i += n.len();
                    continue 'outer;
                }
            }
            out.push(data[i]);
            i += 1;
        }
        out
    }
}

/// Masks output that arrives in chunks.
#[derive(Debug)]
pub struct MaskStream {
    masker: Masker,
    held: Vec<u8>,
}

impl MaskStream {
    pub fn new(masker: Masker) -> Self {
        Self {
            masker,
            held: Vec::new(),
        }
    }

    /// The masked bytes that are safe to write now. Only an end that could be the start
    /// of a secret's form is held back, until the next chunk or [`finish`](Self::finish).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.masker.is_empty() {
            return chunk.to_vec();
        }
        self.held.extend_from_slice(chunk);
        let cut = self.release_point();
        let rest = self.held.split_off(cut);
        let ready = std::mem::replace(&mut self.held, rest);
        self.masker.mask(&ready)
    }

    /// Where to split `held`: before the earliest end that begins a form, and never
    /// inside a whole form.
    fn release_point(&self) -> usize {
        let len = self.held.len();
        let keep = self.masker.longest().saturating_sub(1);
        let mut cut = len;
        for i in len.saturating_sub(keep)..len {
            let tail = &self.held[i..];
            if self
                .masker
                .needles
                .iter()
                .any(|n| n.len() > tail.len() && n.starts_with(tail))
            {
                cut = i;
                break;
            }
        }
        // A whole form that crosses the cut is released whole.
        let mut i = 0;
        while i < cut {
            match self
                .masker
                .needles
                .iter()
                .find(|n| self.held[i..].starts_with(n))
            {
                Some(n) if i + n.len() > cut => return i + n.len(),
                Some(n) => i += n.len(),
                None => i += 1,
            }
        }
        cut
    }

    /// Everything still held, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        self.masker.mask(&held)
    }
}

/// An [`OutputSink`] that masks secret values before they reach the sink it wraps.
///
/// Chunks pass through untouched (no copy, nothing held back) while there is nothing to
/// mask. Call [`flush`](Self::flush) at the end of a piece of output (a step, a process
/// run): the mask may hold back an end that could begin a secret until then.
#[derive(Debug)]
pub struct Masked<S> {
    inner: S,
    stream: Option<MaskStream>,
}

impl<S: OutputSink> Masked<S> {
    pub fn new(inner: S, masker: Masker) -> Self {
        let mut m = Self {
            inner,
            stream: None,
        };
        m.set_masker(masker);
        m
    }

    /// Masks these values from now on (what was held back so far is written first).
    pub fn set_masker(&mut self, masker: Masker) {
        self.flush();
        self.stream = (!masker.is_empty()).then(|| MaskStream::new(masker));
    }

    /// The values masked, if any.
    pub fn masker(&self) -> Masker {
        self.stream
            .as_ref()
            .map(|s| s.masker.clone())
            .unwrap_or_default()
    }

    /// Writes what the mask held back.
    pub fn flush(&mut self) {
        if let Some(s) = &mut self.stream {
            let rest = s.finish();
            if !rest.is_empty() {
                self.inner.chunk(&rest);
            }
        }
    }

    /// Writes `data` whole (masked), holding nothing back.
    pub fn write_all(&mut self, data: &[u8]) {
        self.chunk(data);
        self.flush();
    }

    /// A line from Ferry itself (`ferry: TEXT`), after the output before it.
    pub fn note(&mut self, text: &str) {
        self.flush();
        self.write_all(format!("ferry: {text}\n").as_bytes());
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: OutputSink> OutputSink for Masked<S> {
    fn chunk(&mut self, data: &[u8]) {
        match &mut self.stream {
            Some(s) => {
                let masked = s.push(data);
                if !masked.is_empty() {
                    self.inner.chunk(&masked);
                }
            }
            None => self.inner.chunk(data),
        }
    }
}

/// A file as an [`OutputSink`] (write errors are kept for [`error`](Self::error)),
/// optionally rotated by size.
#[derive(Debug)]
pub struct FileSink {
    file: Option<std::fs::File>,
    error: Option<std::io::Error>,
    rotation: Option<Rotation>,
}

/// Where a rotated file lives, how big it may grow and how big it is.
#[derive(Debug)]
struct Rotation {
    path: std::path::PathBuf,
    max: u64,
    size: u64,
}

impl FileSink {
    pub fn new(file: std::fs::File) -> Self {
        Self {
            file: Some(file),
            error: None,
            rotation: None,
        }
    }

    /// Once the file at `path` (the one this sink writes) would pass `max` bytes, it
    /// becomes `path.1` (replacing the one before) and writing goes on in a new file:
    /// at most about twice `max` on disk, whatever a process prints.
    pub fn rotated(mut self, path: &std::path::Path, max: u64) -> Self {
        let size = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        self.rotation = Some(Rotation {
            path: path.to_path_buf(),
            max: max.max(1),
            size,
        });
        self
    }

    /// Appends to `path`, creating it and its directory; a file that cannot be opened
    /// discards what is written and says why in [`error`](Self::error).
    pub fn append(path: &std::path::Path) -> Self {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        if let Some(dir) = path.parent() {
            // Logs are the server's alone: directories it makes for them are private.
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => Self::new(f),
            Err(e) => Self {
                file: None,
                error: Some(e),
                rotation: None,
            },
        }
    }

    /// The first write error, if any.
    pub fn error(&self) -> Option<&std::io::Error> {
        self.error.as_ref()
    }

    /// Moves the full file aside and starts a new one.
    fn rotate(&mut self) {
        let Some(r) = &mut self.rotation else { return };
        let mut old = r.path.clone().into_os_string();
        old.push(".1");
        let fresh = std::fs::rename(&r.path, &old).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&r.path)
        });
        match fresh {
            Ok(f) => {
                self.file = Some(f);
                r.size = 0;
            }
            Err(e) => {
                // Keep writing where we are rather than lose output.
                r.max = u64::MAX;
                if self.error.is_none() {
                    self.error = Some(e);
                }
            }
        }
    }

    fn write(&mut self, data: &[u8]) {
        use std::io::Write as _;
        if let Some(f) = &mut self.file
            && let Err(e) = f.write_all(data)
            && self.error.is_none()
        {
            self.error = Some(e);
        }
        if let Some(r) = &mut self.rotation {
            r.size += data.len() as u64;
        }
    }
}

impl OutputSink for FileSink {
    fn chunk(&mut self, mut data: &[u8]) {
        // A rotated file takes what fits (up to its last whole line when there is one),
        // then the rest goes to a new file.
        while let Some(r) = &self.rotation {
            let room = r.max.saturating_sub(r.size) as usize;
            if data.len() <= room {
                break;
            }
            let cut = data[..room]
                .iter()
                .rposition(|b| *b == b'\n')
                .map(|i| i + 1)
                .unwrap_or(if r.size == 0 { room.max(1) } else { 0 });
            let (now, rest) = data.split_at(cut);
            self.write(now);
            self.rotate();
            data = rest;
        }
        self.write(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"s3cr3t value/+?&=";

    fn masker() -> Masker {
        Masker::new([
            SECRET,
            b"-----BEGIN KEY-----\nAAAAline2AAAA\n-----END KEY-----\n".as_slice(),
            b"ab".as_slice(),
        ])
    }

    #[test]
    fn masks_plain_encoded_and_split_forms() {
        let m = masker();
        let plain = m.mask(b"token=s3cr3t value/+?&= done");
        assert_eq!(plain, b"token=*** done");
        let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
        assert!(!String::from_utf8_lossy(&m.mask(b64.as_bytes())).contains(&b64[..8]));
        // Inside longer base64 text, at each alignment.
        for prefix in ["", "x", "xy"] {
            let mut data = prefix.as_bytes().to_vec();
            data.extend_from_slice(SECRET);
            let enc = base64::engine::general_purpose::STANDARD.encode(&data);
            let masked = String::from_utf8_lossy(&m.mask(enc.as_bytes())).into_owned();
            assert!(masked.contains("***"), "{prefix:?}: {masked}");
        }
        let url =
            utf8_percent_encode(std::str::from_utf8(SECRET).expect("utf8"), COMPONENT).to_string();
        assert_eq!(m.mask(format!("?q={url}&x").as_bytes()), b"?q=***&x");
        // A multi-line value printed line by line.
        assert_eq!(m.mask(b"got AAAAline2AAAA here"), b"got *** here");
        // Hex, either case, and inside a JSON string.
        let lower = hex::encode(SECRET);
        assert_eq!(m.mask(format!("dump {lower}.").as_bytes()), b"dump ***.");
        let upper = hex::encode_upper(SECRET);
        assert_eq!(m.mask(format!("dump {upper}.").as_bytes()), b"dump ***.");
        let json = serde_json::json!({ "token": std::str::from_utf8(SECRET).expect("utf8") });
        assert_eq!(m.mask(json.to_string().as_bytes()), br#"{"token":"***"}"#);
        let slashes = serde_json::to_string(std::str::from_utf8(SECRET).expect("utf8"))
            .expect("json")
            .replace('/', "\\/");
        assert_eq!(m.mask(slashes.as_bytes()), br#""***""#);
        // As Go (`<>&` escaped) and Python (`ensure_ascii`) write JSON strings.
        let odd = Masker::new([b"p<w>&d-\xc3\xa9t\xc3\xa9-\xf0\x9f\x98\x80".as_slice()]);
        for form in [
            r#"{"v":"p\u003cw\u003e\u0026d-été-😀"}"#,
            r#"{"v": "p<w>&d-\u00e9t\u00e9-\ud83d\ude00"}"#,
            r#"{"v": "p<w>&d-\u00E9t\u00E9-\uD83D\uDE00"}"#,
            // .NET: `<>&` and non-ASCII as capital-hex escapes.
            r#"{"v":"p\u003Cw\u003E\u0026d-\u00E9t\u00E9-\uD83D\uDE00"}"#,
        ] {
            let masked = String::from_utf8_lossy(&odd.mask(form.as_bytes())).into_owned();
            assert!(masked.contains("\"***\""), "{form}: {masked}");
        }
        // PHP: `\/` and non-ASCII escapes together; .NET: `"`, `'`, `+` escaped too.
        let quoted = Masker::new([b"a/b\"c'd+e-\xc3\xa9-secret".as_slice()]);
        for form in [
            r#"{"v":"a\/b\"c'd+e-\u00e9-secret"}"#,
            r#"{"v":"a/b\u0022c\u0027d\u002Be-\u00E9-secret"}"#,
        ] {
            let masked = String::from_utf8_lossy(&quoted.mask(form.as_bytes())).into_owned();
            assert!(masked.contains("\"***\""), "{form}: {masked}");
        }
        let key =
            serde_json::json!({ "key": "-----BEGIN KEY-----\nAAAAline2AAAA\n-----END KEY-----" });
        assert_eq!(m.mask(key.to_string().as_bytes()), br#"{"key":"***"}"#);
        assert_eq!(
            m.mask(b"ab stays: too short to mask"),
            b"ab stays: too short to mask"
        );
        assert_eq!(m.mask(b"6162 YWI= stay too"), b"6162 YWI= stay too");
    }

    #[test]
    fn streams_catch_values_split_across_chunks() {
        let text = b"before s3cr3t value/+?&= middle s3cr3t value/+?&= after".to_vec();
        for size in 1..text.len() {
            let mut stream = MaskStream::new(masker());
            let mut out = Vec::new();
            for chunk in text.chunks(size) {
                out.extend(stream.push(chunk));
            }
            out.extend(stream.finish());
            assert_eq!(out, b"before *** middle *** after", "chunks of {size}");
        }
        // Output that cannot begin a secret is not held back.
        let mut stream = MaskStream::new(masker());
        assert_eq!(stream.push(b"plain text\n"), b"plain text\n");
        assert_eq!(stream.push(b"ends with s3c"), b"ends with ");
        assert_eq!(stream.finish(), b"s3c");
        let mut empty = MaskStream::new(Masker::default());
        assert_eq!(empty.push(b"as is"), b"as is");
    }

    #[test]
    fn the_adaptor_masks_what_it_forwards() {
        #[derive(Default)]
        struct Collect(Vec<u8>);
        impl OutputSink for Collect {
            fn chunk(&mut self, data: &[u8]) {
                self.0.extend_from_slice(data);
            }
        }
        let mut sink = Masked::new(Collect::default(), masker());
        sink.chunk(b"a s3cr3t va");
        sink.chunk(b"lue/+?&= b ");
        sink.note("done s3cr3t value/+?&=");
        sink.chunk(b"tail s3c");
        sink.flush();
        assert_eq!(
            String::from_utf8_lossy(&sink.inner().0),
            "a *** b ferry: done ***\ntail s3c"
        );
        let mut plain = Masked::new(Collect::default(), Masker::default());
        plain.chunk(b"s3cr3t value/+?&=");
        assert_eq!(plain.inner().0, b"s3cr3t value/+?&=");
    }
}
