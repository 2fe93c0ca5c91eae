//! Triggers that come from time: polling a repository for new heads, and schedules.
//!
//! "Nothing more happened" is shown without sleeping: the watcher polls a repository's
//! refs and forgets a branch that was deleted, so deleting a marker branch and seeing
//! its head forgotten proves that a poll ran after the deletion (see [`Markers`]).

use std::path::PathBuf;

use ferry_testkit::git;
use ferry_testkit::server::{Server, wait_for};
use serde_json::json;

/// Marker branches in a polled repository, made before its first poll. Each
/// [`Markers::wait_full_pass`] deletes two and waits until the watcher has forgotten
/// both: the second is only forgotten by a poll that started after the first one was
/// seen gone, so the watcher has finished at least one whole pass (every repository's
/// polls and schedules) since the call began.
struct Markers {
    repo: String,
    bare: PathBuf,
    left: Vec<String>,
}

impl Markers {
    fn make(s: &Server, repo: &str, n: usize) -> Markers {
        let bare = s.bare(repo);
        let left: Vec<String> = (0..n).map(|i| format!("marker-{i}")).collect();
        for name in &left {
            git(&bare, &["branch", name, "main"]);
        }
        Markers {
            repo: repo.to_string(),
            bare,
            left,
        }
    }

    async fn wait_full_pass(&mut self, s: &Server) {
        for _ in 0..2 {
            let name = self.left.pop().expect("a marker left");
            git(&self.bare, &["branch", "-D", &name]);
            let id = s.store.repository(&self.repo).await.expect("repo").id;
            let head = format!("refs/heads/{name}");
            wait_for(
                &format!("{} polled without {name}", self.repo),
                async || {
                    let heads = s.store.heads(&id).await.expect("heads");
                    if heads.iter().any(|(r, _)| *r == head) {
                        Err(heads)
                    } else {
                        Ok(())
                    }
                },
            )
            .await;
        }
    }

    /// Waits for a whole pass of the watcher (see [`Markers::wait_full_pass`]); then how
    /// many runs `repo` has.
    async fn runs_after_full_pass(&mut self, s: &Server, repo: &str) -> usize {
        self.wait_full_pass(s).await;
        s.runs_of(repo).await.len()
    }

    /// Waits until the first poll has recorded the heads (the markers included).
    async fn baseline(&self, s: &Server) {
        let id = s.store.repository(&self.repo).await.expect("repo").id;
        let want = self.left.len() + 1;
        wait_for(&format!("the first poll of {}", self.repo), async || {
            let heads = s.store.heads(&id).await.expect("heads");
            if heads.len() >= want {
                Ok(())
            } else {
                Err(heads)
            }
        })
        .await;
    }
}

/// Creates a repository that the watcher polls every second.
async fn polled(s: &Server, name: &str, pipeline: &str) -> Markers {
    let bare = s.repository(name, Some(pipeline));
    let markers = Markers::make(s, name, 6);
    s.store
        .create_repository(&ferry_store::NewRepository {
            name: name.into(),
            url: bare.display().to_string(),
            poll_interval_s: Some(1),
            ..Default::default()
        })
        .await
        .expect("repo");
    markers
}

/// A polled repository: the first poll is a baseline; a new commit starts one run.
#[tokio::test]
async fn polling_starts_a_run_for_each_new_head() {
    let s = Server::start().await;
    let mut markers = polled(&s, "polled", "jobs:\n  a:\n    run: echo polled\n").await;
    // The baseline poll records the heads and starts nothing.
    markers.baseline(&s).await;
    assert!(
        s.runs_of("polled").await.is_empty(),
        "a baseline starts nothing"
    );
    s.push_commit("polled", "new.txt");
    let runs = s.first_runs("polled").await;
    assert_eq!(runs.len(), 1, "the new commit started one run");
    assert_eq!(runs[0].triggered_by.as_deref(), Some("poll"));
    assert_eq!(runs[0].branch.as_deref(), Some("main"));
    assert_eq!(s.finished(&runs[0].id).await["run"]["status"], "success");
    assert_eq!(
        markers.runs_after_full_pass(&s, "polled").await,
        1,
        "an unchanged head starts nothing more"
    );
    s.stop().await;
}

/// A polled repository whose remote never answers holds up only its own polls: another
/// repository's baseline and new commits are seen all the same, and the server still
/// stops at once.
#[tokio::test]
async fn a_silent_remote_holds_up_only_its_own_polls() {
    let s = Server::start().await;
    // Accepts connections and never answers (git's own timeout is minutes away).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    for name in ["a-stuck", "z-stuck"] {
        s.store
            .create_repository(&ferry_store::NewRepository {
                name: name.into(),
                url: format!("git://{}/{name}.git", silent.local_addr().expect("addr")),
                poll_interval_s: Some(1),
                ..Default::default()
            })
            .await
            .expect("repo");
    }
    let markers = polled(&s, "lively", "jobs:\n  a:\n    run: echo lively\n").await;
    markers.baseline(&s).await;
    s.push_commit("lively", "new.txt");
    let runs = s.first_runs("lively").await;
    assert_eq!(runs.len(), 1, "the new commit started one run");
    assert_eq!(runs[0].triggered_by.as_deref(), Some("poll"));
    // A stuck poll does not hold the stop.
    s.stop().await;
    drop(silent);
}

/// A due schedule starts one run, and a restarted server does not start it again.
#[tokio::test]
async fn schedules_fire_once_even_across_restarts() {
    let s = Server::start().await;
    // A polled repository of its own, only to see the watcher's passes.
    let mut markers = polled(&s, "heartbeat", "jobs:\n  a:\n    run: 'true'\n").await;
    markers.baseline(&s).await;
    let pipeline =
        "on:\n  schedule: [\"0 3 * * *\"]\njobs:\n  a:\n    run: echo scheduled $FERRY_EVENT\n";
    let bare = s.repository("nightly", Some(pipeline));
    let body =
        json!({ "name": "nightly", "url": bare.display().to_string(), "default_branch": "main" });
    s.admin("POST", "/api/v1/repos", Some(body)).await;
    let id = s.store.repository("nightly").await.expect("repo").id;
    // Pretend it last fired 25 hours ago: one daily occurrence is due now, the next is
    // hours away. (The watcher may have recorded "now" first: move it back.)
    let now = ferry_store::now_ms();
    let current = s
        .store
        .schedule_last_fired(&id, "0 3 * * *", now)
        .await
        .expect("read");
    let seeded = s
        .store
        .schedule_fired(&id, "0 3 * * *", current, now - 25 * 3_600_000)
        .await
        .expect("seed");
    assert!(seeded);
    let runs = s.first_runs("nightly").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].event, "schedule");
    assert_eq!(runs[0].triggered_by.as_deref(), Some("schedule:0 3 * * *"));
    assert_eq!(s.finished(&runs[0].id).await["run"]["status"], "success");
    assert_eq!(
        markers.runs_after_full_pass(&s, "nightly").await,
        1,
        "fired once, not once per tick"
    );
    let s = s.restart().await;
    assert_eq!(
        markers.runs_after_full_pass(&s, "nightly").await,
        1,
        "the restart did not start it again"
    );
    s.stop().await;
}
