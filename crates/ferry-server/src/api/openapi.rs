//! The OpenAPI 3.1 document, generated from [`ROUTES`] and the request and answer types
//! (JSON Schema 2020-12 by `schemars`, which OpenAPI 3.1 uses as is).

use axum::Json;
use schemars::generate::{Contract, SchemaSettings};
use schemars::{Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::{Access, ROUTES, Reply};
use crate::error::ErrorBody;

/// Where the types' schemas go, as `$ref` targets.
const COMPONENTS: &str = "/components/schemas";

fn generator(contract: Contract) -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = COMPONENTS.into();
            s.contract = contract;
        })
        .into_generator()
}

/// What a path parameter names.
fn describe_param(name: &str) -> &'static str {
    match name {
        "repo" => "The repository's name or id",
        "run" => "The run's id",
        "job" => "The job's id or name",
        "release" => "The release's name or id",
        "deployment" => "The deployment: `ENV#N`, `N` or its id",
        "environment" => "The environment's name",
        "name" => "The variable's or secret's name",
        "host" => "The registry's host, e.g. `127.0.0.1:5000`",
        "token" => "The token's id",
        "delivery" => "The delivery's id (from `GET …/deliveries`)",
        "provider" => "`github`, `gitlab`, `gitea`, `forgejo` or `generic`",
        _ => "",
    }
}

/// The query parameters of a route: the properties of its query type.
fn query_params(schema: &Value, defs: &Map<String, Value>) -> Vec<Value> {
    let resolved = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .rsplit('/')
            .next()
            .and_then(|name| defs.get(name))
            .cloned()
            .unwrap_or_default(),
        None => schema.clone(),
    };
    let required: Vec<&str> = resolved["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = Vec::new();
    for (name, prop) in resolved["properties"].as_object().into_iter().flatten() {
        let mut param = json!({
            "name": name,
            "in": "query",
            "required": required.contains(&name.as_str()),
            "schema": prop,
        });
        if let Some(d) = prop.get("description") {
            param["description"] = d.clone();
        }
        out.push(param);
    }
    out
}

/// Moves a generator's definitions into `components`, refusing a name that two
/// different schemas would share.
fn merge_definitions(into: &mut Map<String, Value>, generator: &mut SchemaGenerator) {
    for (name, schema) in generator.take_definitions(true) {
        match into.get(&name) {
            Some(existing) if *existing != schema => {
                panic!("two different schemas are both named `{name}` in the OpenAPI document")
            }
            _ => {
                into.insert(name, schema);
            }
        }
    }
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi_document() -> Value {
    // Answers are what the server serialises; bodies and queries what it accepts.
    let mut answers = generator(Contract::Serialize);
    let mut inputs = generator(Contract::Deserialize);
    let error = answers.subschema_for::<ErrorBody>();
    let mut ops: Vec<(&super::Route, Value)> = Vec::new();
    let mut query_schemas = Vec::new();
    for route in ROUTES {
        let mut op = json!({ "summary": route.summary, "operationId": operation_id(route) });
        let mut responses = Map::new();
        match route.reply {
            Reply::Json { status, schema } => {
                let schema: Schema = schema(&mut answers);
                for status in std::iter::once(status).chain(route.also) {
                    responses.insert(
                        status.to_string(),
                        json!({ "description": "OK", "content": { "application/json": { "schema": schema } } }),
                    );
                }
            }
            Reply::NoContent => {
                responses.insert("204".into(), json!({ "description": "Done" }));
            }
            Reply::Text => {
                responses.insert(
                    "200".into(),
                    json!({ "description": "OK", "content": { "text/plain": { "schema": { "type": "string" } } } }),
                );
            }
            Reply::Events(data) => {
                // OpenAPI 3.1 cannot type a stream's items: the data of each event.
                let media = json!({
                    "schema": { "type": "string" },
                    "x-ferry-event-data": data(&mut answers).to_value(),
                });
                responses.insert(
                    "200".into(),
                    json!({ "description": "Server-Sent Events", "content": { "text/event-stream": media } }),
                );
            }
        }
        responses.insert(
            "default".into(),
            json!({ "description": "An error", "content": { "application/json": { "schema": error } } }),
        );
        op["responses"] = Value::Object(responses);
        if let Some(body) = route.body {
            let schema: Schema = body(&mut inputs);
            op["requestBody"] = json!({
                "required": !route.body_optional,
                "content": { "application/json": { "schema": schema } }
            });
        }
        query_schemas.push(route.query.map(|q| q(&mut inputs).to_value()));
        match route.access {
            Access::Public => op["security"] = json!([]),
            Access::Signed => {
                op["security"] = json!([]);
                op["description"] = json!(
                    "Authenticated by the delivery's signature (see docs/server.md), not a token. \
                     The body is the forge's own payload."
                );
            }
            Access::Token(role) => {
                op["security"] = json!([{ "bearer": [] }]);
                op["description"] = json!(format!("Needs the {} role.", role.as_str()));
            }
        }
        ops.push((route, op));
    }
    let mut schemas = Map::new();
    merge_definitions(&mut schemas, &mut answers);
    merge_definitions(&mut schemas, &mut inputs);
    let mut paths = Map::new();
    for ((route, mut op), query) in ops.into_iter().zip(query_schemas) {
        let mut params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({
                    "name": name,
                    "in": "path",
                    "required": true,
                    "description": describe_param(name),
                    "schema": { "type": "string" }
                })
            })
            .collect();
        if let Some(q) = query {
            params.extend(query_params(&q, &schemas));
        }
        op["parameters"] = Value::Array(params);
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Ferry API", "version": env!("CARGO_PKG_VERSION") },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas,
        },
        "security": [{ "bearer": [] }]
    })
}

/// `get_api_v1_runs_run`: unique per method and path.
fn operation_id(route: &super::Route) -> String {
    let mut id = route.method.to_lowercase();
    for seg in route.path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(
            seg.trim_matches(['{', '}'])
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

pub(crate) async fn serve() -> Json<Value> {
    Json(openapi_document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_types() {
        let doc = openapi_document();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for name in [
            "RunDetail",
            "DeploymentDetail",
            "ReleaseDiff",
            "Error",
            "Run",
        ] {
            assert!(schemas.contains_key(name), "{name} in components");
        }
        let op = &doc["paths"]["/api/v1/runs"]["get"];
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(params, ["before", "branch", "limit", "repo", "status"]);
        let body = &doc["paths"]["/api/v1/repos/{repo}/deployments"]["post"]["requestBody"];
        assert_eq!(body["required"], true);
        assert_eq!(
            body["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Promote"
        );
        let rerun = &doc["paths"]["/api/v1/runs/{run}/rerun"]["post"];
        assert_eq!(rerun["requestBody"]["required"], false);
        assert!(rerun["responses"]["201"].is_object());
        // Every reference points at a schema that exists.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"").skip(1) {
            let target = r.split('"').next().unwrap_or("");
            let name = target.trim_start_matches("#/components/schemas/");
            assert!(schemas.contains_key(name), "{target} resolves");
        }
    }
}
