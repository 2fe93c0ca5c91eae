//! `${{ }}` expressions: where they are in a string, which names they may use, and how
//! they are evaluated. The expression language is MiniJinja's (Jinja2 syntax:
//! `==`, `and`, `or`, `not`, `in`, filters), with two functions of Ferry's own:
//! `changed(glob, ...)` and `glob(value, pattern)`.

use minijinja::{Environment, UndefinedBehavior, Value};

/// Fields of `event` (see `docs/pipeline.md`).
pub const EVENT_FIELDS: &[&str] = &[
    "name",
    "branch",
    "tag",
    "ref",
    "sha",
    "short_sha",
    "author",
    "message",
    "changed_files",
];

/// Built-in variables set in every step's environment, with what they hold.
pub const BUILTINS: &[(&str, &str)] = &[
    ("CI", "always `true`"),
    ("FERRY", "always `true`"),
    (
        "FERRY_EVENT",
        "the event: push, tag, pull_request, schedule, manual or api",
    ),
    ("FERRY_BRANCH", "the branch, empty for a tag"),
    ("FERRY_TAG", "the tag, empty for a branch"),
    ("FERRY_REF", "the full ref, e.g. refs/heads/main"),
    ("FERRY_COMMIT_SHA", "the commit's full sha"),
    (
        "FERRY_COMMIT_SHORT_SHA",
        "the first 8 characters of the sha",
    ),
    ("FERRY_COMMIT_AUTHOR", "the commit's author, `Name <email>`"),
    ("FERRY_COMMIT_MESSAGE", "the commit's message"),
    ("FERRY_RUN_ID", "the run's unique id"),
    ("FERRY_RUN_NUMBER", "the run's number in this store"),
    ("FERRY_JOB", "the job's name, with matrix values"),
    (
        "FERRY_JOB_ATTEMPT",
        "1 for the first attempt, 2 for the first retry...",
    ),
    ("FERRY_WORKSPACE", "the job's workspace directory"),
];

/// Built-ins whose value is not known when the plan is made, so `if:` cannot use them.
pub const RUN_TIME_ONLY: &[&str] = &[
    "FERRY_RUN_ID",
    "FERRY_RUN_NUMBER",
    "FERRY_JOB",
    "FERRY_JOB_ATTEMPT",
    "FERRY_WORKSPACE",
];

/// Functions expressions may call.
pub const FUNCTIONS: &[&str] = &["changed", "glob", "hash_files"];

/// One `${{ ... }}` in a string: byte range of the whole thing, and its inner text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'a> {
    pub start: usize,
    pub end: usize,
    pub inner: &'a str,
}

/// Finds every `${{ ... }}`. An unclosed one is an error at its byte offset.
pub fn find(text: &str) -> Result<Vec<Found<'_>>, usize> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("${{") {
        let start = from + i;
        let Some(j) = text[start + 3..].find("}}") else {
            return Err(start);
        };
        let end = start + 3 + j + 2;
        out.push(Found {
            start,
            end,
            inner: text[start + 3..end - 2].trim(),
        });
        from = end;
    }
    Ok(out)
}

/// The text of an `if:` condition without an optional `${{ }}` around it.
pub fn condition_text(text: &str) -> &str {
    let t = text.trim();
    match t.strip_prefix("${{").and_then(|r| r.strip_suffix("}}")) {
        Some(inner) if !inner.contains("${{") => inner.trim(),
        _ => t,
    }
}

/// What names an expression may use at its place in the file.
#[derive(Debug, Clone, Default)]
pub struct Scope<'a> {
    pub matrix_keys: &'a [String],
    pub env_names: Vec<&'a str>,
    /// True in `if:`, where run-time-only built-ins are not known yet.
    pub plan_time: bool,
    /// False outside jobs (the concurrency group), where no matrix exists.
    pub in_job: bool,
    /// In `deploy:`, where the names are `vars.*`, `release.*`, `environment.*` and
    /// `infra.outputs.*`.
    pub deploy: bool,
}

impl<'a> Scope<'a> {
    /// Outside jobs: the pipeline's `env:` and the concurrency group.
    pub fn pipeline(env_names: Vec<&'a str>, plan_time: bool) -> Self {
        Scope {
            matrix_keys: &[],
            env_names,
            plan_time,
            in_job: false,
            deploy: false,
        }
    }

