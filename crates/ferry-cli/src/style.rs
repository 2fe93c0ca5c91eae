//! Colours and symbols for terminal output; plain when not on a terminal or `NO_COLOR`.

use std::io::IsTerminal;

use ferry_store::Status;

pub fn color_enabled(stream_is_tty: bool) -> bool {
    stream_is_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn stderr_color() -> bool {
    color_enabled(std::io::stderr().is_terminal())
}

pub fn error_line(message: &str) -> String {
    if stderr_color() {
        format!("\x1b[1;31merror:\x1b[0m {message}")
    } else {
        format!("error: {message}")
    }
}

/// The colours of job-name prefixes, in turn.
const PALETTE: &[&str] = &["36", "35", "34", "33", "32", "96", "95", "94", "93", "92"];

pub fn job_color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

pub fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

pub fn status_code(s: Status) -> &'static str {
    match s {
        Status::Success => "32",
        Status::Failed => "31",
        Status::Cancelled => "33",
        Status::Skipped => "90",
        Status::Running => "36",
        Status::Queued => "37",
    }
}

pub fn status_word(s: Status, color: bool) -> String {
    paint(s.as_str(), status_code(s), color)
}

pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}
