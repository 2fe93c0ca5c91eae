//! Every answer a test gets is checked against the server's own OpenAPI document, so
//! the document cannot drift from what the handlers write.
//!
//! The route is the entry of `ROUTES` whose method matches and whose path template
//! matches segment by segment (`{x}` is any one segment; the query string is left out).
//! The schema is the one the document gives the answered status, else `default` (the
//! error). Answers that are not JSON (logs, Server-Sent Events, an empty 204) are not
//! checked. A path no route matches is answered by the router's fallback, an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use ferry_server::ROUTES;
use serde_json::{Value, json};

/// The document and one compiled validator per (route, status), made on first use.
struct Checker {
    document: Value,
    validators: Mutex<HashMap<(usize, String), Arc<jsonschema::Validator>>>,
}

fn checker() -> &'static Checker {
    static CHECKER: OnceLock<Checker> = OnceLock::new();
    CHECKER.get_or_init(|| Checker {
        document: ferry_server::openapi_document(),
        validators: Mutex::default(),
    })
}

/// The index in `ROUTES` of the route `method path` reaches: of the templates that
/// match, the one with the most literal segments (as the router prefers them).
pub fn route_of(method: &str, path: &str) -> Option<usize> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    ROUTES
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method.eq_ignore_ascii_case(method))
        .filter_map(|(i, r)| {
            let template: Vec<&str> = r.path.split('/').collect();
            if template.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (t, s) in template.iter().zip(&segments) {
                if t.starts_with('{') && t.ends_with('}') {
                    if s.is_empty() {
                        return None;
                    }
                } else if t == s {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((i, literal))
        })
        .max_by_key(|(_, literal)| *literal)
        .map(|(i, _)| i)
}

/// A JSON Schema 2020-12 document that validates against `schema`, with the OpenAPI
/// document's `components` beside it so that `#/components/...` references resolve.
pub fn standalone(schema: &Value, document: &Value) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": document["components"],
    })
}

/// Whether `schema` (which may refer into the document's components) compiles as a
/// JSON Schema 2020-12; why not, if it does not.
pub fn compile_schema(schema: &Value, document: &Value) -> Result<(), String> {
    jsonschema::validator_for(&standalone(schema, document))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Fails the test when a JSON answer to `method path` does not match the OpenAPI
/// document: with the method, path, status, what does not match and the body.
pub fn check_answer(method: &str, path: &str, status: u16, content_type: &str, body: &str) {
    let is_json = content_type.starts_with("application/json");
    if !is_json {
        // Logs and output (text/plain), event streams and empty answers: not JSON.
        return;
    }
    let checker = checker();
    let instance: Value = serde_json::from_str(body).unwrap_or_else(|e| {
        panic!(
            "{method} {path} answered {status} with application/json that is not JSON ({e}): {body}"
        )
    });
    let Some(index) = route_of(method, path) else {
        check_fallback(checker, method, path, status, &instance, body);
        return;
    };
    let route = &ROUTES[index];
    let responses =
        &checker.document["paths"][route.path][route.method.to_lowercase()]["responses"];
    let (key, response) = match responses.get(status.to_string()) {
        Some(r) => (status.to_string(), r),
        None => ("default".to_string(), &responses["default"]),
    };
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        panic!(
            "{method} {path} answered {status} with JSON, but the OpenAPI document gives {} {} \
             no JSON answer for {key}: {body}",
            route.method, route.path
        );
    };
    let validator = {
        let mut cache = checker.validators.lock().expect("validators");
        cache
            .entry((index, key.clone()))
            .or_insert_with(|| {
                let standalone = standalone(schema, &checker.document);
                Arc::new(jsonschema::validator_for(&standalone).unwrap_or_else(|e| {
                    panic!(
                        "the schema of {} {} {key} does not compile: {e}",
                        route.method, route.path
                    )
                }))
            })
            .clone()
    };
    report(
        &validator,
        &instance,
        &format!(
            "{method} {path} answered {status} (checked as {} {} {key})",
            route.method, route.path
        ),
        body,
    );
}

/// The router's fallback answers every unknown path with an error.
fn check_fallback(
    checker: &Checker,
    method: &str,
    path: &str,
    status: u16,
    instance: &Value,
    body: &str,
) {
    let schema = json!({ "$ref": "#/components/schemas/Error" });
    let validator = jsonschema::validator_for(&standalone(&schema, &checker.document))
        .expect("the error schema compiles");
    report(
        &validator,
        instance,
        &format!("{method} {path} (no route) answered {status}"),
        body,
    );
}

fn report(validator: &jsonschema::Validator, instance: &Value, what: &str, body: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("  - at `{}`: {e}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}, which does not match the OpenAPI document:\n{}\nbody: {body}",
        errors.join("\n")
    );
}
