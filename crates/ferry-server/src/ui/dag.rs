//! A run's plan as a graph: a layered layout of our own, drawn as SVG by the
//! `dag.svg` template.
//!
//! Jobs go in columns by depth (a job stands right of everything it needs); within a
//! column they are ordered by barycentre sweeps (each job near the average row of its
//! neighbours, alternately looking left and right), which keeps edges short and
//! crossings few. A matrix's jobs stay together in a framed group under their key.

use std::collections::HashMap;

/// One job to place.
#[derive(Debug, Clone)]
pub struct DagJob {
    pub name: String,
    /// The key in `.ferry.yml`; matrix jobs share it.
    pub base: String,
    pub matrix: bool,
    pub needs: Vec<String>,
    /// `success`, `failed`, `running`, …: a CSS class and a word.
    pub status: String,
    /// Why it was skipped, failed or cancelled.
    pub reason: Option<String>,
    /// How long it took, for people (`1m 02s`).
    pub took: String,
    pub href: String,
}

/// A placed job.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub x: u32,
    pub y: u32,
    pub label: String,
    pub title: String,
    pub status: String,
    pub glyph: &'static str,
    pub took: String,
    pub href: String,
}

/// A frame around a matrix's jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub label: String,
}

/// The whole picture, for `dag.svg`.
#[derive(Debug, Clone, PartialEq, askama::Template)]
#[template(path = "dag.svg")]
pub struct Dag {
    pub width: u32,
    pub height: u32,
    pub nodes: Vec<Node>,
    /// SVG path data of each edge.
    pub edges: Vec<String>,
    pub groups: Vec<Group>,
}

pub const NODE_W: u32 = 200;
pub const NODE_H: u32 = 40;
const GAP_X: u32 = 70;
const GAP_Y: u32 = 14;
const GROUP_TOP: u32 = 18;
const PAD: u32 = 10;
const LABEL_CHARS: usize = 24;

/// The glyph that says a state without colour.
pub fn glyph(status: &str) -> &'static str {
    match status {
        "success" => "\u{2713}",
        "failed" => "\u{2717}",
        "cancelled" => "\u{2298}",
        "skipped" => "\u{21B7}",
        "running" => "\u{25B6}",
        _ => "\u{25F7}",
    }
}

