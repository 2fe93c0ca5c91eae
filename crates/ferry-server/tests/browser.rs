//! The web UI in a real browser: Debian's Chromium, driven through its chromedriver
//! (WebDriver, with fantoccini) against the real server. Screenshots of each page are
//! kept in `$CARGO_TARGET_TMPDIR/ui-screenshots/` (e.g. `/var/cache/ferry-target/tmp/`).
//!
//! `scripts/test.sh` installs `chromium` and `chromium-driver` and sets
//! `FERRY_TEST_CHROMEDRIVER` and `FERRY_TEST_CHROMIUM`; `FERRY_SKIP_BROWSER=1` skips
//! these tests on purpose.

use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use ferry_testkit::server::{Server, shop_with_v1};
use serde_json::json;

/// Chromium under chromedriver, both in a process group of their own that is killed
/// when this is dropped (a failed test leaves no browser behind).
struct Browser {
    client: Option<Client>,
    driver: std::process::Child,
    _profile: tempfile::TempDir,
    shots: std::path::PathBuf,
}

impl Browser {
    async fn start(test: &str) -> Option<Browser> {
        let (Ok(driver), Ok(chromium)) = (
            std::env::var("FERRY_TEST_CHROMEDRIVER"),
            std::env::var("FERRY_TEST_CHROMIUM"),
        ) else {
            assert!(
                std::env::var_os("FERRY_SKIP_BROWSER").is_some(),
                "set FERRY_TEST_CHROMEDRIVER and FERRY_TEST_CHROMIUM (scripts/test.sh) or FERRY_SKIP_BROWSER=1"
            );
            return None;
        };
        let port = ferry_testkit::server::free_port();
        let mut cmd = std::process::Command::new(driver);
        cmd.arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("profile");
        let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("ui-screenshots")
            .join(test);
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        let mut browser = Browser {
            client: None,
            driver,
            _profile: profile,
            shots,
        };
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ]
            }
        });
        let caps: fantoccini::wd::Capabilities = caps.as_object().expect("object").clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("chromedriver did not take a session: {e}"),
            }
        };
        browser.client = Some(client);
        Some(browser)
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("client")
    }

    async fn goto(&self, url: &str) {
        self.c().goto(url).await.expect("navigate");
    }

    async fn text(&self, css: &str) -> String {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .expect("text")
    }

    /// Waits (bounded) until the page's `css` element's text holds `want`.
    async fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = match self.c().find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if got.contains(want) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never held {want:?}; it holds {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn shot(&self, name: &str) {
        let png = self.c().screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write screenshot");
    }

    async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/")).await;
        let field = self
            .c()
            .find(Locator::Css("#token"))
            .await
            .expect("the sign-in form");
        field.send_keys(token).await.expect("type");
        self.c()
            .find(Locator::Css("form button[type=submit]"))
            .await
            .expect("button")
            .click()
            .await
            .expect("submit");
        self.wait_text("h1", "Dashboard").await;
    }

    async fn click(&self, css: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .expect("click");
    }

    async fn js(&self, script: &str) -> serde_json::Value {
        self.c().execute(script, vec![]).await.expect("script")
    }

    /// Ends the session (the browser exits) before the driver is killed.
    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_then_watch_a_running_jobs_log_lines_arrive_without_reloading() {
    let Some(b) = Browser::start("live-log").await else {
        return;
    };
    let s = Server::start().await;
    s.add_repository(
        "live",
        "jobs:\n  tick:\n    run: |\n      for i in $(seq 1 40); do echo \"tick $i\"; sleep 0.1; done\n",
    )
    .await;
    let base = s.client().base().to_string();
    b.sign_in(&base, &s.admin).await;
    assert!(b.text(".who").await.contains("admin"));
    b.shot("dashboard").await;
    let run_id = s.trigger("live").await;
    // The job's page, opened while it runs.
    let detail = s
        .wait_until(&format!("/api/v1/runs/{run_id}"), "the job runs", |d| {
            d["jobs"][0]["status"] == "running"
        })
        .await;
    let job = detail["jobs"][0]["id"].as_str().expect("job").to_string();
    b.goto(&format!("{base}/ui/runs/{run_id}/jobs/{job}")).await;
    // A mark on this page: still there at the end means no reload happened.
    b.js("window.ferryMark = 42").await;
    let lines = b.wait_text("#log-lines", "tick 40").await;
    assert!(
        lines.contains("tick 1\n") || lines.contains("tick 1"),
        "{lines}"
    );
    assert_eq!(
        b.js("return window.ferryMark").await,
        json!(42),
        "the page was reloaded"
    );
    let numbered = b.text("#L40 .c").await;
    assert_eq!(numbered, "tick 40");
    b.wait_text("[data-job-status]", "success").await;
    b.shot("live-log").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_a_failed_job_from_the_run_page_and_read_its_error() {
    let Some(b) = Browser::start("failed-job").await else {
        return;
    };
    let s = Server::start().await;
    s.add_repository(
        "broke",
        "jobs:\n  build:\n    run: echo built\n  test:\n    needs: [build]\n    run: |\n      echo 'assertion failed: 2 + 2 == 5' >&2\n      exit 3\n  deploy:\n    needs: [test]\n    run: echo never\n",
    )
    .await;
    let run_id = s.trigger("broke").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "failed");
    let base = s.client().base().to_string();
    b.sign_in(&base, &s.admin).await;
    b.goto(&format!("{base}/ui/runs/{run_id}")).await;
    // The graph: three jobs, the failed one marked, the skipped one saying why.
    let nodes = b
        .js("return document.querySelectorAll('.dag a.node').length")
        .await;
    assert_eq!(nodes, json!(3));
    let failed = b
        .js("return document.querySelector('.dag a.node[data-job=\"test\"]').getAttribute('class')")
        .await;
    assert_eq!(failed, json!("node n-failed"));
    let why = b
        .js("return document.querySelector('.dag a.node[data-job=\"deploy\"] title').textContent")
        .await;
    assert!(why.as_str().is_some_and(|w| w.contains("skipped")), "{why}");
    b.shot("run").await;
    b.click(".dag a.node[data-job=\"test\"]").await;
    b.wait_text("h1", "test").await;
    let log = b.wait_text("#log-lines", "assertion failed").await;
    assert!(log.contains("assertion failed: 2 + 2 == 5"), "{log}");
    assert!(b.text("main").await.contains("exit code 3"));
    b.shot("failed-job").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_user_approves_production_on_the_board_and_sees_it_go_live() {
    let Some(author) = Browser::start("approve-author").await else {
        return;
    };
    let s = Server::start().await;
    shop_with_v1(&s, "shop").await;
    let approver = s.user("ann", "approver").await;
    let base = s.client().base().to_string();
    let board = format!("{base}/ui/repos/shop/environments");

    // The author (the admin triggered the run) is refused by the API's rule.
    author.sign_in(&base, &s.admin).await;
    author.goto(&board).await;
    author.shot("board-waiting").await;
    author
        .click("section[data-environment=\"production\"] form button:not(.danger):not(.secondary)")
        .await;
    let refused = author.wait_text("main", "author").await;
    assert!(refused.contains("403"), "{refused}");
    author.shot("author-refused").await;
    author.close().await;

    let b = Browser::start("approve").await.expect("a browser");
    b.sign_in(&base, &approver).await;
    b.goto(&board).await;
    let column = "section[data-environment=\"production\"]";
    assert!(b.text(column).await.contains("awaiting approval"));
    let comment = b
        .c()
        .find(Locator::Css(&format!("{column} input[name=\"o:comment\"]")))
        .await
        .expect("a comment field");
    comment.send_keys("looks good").await.expect("type");
    b.click(&format!(
        "{column} form button:not(.danger):not(.secondary)"
    ))
    .await;
    // Back on the board, which follows the delivery stream until production is live.
    let live = b.wait_text(column, "Live").await;
    assert!(live.contains("ann"), "approved by ann: {live}");
    b.shot("board-live").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_log_opens_at_its_end_and_jumps_to_its_first_line() {
    let Some(b) = Browser::start("big-log").await else {
        return;
    };
    let s = Server::start().await;
    // 1,000,000 lines of 100 bytes.
    s.add_repository(
        "big",
        "jobs:\n  spew:\n    run: seq -f 'line %07.0f of a log that is one hundred megabytes long, padded so that each line holds 100 bytes.' 1 1000000\n",
    )
    .await;
    let run_id = s.trigger("big").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let (_, detail) = s
        .admin("GET", &format!("/api/v1/runs/{run_id}"), None)
        .await;
    assert!(detail["jobs"][0]["log_bytes"].as_i64().expect("bytes") >= 100_000_000);
    let job = detail["jobs"][0]["id"].as_str().expect("job").to_string();
    let base = s.client().base().to_string();
    b.sign_in(&base, &s.admin).await;
    b.goto(&format!("{base}/ui/runs/{run_id}/jobs/{job}")).await;
    let last = b.text("#L1000000 .c").await;
    assert!(last.starts_with("line 1000000 of a log"), "{last}");
    let shown = b
        .js("return document.querySelectorAll('#log-lines .l').length")
        .await;
    assert!(
        shown.as_u64().expect("count") <= 1000,
        "{shown} lines in the page"
    );
    b.shot("big-log-end").await;
    // The earlier window, by byte range, without leaving the page.
    b.js("window.ferryMark = 7").await;
    b.click("#log-earlier").await;
    b.wait_text("#log-lines", "line 0999000 of a log").await;
    assert_eq!(b.js("return window.ferryMark").await, json!(7));
    // And the first line, by its permanent link.
    b.click("a[href$=\"?line=1#L1\"]").await;
    let first = b.wait_text("#L1 .c", "line 0000001").await;
    assert!(first.starts_with("line 0000001 of a log"), "{first}");
    let url = b.c().current_url().await.expect("url");
    assert_eq!(url.fragment(), Some("L1"));
    b.shot("big-log-first-line").await;
    b.close().await;
}