    /// In a job with these matrix keys, seeing these variables.
    pub fn job(matrix_keys: &'a [String], env_names: Vec<&'a str>, plan_time: bool) -> Self {
        Scope {
            matrix_keys,
            env_names,
            plan_time,
            in_job: true,
            deploy: false,
        }
    }
}

/// The fields of `release` in `deploy:` expressions.
pub const RELEASE_FIELDS: &[&str] = &["id", "commit", "tag", "image", "dir"];

/// A problem with an expression: a message and a help line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub message: String,
    pub help: String,
}

/// The expression environment shared by lint, plan and engine.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_function(
        "glob",
        |value: String, pattern: String| -> Result<bool, minijinja::Error> {
            let g = globset::Glob::new(&pattern).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
            })?;
            Ok(g.compile_matcher().is_match(value))
        },
    );
    env
}

/// Checks syntax and names of one expression (without `${{ }}`).
pub fn check(inner: &str, scope: &Scope<'_>) -> Result<(), ExprError> {
    if inner.is_empty() {
        return Err(ExprError {
            message: "empty expression".into(),
            help: "write a variable or expression inside `${{ }}`, e.g. `${{ event.branch }}`"
                .into(),
        });
    }
    let env = environment();
    let compiled =
        env.compile_expression(inner).map_err(|e| {
            ExprError {
        message: format!("invalid expression `{inner}`: {}", e.detail().unwrap_or("syntax error")),
        help: "expressions use Jinja syntax: `==`, `!=`, `and`, `or`, `not`, `in`, 'quoted strings'"
            .into(),
    }
        })?;
    let mut names: Vec<String> = compiled.undeclared_variables(true).into_iter().collect();
    names.sort();
    for name in names {
        check_name(&name, scope)?;
    }
    Ok(())
}

fn check_name(name: &str, scope: &Scope<'_>) -> Result<(), ExprError> {
    let (head, field) = match name.split_once('.') {
        Some((h, f)) => (h, Some(f.split('.').next().unwrap_or(f))),
        None => (name, None),
    };
    if scope.deploy {
        return check_deploy_name(name, head, field);
    }
    let unknown = |what: String, candidates: Vec<&str>, fallback: String| {
        let help = match crate::diagnostic::did_you_mean(name_tail(name), candidates) {
            Some(s) => format!("did you mean `{}`?", replace_tail(name, s)),
            None => fallback,
        };
        Err(ExprError {
            message: what,
            help,
        })
    };
    match (head, field) {
        ("event", None) | ("matrix", None) | ("env", None) => Ok(()),
        ("event", Some(f)) => {
            if EVENT_FIELDS.contains(&f) {
                Ok(())
            } else {
                unknown(
                    format!("unknown variable `event.{f}`"),
                    EVENT_FIELDS.to_vec(),
                    format!("`event` has: {}", EVENT_FIELDS.join(", ")),
                )
            }
        }
        ("matrix", Some(f)) => {
            if scope.matrix_keys.iter().any(|k| k == f) {
                Ok(())
            } else if !scope.in_job {
                Err(ExprError {
                    message: format!(
                        "unknown variable `matrix.{f}`: matrix values exist only inside jobs"
                    ),
                    help: "this is decided once for the whole run: use `event.*` or `env.*`".into(),
                })
            } else if scope.matrix_keys.is_empty() {
                Err(ExprError {
                    message: format!("unknown variable `matrix.{f}`: this job has no matrix"),
                    help: "add a `matrix:` to the job, or remove the reference".into(),
                })
            } else {
                unknown(
                    format!("unknown variable `matrix.{f}`"),
                    scope.matrix_keys.iter().map(String::as_str).collect(),
                    format!("this job's matrix has: {}", scope.matrix_keys.join(", ")),
                )
            }
        }
        ("env", Some(f)) => {
            if scope.env_names.contains(&f) {
                Ok(())
            } else {
                unknown(
                    format!("unknown variable `env.{f}`"),
                    scope.env_names.clone(),
                    format!(
                        "`env.` sees the `env:` of the pipeline, job and step; read the host's environment in the shell as `${f}`"
                    ),
                )
            }
        }
        _ => {
            if FUNCTIONS.contains(&head) {
                if scope.plan_time && head == "hash_files" {
                    return Err(ExprError {
                        message: "`hash_files` is not known yet when `if:` is evaluated".into(),
                        help: "it hashes the job's workspace; use it in `cache.key` or `run:`"
                            .into(),
                    });
                }
                return Ok(());
            }
            if BUILTINS.iter().any(|(b, _)| *b == head) {
                if scope.plan_time && RUN_TIME_ONLY.contains(&head) {
                    return Err(ExprError {
                        message: format!("`{head}` is not known yet when `if:` is evaluated"),
                        help: "`if:` is decided before the run starts; use it in `run:` instead"
                            .into(),
                    });
                }
                return Ok(());
            }
            let mut candidates: Vec<&str> = BUILTINS.iter().map(|(b, _)| *b).collect();
            candidates.extend(["event", "matrix", "env"]);
            candidates.extend(FUNCTIONS);
            unknown(
                format!("unknown variable `{name}`"),
                candidates,
                "known names: event.*, matrix.*, env.*, and the FERRY_* built-ins".into(),
            )
        }
    }
}

