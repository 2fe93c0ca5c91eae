//! The server's own log: `tracing` events from every crate, on standard error.
//!
//! Levels come from `FERRY_LOG`, else `RUST_LOG` (`EnvFilter` syntax: `info`, `debug`,
//! `ferry_server=debug,ferry_deliver=trace`; default `info`). The format is `human`
//! (colours on a terminal) or `json` (one object per line, for a log collector).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// How the server's log is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// The filter the variable `var` (`FERRY_LOG` or `RUST_LOG`) asks for with `spec`, or
/// why it cannot be read.
#[cfg(test)]
fn filter(var: &str, spec: Option<&str>) -> Result<EnvFilter, String> {
    filter_or(var, spec, "info")
}

/// [`filter`], with `default` when the variable says nothing.
fn filter_or(var: &str, spec: Option<&str>, default: &str) -> Result<EnvFilter, String> {
    match spec.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(EnvFilter::new(default)),
        Some(s) => EnvFilter::try_new(s).map_err(|e| format!("{var}=`{s}`: {e}")),
    }
}

/// Which variable sets the levels: `FERRY_LOG` when set, else `RUST_LOG` (as other
/// Rust programs read it), and what it says.
fn levels() -> (&'static str, Option<String>) {
    match std::env::var("FERRY_LOG") {
        Ok(s) if !s.trim().is_empty() => ("FERRY_LOG", Some(s)),
        _ => ("RUST_LOG", std::env::var("RUST_LOG").ok()),
    }
}

/// Installs the subscriber for this process (once; a second call changes nothing).
pub fn init(format: LogFormat) -> Result<(), String> {
    init_or(format, "info")
}

/// [`init`], at the levels `default` when neither variable says any.
pub fn init_or(format: LogFormat, default: &str) -> Result<(), String> {
    let (var, spec) = levels();
    let filter = filter_or(var, spec.as_deref(), default)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::CLOSE)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(filter("FERRY_LOG", None).is_ok());
        assert!(filter("FERRY_LOG", Some("")).is_ok());
        assert!(filter("FERRY_LOG", Some("debug")).is_ok());
        assert!(filter("FERRY_LOG", Some("ferry_server=debug,ferry_deliver=trace")).is_ok());
        let err = filter("FERRY_LOG", Some("ferry_server=loud")).expect_err("bad level");
        assert!(err.starts_with("FERRY_LOG=`ferry_server=loud`: "), "{err}");
        let err = filter("RUST_LOG", Some("x=loud")).expect_err("bad level");
        assert!(err.starts_with("RUST_LOG=`x=loud`: "), "{err}");
    }
}
