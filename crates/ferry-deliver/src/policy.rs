//! Promotion policy, pure: the order of environments, freeze windows, and who may
//! approve a deployment and whether it has the approvals it needs.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use ferry_config::delivery::{ApprovalRule, Delivery, EnvironmentSpec, Excluded, Freeze};

/// The environments a release enters first (no `after:`).
pub fn first_environments(d: &Delivery) -> Vec<&EnvironmentSpec> {
    d.environments
        .iter()
        .filter(|e| e.after.is_none())
        .collect()
}

/// The environments that come right after `name`.
pub fn next_environments<'a>(d: &'a Delivery, name: &str) -> Vec<&'a EnvironmentSpec> {
    d.environments
        .iter()
        .filter(|e| e.after.as_ref().is_some_and(|a| a.value == name))
        .collect()
}

/// Why `now` is inside one of the freeze windows, if it is.
pub fn frozen(freezes: &[Freeze], now: DateTime<Utc>) -> Option<String> {
    for f in freezes {
        match f {
            Freeze::Window { from, to } => {
                let (Ok(start), Ok(end)) = (
                    DateTime::parse_from_rfc3339(from),
                    DateTime::parse_from_rfc3339(to),
                ) else {
                    continue;
                };
                if now >= start && now < end {
                    return Some(format!("frozen from {from} to {to}"));
                }
            }
            Freeze::Recurring { cron, duration } => {
                let Some(duration) = duration else { continue };
                let Ok(cron_expr) = croner::Cron::new(cron).parse() else {
                    continue;
                };
                let Ok(length) = ChronoDuration::from_std(*duration) else {
                    continue;
                };
                // A start in (now - length, now] means now is inside its window.
                let since = now - length;
                if let Ok(start) = cron_expr.find_next_occurrence(&since, false)
                    && start <= now
                {
                    let end = start + length;
                    return Some(format!(
                        "frozen since {} until {} (`{cron}` for {}h)",
                        start.to_rfc3339(),
                        end.to_rfc3339(),
                        length.num_minutes() as f64 / 60.0
                    ));
                }
            }
        }
    }
    None
}

/// Who is asking to approve, and the people the rule may exclude.
#[derive(Debug, Clone)]
pub struct Approver<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    /// The forge accounts the user is (`github:alice`, lower case).
    pub forge: &'a [String],
    /// Has the approver (or admin) role.
    pub may_approve: bool,
}

/// The people around a deployment that `not:` may exclude.
#[derive(Debug, Clone, Default)]
pub struct Parties {
    /// The commit's author as git has it, `Name <email>`: chosen by whoever made the
    /// commit, so it counts only when nothing else says who pushed (see [`may_approve`]).
    pub author: String,
    /// Who triggered the run: `user:NAME`, a forge account (`github:alice`: the pusher
    /// a signed delivery names), or something that is no person (`schedule`, `poll`).
    pub triggered_by: Option<String>,
    /// The user who asked for the deployment.
    pub requested_by: Option<String>,
}

/// Whether `user` is the author of a commit by `author` (`Name <email>`): the user's name
/// equals the author's name, email, or the email's part before `@` (case-insensitive).
pub fn is_author(user: &str, author: &str) -> bool {
    let user = user.to_ascii_lowercase();
    let author = author.to_ascii_lowercase();
    let (name, email) = match author.split_once('<') {
        Some((n, e)) => (
            n.trim().to_string(),
            e.trim_end_matches('>').trim().to_string(),
        ),
        None => (author.trim().to_string(), String::new()),
    };
    let local = email.split('@').next().unwrap_or("").to_string();
    user == name || (!email.is_empty() && (user == email || user == local))
}

/// Whether `label` (`user:NAME` or a forge account) names `approver`.
fn is_party(label: Option<&str>, approver: &Approver<'_>) -> bool {
    label.is_some_and(|l| {
        l.strip_prefix("user:") == Some(approver.user)
            || approver.forge.iter().any(|f| f.eq_ignore_ascii_case(l))
    })
}

/// Whether `label` names a person: a user or a forge account.
fn names_a_person(label: Option<&str>) -> bool {
    label.is_some_and(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("user:")
            || ferry_store::FORGES
                .iter()
                .any(|f| l.strip_prefix(f).is_some_and(|r| r.starts_with(':')))
    })
}

