//! The web UI (issue 13; being built): what the pages are made of. See
//! `docs/design.md`, "Web UI".

pub mod ansi;
