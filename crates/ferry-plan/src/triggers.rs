//! Does the `on:` section of a pipeline accept an event?

use ferry_config::{RefFilter, Triggers};
use globset::Glob;

use crate::event::{Event, EventKind};

fn any_glob(patterns: &[String], value: &str) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| {
            Glob::new(p)
                .map(|g| g.compile_matcher().is_match(value))
                .unwrap_or(false)
        })
}

fn paths_match(filter: &RefFilter, event: &Event) -> bool {
    if filter.paths.is_empty() {
        return true;
    }
    match &event.changed_files {
        None => true,
        Some(files) => files.iter().any(|f| any_glob(&filter.paths, f)),
    }
}

fn filter_matches(filter: &RefFilter, event: &Event) -> Result<(), String> {
    // A pull request is matched by the branch it would merge into: its own branch is
    // named by whoever opened it.
    let (what, branch) = match &event.pull_request {
        Some(pull) => ("target branch", pull.base.as_str()),
        None => ("branch", event.branch.as_deref().unwrap_or("")),
    };
    if !any_glob(&filter.branches, branch) {
        return Err(format!(
            "{what} `{branch}` is not in `branches` ({})",
            filter.branches.join(", ")
        ));
    }
    if !paths_match(filter, event) {
        return Err("no changed file matches `paths`".into());
    }
    Ok(())
}

/// `Ok` when the event starts a run; otherwise the reason it does not.
/// Without an `on:` section, pushes and tags run. Manual and API triggers always run
/// unless `on.manual` is `false`.
pub fn trigger_matches(on: &Triggers, event: &Event) -> Result<(), String> {
    let not_listed = || Err(format!("`on:` does not list `{}`", event.kind));
    match event.kind {
        EventKind::Manual | EventKind::Api => {
            if on.manual == Some(false) {
                Err("`on.manual` is false".into())
            } else {
                Ok(())
            }
        }
        _ if on.default => match event.kind {
            EventKind::Push | EventKind::Tag => Ok(()),
            _ => not_listed(),
        },
        EventKind::Push => match &on.push {
            Some(f) => filter_matches(f, event),
            None => not_listed(),
        },
        EventKind::PullRequest => match &on.pull_request {
            Some(f) => filter_matches(f, event),
            None => not_listed(),
        },
        EventKind::Tag => match &on.tag {
            Some(patterns) => {
                let tag = event.tag.as_deref().unwrap_or("");
                if any_glob(patterns, tag) {
                    Ok(())
                } else {
                    Err(format!(
                        "tag `{tag}` is not in `on.tag` ({})",
                        patterns.join(", ")
                    ))
                }
            }
            None => not_listed(),
        },
        EventKind::Schedule => {
            if on.schedule.is_empty() {
                not_listed()
            } else {
                Ok(())
            }
        }
    }
}
