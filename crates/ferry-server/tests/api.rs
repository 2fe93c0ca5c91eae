//! The OpenAPI document: served, complete, and itself sound. (That every real answer
//! matches it is checked by the test client on every call, in every test.)

use ferry_server::{Access, ROUTES, openapi_document};
use ferry_testkit::server::{Server, check_answer, compile_schema, route_of};
use serde_json::Value;

/// The served OpenAPI document lists every route with its method and security.
#[tokio::test]
async fn openapi_lists_every_route() {
    let s = Server::start().await;
    let (status, doc) = s.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for route in ROUTES {
        let op = &doc["paths"][route.path][route.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is in the document",
            route.method,
            route.path
        );
        assert_eq!(op["summary"], route.summary);
        let secured = op["security"].as_array().is_some_and(|a| !a.is_empty());
        assert_eq!(
            secured,
            matches!(route.access, Access::Token(_)),
            "{} {}",
            route.method,
            route.path
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "nothing documented that is not a route"
    );
    assert_eq!(
        doc,
        openapi_document(),
        "the served document is the document"
    );
    s.stop().await;
}

/// The names of a route's path parameters, in order.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// Every `$ref` in `value`, with where it stands.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push((at.clone(), r)),
                    _ => refs(v, format!("{at}/{k}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Each route has its path parameters, its request body, a JSON schema for each JSON
/// answer and `default` for errors; every reference resolves; every schema compiles as
/// JSON Schema 2020-12; operation ids are unique; and the route the test client finds
/// for a route's own path is that route.
#[test]
fn the_document_describes_every_route_soundly() {
    let doc = openapi_document();
    let mut problems = Vec::new();
    let mut operation_ids = std::collections::HashSet::new();
    for (index, route) in ROUTES.iter().enumerate() {
        let name = format!("{} {}", route.method, route.path);
        let op = &doc["paths"][route.path][route.method.to_lowercase()];
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str())
            .collect();
        if declared != path_params(route.path) {
            problems.push(format!("{name}: path parameters {declared:?}"));
        }
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["in"] == "path" && p["required"] != true {
                problems.push(format!(
                    "{name}: path parameter {} is not required",
                    p["name"]
                ));
            }
            if !p["schema"].is_object() {
                problems.push(format!("{name}: parameter {} has no schema", p["name"]));
            }
        }
        let body = &op["requestBody"];
        match (route.body.is_some(), body.is_object()) {
            (true, false) => problems.push(format!("{name}: takes a body, has no requestBody")),
            (false, true) => problems.push(format!("{name}: takes no body, has a requestBody")),
            (true, true) => {
                if !body["content"]["application/json"]["schema"].is_object() {
                    problems.push(format!("{name}: requestBody without a JSON schema"));
                }
                if body["required"] != !route.body_optional {
                    problems.push(format!(
                        "{name}: requestBody.required is {}",
                        body["required"]
                    ));
                }
            }
            (false, false) => {}
        }
        let Some(responses) = op["responses"].as_object() else {
            problems.push(format!("{name}: no responses"));
            continue;
        };
        if !responses.contains_key("default") {
            problems.push(format!("{name}: no default (error) response"));
        }
        if !responses.keys().any(|k| k.starts_with('2')) {
            problems.push(format!("{name}: no success response"));
        }
        for (status, response) in responses {
            if let Some(content) = response["content"].as_object() {
                for (media, c) in content {
                    // `true` (any value) is a schema too: the document's own route.
                    if !c["schema"].is_object() && !c["schema"].is_boolean() {
                        problems.push(format!("{name} {status} {media}: no schema"));
                    }
                }
            }
            if let Some(schema) = response.pointer("/content/application~1json/schema")
                && let Err(e) = compile_schema(schema, &doc)
            {
                problems.push(format!("{name} {status}: the schema does not compile: {e}"));
            }
        }
        match op["operationId"].as_str() {
            Some(id) if operation_ids.insert(id.to_string()) => {}
            other => problems.push(format!("{name}: operationId {other:?} missing or repeated")),
        }
        if route_of(route.method, route.path) != Some(index) {
            problems.push(format!(
                "{name}: the client's route lookup finds another route"
            ));
        }
    }
    let mut found = Vec::new();
    refs(&doc, String::new(), &mut found);
    assert!(!found.is_empty(), "the document uses references");
    for (at, target) in found {
        let resolved = target
            .strip_prefix('#')
            .and_then(|pointer| doc.pointer(pointer));
        if resolved.is_none_or(|v| !v.is_object() && !v.is_boolean()) {
            problems.push(format!("{at}: $ref {target} does not resolve"));
        }
    }
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        let r = serde_json::json!({ "$ref": format!("#/components/schemas/{name}") });
        if let Err(e) = compile_schema(&r, &doc) {
            problems.push(format!(
                "components/schemas/{name} does not compile: {e}; {schema}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The check the test client makes refuses an answer the document does not describe,
/// and passes one it does: a checker that accepts anything would hide drift.
#[test]
fn the_client_check_refuses_an_answer_unlike_the_document() {
    check_answer(
        "GET",
        "/api/v1/health",
        200,
        "application/json",
        r#"{"status":"ok","version":"1"}"#,
    );
    check_answer(
        "GET",
        "/api/v1/runs/x",
        404,
        "application/json",
        r#"{"code":"not_found","message":"no run x"}"#,
    );
    for (path, status, body) in [
        ("/api/v1/health", 200, r#"{"status":1,"version":"1"}"#),
        ("/api/v1/runs/x", 404, r#"{"error":"not found"}"#),
        ("/api/v1/repos?limit=1", 200, r#"{"repositories":{}}"#),
    ] {
        let refused = std::panic::catch_unwind(|| {
            check_answer("GET", path, status, "application/json", body);
        });
        assert!(
            refused.is_err(),
            "GET {path} {status} {body} was let through"
        );
    }
}

/// Every error is `{code, message}` with a documented code, the framework's own
/// rejections too (a body too large, a query that does not parse, a missing method, a
/// body that is not JSON).
#[tokio::test]
async fn every_error_is_json_with_a_documented_code() {
    let s = Server::start().await;
    let bare = s.repository("r", Some("jobs:\n  a:\n    run: 'true'\n"));
    s.register("r", &bare).await;
    let huge = "x".repeat(6 << 20);
    let admin = s.client().admin_token().to_string();
    let cases = [
        (
            s.request("POST", "/api/v1/hooks/github/r")
                .header("x-github-event", "push")
                .body(huge),
            413,
            "too_large",
        ),
        (
            s.request("GET", "/api/v1/runs?limit=many")
                .bearer_auth(&admin),
            400,
            "bad_request",
        ),
        (
            s.request("DELETE", "/api/v1/health"),
            405,
            "method_not_allowed",
        ),
        (
            s.request("POST", "/api/v1/repos")
                .bearer_auth(&admin)
                .header("content-type", "text/plain")
                .body("name=r"),
            415,
            "invalid_body",
        ),
        (s.request("GET", "/api/v1/nowhere"), 404, "not_found"),
    ];
    for (request, status, code) in cases {
        let answer = s.send(request).await;
        assert_eq!(answer.status, status, "{}", answer.text);
        assert_eq!(answer.json["code"], code, "{}", answer.text);
        assert!(
            answer.json["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            answer.text
        );
    }
    // Every code the server can answer is in the document and in docs/server.md.
    let doc = openapi_document();
    let codes: Vec<String> = doc["components"]["schemas"]["ErrorCode"]["oneOf"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            doc["components"]["schemas"]["ErrorCode"]["enum"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .filter_map(|v| v["const"].as_str().or(v.as_str()).map(str::to_string))
        .filter(|c| c != "unknown")
        .collect();
    assert!(codes.len() >= 19, "{codes:?}");
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/server.md"),
    )
    .expect("docs/server.md");
    for code in &codes {
        assert!(
            guide.contains(&format!("`{code}`")),
            "docs/server.md does not document the error code `{code}`"
        );
    }
    s.stop().await;
}
