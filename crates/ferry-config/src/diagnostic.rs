//! One problem found in a pipeline file, and how it is shown to a person.

use std::fmt::Write as _;

use serde::Serialize;

/// A place in the file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A problem with its place, a message that says what is wrong and a help line that
/// says what to do. The same value serves the CLI, and later the API and the UI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub span: Span,
    pub message: String,
    pub help: Option<String>,
    /// What the span covers may be a credential: the excerpt shows `*` in its place.
    pub masked: bool,
}

/// The most characters of a source line a diagnostic shows.
const MAX_LINE: usize = 120;

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            span,
            message: message.into(),
            help: None,
            masked: false,
        }
    }

    pub fn warning(span: Span, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(span, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The excerpt will hide what the span covers (see [`Diagnostic::masked`]).
    pub fn masked(mut self) -> Self {
        self.masked = true;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders `FILE:LINE:COL: error: MESSAGE`, the source line with the span underlined,
    /// and the help. `color` adds ANSI styles.
    pub fn render(&self, file: &str, source: &str, color: bool) -> String {
        let (bold, red, yellow, blue, reset) = if color {
            (
                "\x1b[1m",
                "\x1b[1;31m",
                "\x1b[1;33m",
                "\x1b[1;34m",
                "\x1b[0m",
            )
        } else {
            ("", "", "", "", "")
        };
        let (label, tone) = match self.severity {
            Severity::Error => ("error", red),
            Severity::Warning => ("warning", yellow),
        };
        let Pos { line, col } = self.span.start;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{bold}{file}:{line}:{col}:{reset} {tone}{label}:{reset} {bold}{}{reset}",
            self.message
        );
        if let Some(text) = source.lines().nth(line.saturating_sub(1)) {
            let mut chars: Vec<char> = text.replace('\t', " ").chars().collect();
            let width = line.to_string().len();
            let pad = " ".repeat(width);
            let mut start = col.saturating_sub(1).min(chars.len());
            let mut end = if self.span.end.line == line && self.span.end.col > col {
                (self.span.end.col - 1).min(chars.len())
            } else {
                chars.len()
            };
            if self.masked {
                for c in &mut chars[start..end] {
                    *c = '*';
                }
            }
            // A very long line is shown as a window around the place.
            let (first, last) = if chars.len() > MAX_LINE {
                let first = start.saturating_sub(MAX_LINE / 4);
                (first, (first + MAX_LINE).min(chars.len()))
            } else {
                (0, chars.len())
            };
            let mut text: String = chars[first..last].iter().collect();
            if first > 0 {
                text.insert(0, '…');
                start = start - first + 1;
                end = end.saturating_sub(first) + 1;
            }
            if last < chars.len() {
                text.push('…');
            }
            let len = text.chars().count();
            let end = end.min(len);
            let marks = end.saturating_sub(start).max(1);
            let _ = writeln!(out, "{blue}{pad} |{reset}");
            let _ = writeln!(out, "{blue}{line} |{reset} {text}");
            let _ = writeln!(
                out,
                "{blue}{pad} |{reset} {}{tone}{}{reset}",
                " ".repeat(start),
                "^".repeat(marks)
            );
            if let Some(help) = &self.help {
                let _ = writeln!(out, "{blue}{pad} = {reset}{bold}help:{reset} {help}");
            }
        } else if let Some(help) = &self.help {
            let _ = writeln!(out, "  = {bold}help:{reset} {help}");
        }
        out
    }
}

/// Renders a list of diagnostics, errors and warnings in file order, with a closing count.
pub fn render_all(diags: &[Diagnostic], file: &str, source: &str, color: bool) -> String {
    let mut sorted: Vec<&Diagnostic> = diags.iter().collect();
    sorted.sort_by_key(|d| (d.span.start, d.severity));
    let mut out = String::new();
    for d in &sorted {
        out.push_str(&d.render(file, source, color));
        out.push('\n');
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, 0) => {}
        (0, w) => out.push_str(&format!("{}\n", plural(w, "warning"))),
        (e, 0) => out.push_str(&format!("{} in {file}\n", plural(e, "error"))),
        (e, w) => out.push_str(&format!(
            "{} and {} in {file}\n",
            plural(e, "error"),
            plural(w, "warning")
        )),
    }
    out
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

impl Span {
    /// The first character of the file.
    pub fn default_at_start() -> Self {
        let p = Pos { line: 1, col: 1 };
        Span { start: p, end: p }
    }

    /// An empty span at this span's start.
    pub fn start_only(self) -> Self {
        Span {
            start: self.start,
            end: self.start,
        }
    }
}