/// Whether `approver` may approve under `rule`, or why not.
pub fn may_approve(
    rule: &ApprovalRule,
    approver: &Approver<'_>,
    parties: &Parties,
) -> Result<(), String> {
    if !approver.may_approve {
        return Err(format!(
            "{} may not approve deployments: it takes the approver or admin role",
            approver.user
        ));
    }
    if !rule.from.is_empty()
        && !rule
            .from
            .iter()
            .any(|f| f == approver.user || approver.groups.contains(f))
    {
        return Err(format!(
            "{} may not approve here: approvals come from {}",
            approver.user,
            rule.from.join(", ")
        ));
    }
    for excluded in &rule.not {
        let (hit, who) = match excluded {
            // The author is who pushed the commit (the forge account of a signed
            // delivery, or the user who asked for the run). The git author string, which
            // a committer writes as they like, never lets anyone approve, but it still
            // excludes whom it names: an approver not linked to a forge account is not
            // let through by the link being missing.
            Excluded::Author => (
                (names_a_person(parties.triggered_by.as_deref())
                    && is_party(parties.triggered_by.as_deref(), approver))
                    || is_author(approver.user, &parties.author),
                "the commit's author",
            ),
            Excluded::Triggerer => (
                is_party(parties.triggered_by.as_deref(), approver),
                "the person who triggered the run",
            ),
            Excluded::Requester => (
                is_party(parties.requested_by.as_deref(), approver),
                "the person who asked for this deployment",
            ),
        };
        if hit {
            return Err(format!(
                "{} may not approve this deployment: {} is {who}",
                approver.user, approver.user
            ));
        }
    }
    Ok(())
}

/// One recorded decision, as the policy sees it.
#[derive(Debug, Clone)]
pub struct Decision {
    pub user: String,
    pub approve: bool,
    pub at: DateTime<Utc>,
}

/// Where a deployment's approvals stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    Rejected {
        by: String,
    },
    /// `have` valid approvals of `need`.
    Waiting {
        have: u32,
        need: u32,
    },
}

