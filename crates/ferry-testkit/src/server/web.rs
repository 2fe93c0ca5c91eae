//! A browser's requests without a browser: a web session (signed in through the
//! sign-in form), pages read as HTML, and forms posted as a page posts them. Redirects
//! are not followed, so tests see them.

use super::Server;

/// One signed-in web session.
#[derive(Debug, Clone)]
pub struct Web {
    base: String,
    http: reqwest::Client,
    /// `ferry_session=…`.
    pub cookie: String,
    /// The session's CSRF token, as the pages carry it.
    pub csrf: String,
}

/// A page as it came.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Page {
    /// Where a redirect goes.
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A client that follows no redirect.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn read(resp: reqwest::Response) -> Page {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    Page {
        status,
        headers,
        text,
    }
}

/// The value of `name="NAME" value="…"` in a page's form (HTML-unescaped only for
/// what a token can hold).
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

impl Server {
    /// Signs in through the sign-in form with `token`: a web session.
    pub async fn web(&self, token: &str) -> Web {
        let base = self.client().base().to_string();
        let http = http();
        let resp = http
            .post(format!("{base}/ui/sign-in"))
            .header("sec-fetch-site", "same-origin")
            .form(&[("token", token), ("next", "/")])
            .send()
            .await
            .expect("sign in");
        assert_eq!(resp.status().as_u16(), 303, "signing in");
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("ferry_session=") || v.starts_with("__Host-ferry_session="))
            .expect("a session cookie")
            .split(';')
            .next()
            .expect("name=value")
            .to_string();
        let mut web = Web {
            base,
            http,
            cookie,
            csrf: String::new(),
        };
        let home = web.get("/").await;
        assert_eq!(home.status, 200, "{}", home.text);
        web.csrf = input_value(&home.text, "csrf").expect("the page's CSRF token");
        web
    }
}

impl Web {
    /// `GET path` with the session's cookie.
    pub async fn get(&self, path: &str) -> Page {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("get");
        read(resp).await
    }

    /// Posts a form to `path` as a page of this site does (same origin), with the
    /// session's cookie; `fields` as given (add `csrf` yourself to test without it).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_from(path, fields, "same-origin").await
    }

    /// Posts a form as a page of `site` (`Sec-Fetch-Site`) would.
    pub async fn post_from(&self, path: &str, fields: &[(&str, &str)], site: &str) -> Page {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("sec-fetch-site", site)
            .form(fields)
            .send()
            .await
            .expect("post");
        read(resp).await
    }

    /// A page's change: `POST /ui/act` asking the API for `method path`, with the
    /// session's CSRF token, `fields` as the body's typed fields.
    pub async fn act(&self, method: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all = vec![
            ("csrf", self.csrf.as_str()),
            ("method", method),
            ("path", path),
            ("back", "/"),
        ];
        all.extend_from_slice(fields);
        self.post("/ui/act", &all).await
    }
}
