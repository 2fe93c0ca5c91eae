//! `ferry lint`.

use std::path::{Path, PathBuf};

use crate::args::LintArgs;
use crate::{Failure, exit, style};

/// The pipeline file for a path: the path itself if it is a file, else `.ferry.yml` in it.
pub fn pipeline_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(ferry_config::FILE_NAME)
    } else {
        path.to_path_buf()
    }
}

/// Reads a pipeline file; an unreadable file is a usage error.
pub fn read(file: &Path) -> Result<String, Failure> {
    let bytes = std::fs::read(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Failure::usage(format!(
            "{} not found\n  = help: create it, e.g. with `jobs: {{ build: {{ run: make }} }}`",
            file.display()
        )),
        _ => Failure::usage(format!("cannot read {}: {e}", file.display())),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        Failure::usage(format!(
            "{}: the file is not valid UTF-8 (at byte {})",
            file.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Loads a pipeline, printing diagnostics to stderr. Errors end the command with exit 2.
pub fn load(file: &Path, display: &str) -> Result<ferry_config::Pipeline, Failure> {
    let source = read(file)?;
    match ferry_config::load(&source) {
        Ok(loaded) => {
            if !loaded.warnings.is_empty() {
                eprint!(
                    "{}",
                    ferry_config::render_all(
                        &loaded.warnings,
                        display,
                        &source,
                        style::stderr_color()
                    )
                );
            }
            Ok(loaded.pipeline)
        }
        Err(diags) => {
            eprint!(
                "{}",
                ferry_config::render_all(&diags, display, &source, style::stderr_color())
            );
            Err(Failure::silent(exit::USAGE))
        }
    }
}

pub fn lint(args: LintArgs) -> Result<u8, Failure> {
    let file = pipeline_file(&args.path);
    let source = read(&file)?;
    let display = display_name(&args.path, &file);
    let diags = match ferry_config::load(&source) {
        Ok(loaded) => loaded.warnings,
        Err(diags) => diags,
    };
    let failed = diags.iter().any(|d| d.is_error());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&diags).unwrap_or_default()
        );
    } else if diags.is_empty() {
        println!("{display}: ok");
    } else {
        eprint!(
            "{}",
            ferry_config::render_all(&diags, &display, &source, style::stderr_color())
        );
    }
    Ok(if failed { exit::USAGE } else { exit::OK })
}

/// The file name as the user would write it: relative to where they are.
pub fn display_name(arg: &Path, file: &Path) -> String {
    if arg.is_dir() {
        if arg == Path::new(".") {
            ferry_config::FILE_NAME.to_string()
        } else {
            file.display().to_string()
        }
    } else {
        arg.display().to_string()
    }
}