/// The verdict on the decisions so far; approvals older than `rule.expires` do not count.
pub fn verdict(rule: &ApprovalRule, decisions: &[Decision], now: DateTime<Utc>) -> Verdict {
    if let Some(r) = decisions.iter().find(|d| !d.approve) {
        return Verdict::Rejected { by: r.user.clone() };
    }
    let fresh = |d: &&Decision| match rule.expires.and_then(|e| ChronoDuration::from_std(e).ok()) {
        Some(e) => now - d.at < e,
        None => true,
    };
    let have = decisions.iter().filter(|d| d.approve).filter(fresh).count() as u32;
    if have >= rule.required {
        Verdict::Approved
    } else {
        Verdict::Waiting {
            have,
            need: rule.required,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn rule() -> ApprovalRule {
        ApprovalRule {
            required: 2,
            from: vec!["release-managers".into(), "alice".into()],
            not: vec![Excluded::Author, Excluded::Triggerer],
            expires: Some(Duration::from_secs(3600)),
        }
    }

    #[test]
    fn freeze_windows() {
        let window = [Freeze::Window {
            from: "2026-12-24T00:00:00Z".into(),
            to: "2026-12-27T00:00:00Z".into(),
        }];
        assert!(frozen(&window, at("2026-12-25T12:00:00Z")).is_some());
        assert!(
            frozen(&window, at("2026-12-27T00:00:00Z")).is_none(),
            "the end is open"
        );
        assert!(frozen(&window, at("2026-12-23T23:59:59Z")).is_none());
        // Fridays 18:00 for 60 hours: Friday evening to Monday 06:00.
        let weekend = [Freeze::Recurring {
            cron: "0 18 * * 5".into(),
            duration: Some(Duration::from_secs(60 * 3600)),
        }];
        for (when, is_frozen, what) in [
            ("2026-11-27T19:00:00Z", true, "Friday evening"),
            ("2026-11-30T05:59:00Z", true, "Monday early"),
            ("2026-11-30T06:00:00Z", false, "Monday 06:00"),
            ("2026-11-25T12:00:00Z", false, "Wednesday"),
        ] {
            assert_eq!(frozen(&weekend, at(when)).is_some(), is_frozen, "{what}");
        }
    }

    #[test]
    fn who_may_approve() {
        let parties = Parties {
            author: "Bob Builder <bob@example.com>".into(),
            triggered_by: Some("schedule".into()),
            requested_by: Some("user:dave".into()),
        };
        let managers = vec!["release-managers".to_string()];
        let none: Vec<String> = Vec::new();
        let ok = |user, groups: &[String]| {
            may_approve(
                &rule(),
                &Approver {
                    user,
                    groups,
                    forge: &[],
                    may_approve: true,
                },
                &parties,
            )
        };
        assert!(ok("alice", &none).is_ok(), "named");
        assert!(ok("erin", &managers).is_ok(), "by group");
        assert!(
            ok("frank", &none)
                .expect_err("refused")
                .contains("approvals come from")
        );
        assert!(
            ok("bob", &managers)
                .expect_err("refused")
                .contains("the commit's author"),
            "by the git author, as nothing says who pushed"
        );
        assert!(
            ok("dave", &managers).is_ok(),
            "the requester is not excluded by this rule"
        );
        let viewer = Approver {
            user: "alice",
            groups: &none,
            forge: &[],
            may_approve: false,
        };
        assert!(
            may_approve(&rule(), &viewer, &parties)
                .expect_err("refused")
                .contains("approver or admin role")
        );
        assert!(is_author("BOB", "bob <b@x>") && is_author("b", "Someone <b@x>"));
        assert!(!is_author("bo", "Bob <bob@x>"));
    }

    /// Who pushed is who a signed delivery or the API says: Mallory, who pushed a commit
    /// "by Bob", may not approve it as its author or its triggerer, linked to her forge
    /// account or not (the git author string still excludes Bob, and never lets anyone
    /// through); Carol may.
    #[test]
    fn the_author_is_who_pushed_not_the_git_author_string() {
        let rule = ApprovalRule {
            required: 1,
            from: Vec::new(),
            not: vec![Excluded::Author],
            expires: None,
        };
        let triggerer = ApprovalRule {
            not: vec![Excluded::Triggerer],
            ..rule.clone()
        };
        let pushed = |by: &str| Parties {
            author: "Bob Builder <bob@example.com>".into(),
            triggered_by: Some(by.into()),
            requested_by: Some("user:dave".into()),
        };
        let mallory_forge = ["github:mallory".to_string()];
        let approver = |user, forge| Approver {
            user,
            groups: &[],
            forge,
            may_approve: true,
        };
        for (rule, parties, user, forge, allowed) in [
            (
                &rule,
                pushed("github:mallory"),
                "mallory",
                &mallory_forge[..],
                false,
            ),
            (
                &rule,
                pushed("GitHub:Mallory"),
                "mallory",
                &mallory_forge[..],
                false,
            ),
            (
                &triggerer,
                pushed("github:mallory"),
                "mallory",
                &mallory_forge[..],
                false,
            ),
            (&rule, pushed("github:mallory"), "carol", &[][..], true),
            (&rule, pushed("github:mallory"), "bob", &[][..], false),
            (
                &rule,
                pushed("gitlab:mallory"),
                "mallory",
                &mallory_forge[..],
                true,
            ),
            (&rule, pushed("user:mallory"), "mallory", &[][..], false),
            (&rule, pushed("poll"), "bob", &[][..], false),
            (&rule, pushed("poll"), "mallory", &mallory_forge[..], true),
        ] {
            let got = may_approve(rule, &approver(user, forge), &parties);
            assert_eq!(got.is_ok(), allowed, "{user} on {parties:?}: {got:?}");
        }
        // Mallory's own commit, pushed by her, before an admin linked her account.
        let own = Parties {
            author: "Mallory <mallory@example.com>".into(),
            ..pushed("github:mallory")
        };
        assert!(may_approve(&rule, &approver("mallory", &[]), &own).is_err());
    }

    #[test]
    fn verdicts_count_fresh_approvals() {
        let now = at("2026-11-22T12:00:00Z");
        let d = |user: &str, approve, at_: &str| Decision {
            user: user.into(),
            approve,
            at: at(at_),
        };
        assert_eq!(
            verdict(&rule(), &[], now),
            Verdict::Waiting { have: 0, need: 2 }
        );
        let two = [
            d("alice", true, "2026-11-22T11:30:00Z"),
            d("erin", true, "2026-11-22T11:59:00Z"),
        ];
        assert_eq!(verdict(&rule(), &two, now), Verdict::Approved);
        let stale = [
            d("alice", true, "2026-11-22T10:00:00Z"),
            d("erin", true, "2026-11-22T11:59:00Z"),
        ];
        assert_eq!(
            verdict(&rule(), &stale, now),
            Verdict::Waiting { have: 1, need: 2 },
            "expired"
        );
        let rejected = [
            d("alice", true, "2026-11-22T11:30:00Z"),
            d("erin", false, "2026-11-22T11:31:00Z"),
        ];
        assert_eq!(
            verdict(&rule(), &rejected, now),
            Verdict::Rejected { by: "erin".into() }
        );
    }

    #[test]
    fn environment_order() {
        let d = ferry_config::load(
            "jobs: { b: { run: x, artifacts: [a] } }
release: { artifacts: [b] }
deploy: { target: { process: { command: ./a } } }
environments:
  sandbox: { auto: true }
  staging: { after: sandbox, auto: true }
  production: { after: staging }
  demo: { after: sandbox }
",
        )
        .expect("valid")
        .pipeline
        .delivery;
        let names =
            |v: Vec<&EnvironmentSpec>| v.into_iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(first_environments(&d)), ["sandbox"]);
        assert_eq!(names(next_environments(&d, "sandbox")), ["staging", "demo"]);
        assert_eq!(
            names(next_environments(&d, "production")),
            Vec::<String>::new()
        );
    }
}
