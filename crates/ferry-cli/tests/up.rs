//! `ferry up examples/hello`, the README's first command: a server, the example's run,
//! its release live in sandbox and staging (each app answering on its own port with its
//! own configuration), production waiting for an approval; Ctrl-C stops it all.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Reads `ferry up`'s output until its last line, at most `limit`.
fn read_until_ready(out: impl std::io::Read + Send + 'static, limit: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut text = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                text.push_str(&line);
                text.push('\n');
                if line.starts_with("Ctrl-C stops") {
                    return text;
                }
            }
            Err(_) => panic!("ferry up did not get ready: {text}"),
        }
    }
}

/// `http://127.0.0.1:PORT/` after `label` on a line of `text`.
fn address_after(text: &str, label: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no line for {label}: {text}"));
    let at = line.rfind("http://127.0.0.1:").expect("an address");
    line[at..]
        .split_whitespace()
        .next()
        .expect("address")
        .to_string()
}

fn get(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "--fail", url])
        .output()
        .expect("curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn up_runs_the_example_end_to_end_and_ctrl_c_stops_everything() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("up")
        .arg(&root)
        .env("TMPDIR", tmp.path())
        .env_remove("FERRY_LOG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry up");
    let text = read_until_ready(
        child.stdout.take().expect("stdout"),
        Duration::from_secs(240),
    );
    for want in [
        "lint                     success",
        "test (greeting=bonjour)  success",
        "package                  success",
        "sandbox      live (r1-",
        "staging      live (r1-",
        "production   waiting for approval (production#1)",
        "ferry approve production#1 --repo hello",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    // The UI answers; each environment's app with its own configuration.
    let ui = address_after(&text, "web UI");
    let page = get(&format!("{ui}ui/sign-in")).expect("the sign-in page");
    assert!(page.contains("Sign in"));
    let sandbox = address_after(&text, "sandbox");
    let staging = address_after(&text, "staging");
    let production = address_after(&text, "production");
    let s = get(&sandbox).expect("sandbox answers");
    let t = get(&staging).expect("staging answers");
    assert!(s.starts_with("hello, world, from sandbox (version "), "{s}");
    assert!(
        t.starts_with("bonjour, world, from staging (version "),
        "{t}"
    );
    assert!(get(&production).is_none(), "production waits");
    // The printed approval: the release goes live in production.
    let token = text
        .split("FERRY_TOKEN=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("the token");
    let approve = Command::new("curl")
        .args(["-s", "--fail", "-X", "POST", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(["-H", "Content-Type: application/json", "-d", "{}"])
        .arg(format!(
            "{ui}api/v1/repos/hello/deployments/production%231/approve"
        ))
        .output()
        .expect("curl");
    assert!(approve.status.success(), "{:?}", approve);
    let deadline = Instant::now() + Duration::from_secs(60);
    let p = loop {
        if let Some(p) = get(&production) {
            break p;
        }
        assert!(Instant::now() < deadline, "production never went live");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(p.contains("from production"), "{p}");
    // Ctrl-C: the server, the apps and the temporary data go.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("signal");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "ferry up did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    for app in [&sandbox, &staging, &production] {
        assert!(get(app).is_none(), "{app} outlived ferry up");
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("tmp")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the temporary data stayed: {left:?}");
}