fn check_deploy_name(name: &str, head: &str, field: Option<&str>) -> Result<(), ExprError> {
    match (head, field) {
        ("vars", _) | ("environment", None | Some("name")) => Ok(()),
        ("release", None) => Ok(()),
        ("infra", Some("outputs")) => Ok(()),
        ("release", Some(f)) if RELEASE_FIELDS.contains(&f) => Ok(()),
        ("release", Some(f)) => Err(ExprError {
            message: format!("unknown variable `release.{f}`"),
            help: match crate::diagnostic::did_you_mean(f, RELEASE_FIELDS.iter().copied()) {
                Some(s) => format!("did you mean `release.{s}`?"),
                None => format!("`release` has: {}", RELEASE_FIELDS.join(", ")),
            },
        }),
        ("secrets", _) => Err(ExprError {
            message: format!("`{name}`: secrets are not written into commands"),
            help: "secrets reach the deployment as environment variables (or files): use `$NAME` in the shell".into(),
        }),
        _ => Err(ExprError {
            message: format!("unknown variable `{name}` in `deploy`"),
            help: "`deploy` sees `vars.*` (the environment's variables), `release.*`, `environment.name` and `infra.outputs.*` (the outputs of its `infra:`)".into(),
        }),
    }
}

fn name_tail(name: &str) -> &str {
    match name.split_once('.') {
        Some((_, f)) => f.split('.').next().unwrap_or(f),
        None => name,
    }
}

fn replace_tail(name: &str, new: &str) -> String {
    match name.split_once('.') {
        Some((h, _)) => format!("{h}.{new}"),
        None => new.to_string(),
    }
}

/// Evaluates `text` with every `${{ }}` replaced by its value in `ctx`.
pub fn interpolate(env: &Environment<'_>, text: &str, ctx: &Value) -> Result<String, String> {
    let found = find(text).map_err(|_| "unclosed `${{`".to_string())?;
    if found.is_empty() {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for f in found {
        out.push_str(&text[last..f.start]);
        let value = eval(env, f.inner, ctx)?;
        if !value.is_undefined() && !value.is_none() {
            out.push_str(&value.to_string());
        }
        last = f.end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// Evaluates one expression.
pub fn eval(env: &Environment<'_>, inner: &str, ctx: &Value) -> Result<Value, String> {
    let compiled = env
        .compile_expression(inner)
        .map_err(|e| format!("`{inner}`: {e}"))?;
    compiled.eval(ctx).map_err(|e| format!("`{inner}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_expressions() {
        let f = find("a ${{ x }} b ${{y}}").unwrap_or_default();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].inner, "x");
        assert_eq!(f[1].inner, "y");
        assert_eq!(find("a ${{ x"), Err(2));
    }

    #[test]
    fn condition_without_braces() {
        assert_eq!(condition_text("${{ a == 'b' }}"), "a == 'b'");
        assert_eq!(condition_text("a == 'b'"), "a == 'b'");
    }

    #[test]
    fn checks_names() {
        let keys = vec!["db".to_string()];
        let scope = Scope {
            matrix_keys: &keys,
            env_names: vec!["PORT"],
            plan_time: true,
            in_job: true,
            deploy: false,
        };
        assert!(check("event.branch == 'main'", &scope).is_ok());
        assert!(check("matrix.db", &scope).is_ok());
        assert!(check("env.PORT", &scope).is_ok());
        assert!(check("changed('src/**')", &scope).is_ok());
        let e = check("event.brnch", &scope).err().map(|e| e.help);
        assert_eq!(e.as_deref(), Some("did you mean `event.branch`?"));
        assert!(check("FERRY_RUN_ID", &scope).is_err());
        assert!(check("matrix.os", &scope).is_err());
        assert!(check("a ==", &scope).is_err());
    }
}
