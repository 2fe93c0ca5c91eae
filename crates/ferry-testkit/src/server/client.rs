//! The test client: every answer it gets is checked against the OpenAPI document.

use std::time::Duration;

use serde_json::Value;

use super::openapi::check_answer;

/// A client of one test server, with the admin's token at hand.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    admin: String,
    http: reqwest::Client,
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The body as text.
    pub text: String,
    /// The body as JSON; a body that is not JSON as a JSON string.
    pub json: Value,
}

impl Client {
    pub(super) fn new(base: String, admin: String) -> Self {
        Self {
            base,
            admin,
            http: reqwest::Client::new(),
        }
    }

    /// `http://127.0.0.1:PORT`, where the server listens.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The first admin's token.
    pub fn admin_token(&self) -> &str {
        &self.admin
    }

    /// A request to build further (headers, a raw body); send it with [`Client::send`].
    pub fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = method.parse().expect("method");
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Sends a request and reads the answer; fails the test when a JSON answer does not
    /// match what the OpenAPI document says the route answers with that status.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let request = request.build().expect("request");
        let method = request.method().as_str().to_string();
        let path = request.url().path().to_string();
        let resp = self.http.execute(request).await.expect("send");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        check_answer(&method, &path, status, content_type, &text);
        Answer {
            status,
            headers,
            text,
            json,
        }
    }

    /// `METHOD path` with a bearer `token` and a JSON `body`: the status and the JSON
    /// answer (a text answer as a JSON string).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.request(method, path);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let answer = self.send(req).await;
        (answer.status, answer.json)
    }

    /// [`Client::call`] with the admin's token.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = self.admin.clone();
        self.call(method, path, Some(&token), body).await
    }

    /// A job's stored log, as text.
    pub async fn log(&self, run_id: &str, job: &str) -> String {
        let path = format!("/api/v1/runs/{run_id}/jobs/{job}/log");
        self.send(self.request("GET", &path).bearer_auth(&self.admin))
            .await
            .text
    }

    /// A run's Server-Sent Events, read until `end`, as (kind, data).
    pub async fn events(&self, run_id: &str) -> Vec<(String, Value)> {
        read_sse(self.connect_events(run_id).await).await
    }

    /// Opens a run's Server-Sent Events. Once this returns, the server has subscribed
    /// the stream to the run's live events (it does so before it answers).
    pub async fn connect_events(&self, run_id: &str) -> reqwest::Response {
        self.connect(&format!("/api/v1/runs/{run_id}/events")).await
    }

    /// Opens a run's Server-Sent Events with a query (`offsets=…`); the answer as it is.
    pub async fn connect_events_with(&self, run_id: &str, query: &str) -> reqwest::Response {
        self.connect(&format!("/api/v1/runs/{run_id}/events?{query}"))
            .await
    }

    /// Opens a repository's delivery events (deployments and decisions), as admin.
    pub async fn connect_repo_events(&self, repo: &str) -> reqwest::Response {
        self.connect(&format!("/api/v1/repos/{repo}/events")).await
    }

    async fn connect(&self, path: &str) -> reqwest::Response {
        self.request("GET", path)
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("events")
    }
}

/// Reads a Server-Sent Events stream until `end`: the events as (kind, data).
pub async fn read_sse(resp: reqwest::Response) -> Vec<(String, Value)> {
    let mut resp = resp;
    let mut buf = String::new();
    let mut events = Vec::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(60), resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no event for 60 s; so far: {events:?}"))
            .expect("chunk");
        let Some(chunk) = chunk else { return events };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut kind = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if kind.is_empty() {
                continue; // a keep-alive comment
            }
            let done = kind == "end";
            events.push((kind, serde_json::from_str(&data).unwrap_or(Value::Null)));
            if done {
                return events;
            }
        }
    }
}

/// The text of the `log` events, in order.
pub fn log_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(k, _)| k == "log")
        .map(|(_, d)| d["text"].as_str().unwrap_or_default().to_string())
        .collect()
}
