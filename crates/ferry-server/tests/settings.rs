//! A repository's settings through the API: its `cache:` entries, registry logins,
//! and the names and values variables and secrets may (not) have.

use ferry_testkit::server::Server;
use serde_json::json;

/// A pipeline whose one job succeeds doing nothing.
const NOOP: &str = "jobs:\n  a:\n    run: 'true'\n";

#[tokio::test]
async fn caches_are_listed_and_cleared_through_the_api() {
    let s = Server::start().await;
    let pipeline = "jobs:\n  deps:\n    cache: { key: deps-v1, paths: [vendor] }\n    run: mkdir -p vendor && echo x > vendor/f\n";
    s.add_repository("cached", pipeline).await;
    let run_id = s.trigger("cached").await;
    let detail = s.finished(&run_id).await;
    assert_eq!(detail["run"]["status"], "success");
    assert_eq!(detail["images"], json!([]), "the run lists its images");
    let (status, body) = s.admin("GET", "/api/v1/repos/cached/caches", None).await;
    assert_eq!(status, 200, "{body}");
    let caches = body["caches"].as_array().expect("caches");
    assert_eq!(caches.len(), 1, "{body}");
    assert_eq!(caches[0]["key"], "deps-v1");
    assert_eq!(caches[0]["paths"], json!(["vendor"]));
    let (status, body) = s
        .admin("DELETE", "/api/v1/repos/cached/caches?key=other", None)
        .await;
    assert_eq!((status, body["removed"].as_u64()), (200, Some(0)));
    let (status, body) = s
        .admin("DELETE", "/api/v1/repos/cached/caches?key=deps-v1", None)
        .await;
    assert_eq!((status, body["removed"].as_u64()), (200, Some(1)));
    let body = s.get("/api/v1/repos/cached/caches").await;
    assert_eq!(body["caches"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn registry_logins_are_set_listed_without_passwords_and_removed() {
    let s = Server::start().await;
    let password = "pw-5d1c-only-sealed";
    let path = "/api/v1/repos/reg/registries/127.0.0.1:5000";
    s.add_repository("reg", NOOP).await;
    let login = json!({ "username": "ci", "password": password });
    let (status, body) = s.admin("PUT", path, Some(login)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["registry"]["username"], "ci");
    assert!(!body.to_string().contains(password));
    let (status, body) = s.admin("GET", "/api/v1/repos/reg/registries", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["registries"][0]["host"], "127.0.0.1:5000");
    assert_eq!(body["registries"][0]["updated_by"], "user:admin");
    assert!(!body.to_string().contains(password), "never returned");
    let no_password = json!({ "username": "ci", "password": "" });
    let (status, body) = s.admin("PUT", path, Some(no_password)).await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = s.admin("DELETE", path, None).await;
    assert_eq!(status, 200);
    let (status, body) = s.admin("DELETE", path, None).await;
    assert_eq!(status, 404, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn hostile_names_in_delivery_requests_are_refused() {
    let s = Server::start().await;
    s.add_repository("hostile", NOOP).await;
    // A path out of the data directory through the environment's name.
    let escape = "/api/v1/repos/hostile/environments/..%2F..%2F..%2Fetc/output";
    let (status, body) = s.admin("GET", escape, None).await;
    assert_eq!(status, 422, "{body}");
    for (path, value) in [
        (
            "/api/v1/repos/hostile/variables/..%2Fx",
            json!({ "value": "v" }),
        ),
        (
            "/api/v1/repos/hostile/variables/FERRY_X",
            json!({ "value": "v" }),
        ),
        (
            "/api/v1/repos/hostile/secrets/A",
            json!({ "value": "v", "environment": "../prod" }),
        ),
        (
            "/api/v1/repos/hostile/secrets/A",
            json!({ "value": "v", "environment": "Prod" }),
        ),
    ] {
        let (status, body) = s.admin("PUT", path, Some(value)).await;
        assert_eq!(status, 422, "{path}: {body}");
    }
    // A huge value is refused by the body limit, an unknown field by the schema.
    let huge = json!({ "value": "x".repeat(3 << 20) });
    let (status, _) = s
        .admin("PUT", "/api/v1/repos/hostile/secrets/BIG", Some(huge))
        .await;
    assert_eq!(status, 413);
    let unknown_field = json!({ "value": "v", "scope": "x" });
    let (status, _) = s
        .admin(
            "PUT",
            "/api/v1/repos/hostile/secrets/A",
            Some(unknown_field),
        )
        .await;
    assert_eq!(status, 422);
    let listed = s.get("/api/v1/repos/hostile/secrets").await;
    assert_eq!(listed["secrets"], json!([]), "nothing was stored");
    s.stop().await;
}