/// Places `jobs` (in the plan's order, which is topological).
pub fn layout(jobs: &[DagJob]) -> Dag {
    let index: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.name.as_str(), i))
        .collect();
    let needs: Vec<Vec<usize>> = jobs
        .iter()
        .map(|j| {
            j.needs
                .iter()
                .filter_map(|n| index.get(n.as_str()).copied())
                .collect()
        })
        .collect();
    // Depth: one more than the deepest job needed (the plan is in topological order;
    // a need that comes later, which a valid plan never has, counts as depth 0).
    let mut depth = vec![0usize; jobs.len()];
    for i in 0..jobs.len() {
        depth[i] = needs[i]
            .iter()
            .filter(|&&n| n < i)
            .map(|&n| depth[n] + 1)
            .max()
            .unwrap_or(0);
    }
    let columns = depth.iter().max().map_or(0, |d| d + 1);
    let mut column: Vec<Vec<usize>> = vec![Vec::new(); columns];
    for (i, d) in depth.iter().enumerate() {
        column[*d].push(i);
    }
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
    for (i, ns) in needs.iter().enumerate() {
        for &n in ns {
            dependents[n].push(i);
        }
    }
    // Barycentre sweeps: right, left, right, left.
    let mut row = vec![0f64; jobs.len()];
    let place = |column: &[Vec<usize>], row: &mut [f64]| {
        for c in column {
            for (r, &i) in c.iter().enumerate() {
                row[i] = r as f64;
            }
        }
    };
    place(&column, &mut row);
    for sweep in 0..4 {
        let order: Vec<usize> = if sweep % 2 == 0 {
            (1..columns).collect()
        } else {
            (0..columns.saturating_sub(1)).rev().collect()
        };
        for c in order {
            let key = |i: usize| {
                let near = if sweep % 2 == 0 {
                    &needs[i]
                } else {
                    &dependents[i]
                };
                if near.is_empty() {
                    row[i]
                } else {
                    near.iter().map(|&n| row[n]).sum::<f64>() / near.len() as f64
                }
            };
            let keys: HashMap<usize, f64> = column[c].iter().map(|&i| (i, key(i))).collect();
            // A matrix moves as one: its members' mean, then their own order.
            let mut group_key: HashMap<&str, (f64, usize)> = HashMap::new();
            for &i in &column[c] {
                if jobs[i].matrix {
                    let e = group_key.entry(jobs[i].base.as_str()).or_insert((0.0, 0));
                    e.0 += keys[&i];
                    e.1 += 1;
                }
            }
            let unit = |i: usize| {
                if jobs[i].matrix {
                    let (sum, n) = group_key[jobs[i].base.as_str()];
                    (sum / n as f64, jobs[i].base.as_str())
                } else {
                    (keys[&i], jobs[i].name.as_str())
                }
            };
            column[c].sort_by(|&a, &b| {
                let (ka, ua) = unit(a);
                let (kb, ub) = unit(b);
                ka.total_cmp(&kb)
                    .then_with(|| ua.cmp(ub))
                    .then_with(|| a.cmp(&b))
            });
            for (r, &i) in column[c].iter().enumerate() {
                row[i] = r as f64;
            }
        }
    }
    // Coordinates: columns left to right; a group's frame takes room above its jobs.
    let mut pos = vec![(0u32, 0u32); jobs.len()];
    let mut groups = Vec::new();
    let mut height = 0;
    for (c, members) in column.iter().enumerate() {
        let x = PAD + c as u32 * (NODE_W + GAP_X);
        let mut y = PAD;
        let mut k = 0;
        while k < members.len() {
            let i = members[k];
            if jobs[i].matrix {
                let base = &jobs[i].base;
                let end = members[k..]
                    .iter()
                    .position(|&m| !(jobs[m].matrix && &jobs[m].base == base))
                    .map_or(members.len(), |p| k + p);
                let top = y;
                y += GROUP_TOP;
                for &m in &members[k..end] {
                    pos[m] = (x, y);
                    y += NODE_H + GAP_Y / 2;
                }
                groups.push(Group {
                    x: x - 6,
                    y: top,
                    w: NODE_W + 12,
                    h: y - top,
                    label: base.clone(),
                });
                y += GAP_Y;
                k = end;
            } else {
                pos[i] = (x, y);
                y += NODE_H + GAP_Y;
                k += 1;
            }
        }
        height = height.max(y);
    }
    let mut edges = Vec::new();
    for (i, ns) in needs.iter().enumerate() {
        for &n in ns {
            let (x1, y1) = (pos[n].0 + NODE_W, pos[n].1 + NODE_H / 2);
            let (x2, y2) = (pos[i].0, pos[i].1 + NODE_H / 2);
            let mid = (x1 + x2) / 2;
            edges.push(format!("M{x1} {y1} C{mid} {y1} {mid} {y2} {x2} {y2}"));
        }
    }
    let nodes = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let label = if j.name.chars().count() > LABEL_CHARS {
                let cut: String = j.name.chars().take(LABEL_CHARS - 1).collect();
                format!("{cut}\u{2026}")
            } else {
                j.name.clone()
            };
            let mut title = format!("{}: {}", j.name, j.status);
            if let Some(reason) = &j.reason {
                title.push_str(" \u{2014} ");
                title.push_str(reason);
            }
            Node {
                name: j.name.clone(),
                x: pos[i].0,
                y: pos[i].1,
                label,
                title,
                status: j.status.clone(),
                glyph: glyph(&j.status),
                took: j.took.clone(),
                href: j.href.clone(),
            }
        })
        .collect();
    Dag {
        width: PAD * 2 + columns as u32 * NODE_W + (columns as u32).saturating_sub(1) * GAP_X,
        height: height + PAD,
        nodes,
        edges,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, needs: &[&str]) -> DagJob {
        let (base, matrix) = match name.split_once(' ') {
            Some((b, _)) => (b.to_string(), true),
            None => (name.to_string(), false),
        };
        DagJob {
            name: name.into(),
            base,
            matrix,
            needs: needs.iter().map(|s| s.to_string()).collect(),
            status: "success".into(),
            reason: None,
            took: String::new(),
            href: format!("/j/{name}"),
        }
    }

    fn at<'a>(dag: &'a Dag, name: &str) -> &'a Node {
        dag.nodes
            .iter()
            .find(|n| n.title.starts_with(&format!("{name}:")))
            .expect("placed")
    }

    #[test]
    fn a_job_stands_right_of_what_it_needs() {
        let dag = layout(&[
            job("build", &[]),
            job("lint", &[]),
            job("test", &["build"]),
            job("deploy", &["test", "lint"]),
        ]);
        assert!(at(&dag, "test").x > at(&dag, "build").x);
        assert!(at(&dag, "deploy").x > at(&dag, "test").x);
        assert_eq!(at(&dag, "lint").x, at(&dag, "build").x);
        assert_eq!(dag.edges.len(), 3);
        for n in &dag.nodes {
            assert!(
                n.x + NODE_W <= dag.width && n.y + NODE_H <= dag.height,
                "{n:?}"
            );
        }
    }

    #[test]
    fn barycentres_uncross_edges() {
        // a→y, b→x: in file order x would sit beside a and y beside b (crossing);
        // the sweep puts y first.
        let dag = layout(&[
            job("a", &[]),
            job("b", &[]),
            job("x", &["b"]),
            job("y", &["a"]),
        ]);
        assert!(at(&dag, "y").y < at(&dag, "x").y);
    }

    #[test]
    fn a_matrix_stays_together_in_one_frame() {
        let dag = layout(&[
            job("build", &[]),
            job("test (db=15)", &["build"]),
            job("lint", &["build"]),
            job("test (db=16)", &["build"]),
        ]);
        assert_eq!(dag.groups.len(), 1);
        let g = &dag.groups[0];
        assert_eq!(g.label, "test");
        for name in ["test (db=15)", "test (db=16)"] {
            let n = at(&dag, name);
            assert!(
                n.y >= g.y && n.y + NODE_H <= g.y + g.h,
                "{name} outside its frame"
            );
        }
        let lint = at(&dag, "lint");
        assert!(
            lint.y + NODE_H <= g.y || lint.y >= g.y + g.h,
            "lint inside the frame"
        );
    }

    #[test]
    fn long_names_are_cut_with_the_whole_in_the_title() {
        let long = "a-job-whose-name-is-far-too-long-for-a-box";
        let dag = layout(&[job(long, &[])]);
        assert!(dag.nodes[0].label.ends_with('\u{2026}'));
        assert!(dag.nodes[0].title.starts_with(long));
    }

    #[test]
    fn markup_in_names_is_escaped() {
        use askama::Template;
        let mut j = job("<script>alert(1)</script>", &[]);
        j.reason = Some("\"><img src=x onerror=alert(1)>".into());
        let svg = layout(&[j]).render().expect("renders");
        assert!(!svg.contains("<script>") && !svg.contains("<img"), "{svg}");
        assert!(svg.contains("&#60;script&#62;"), "{svg}");
    }

    #[test]
    fn an_empty_plan_is_an_empty_picture() {
        let dag = layout(&[]);
        assert!(dag.nodes.is_empty() && dag.edges.is_empty());
    }
}
