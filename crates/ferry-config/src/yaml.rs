//! A YAML document as a tree of nodes that remember where they came from.
//!
//! Built from `saphyr-parser` events so that every value keeps its line and column,
//! duplicate keys are visible (serde-style loaders silently keep the last one), and
//! aliases are expanded. This is the only module that knows the YAML library.

use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan};

use crate::diagnostic::{Diagnostic, Pos, Span};

/// How a scalar was written; quoting decides whether `true` or `12` are strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Scalar(String, Style),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub span: Span,
}

impl Node {
    /// A plain `~`, `null` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar(s, Style::Plain) if matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    /// What a user would call this value's type, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
            Kind::Scalar(_, Style::Quoted | Style::Block) => "a string",
            Kind::Scalar(s, Style::Plain) => {
                if self.is_null() {
                    "nothing (null)"
                } else if matches!(
                    s.as_str(),
                    "true" | "false" | "True" | "False" | "TRUE" | "FALSE"
                ) {
                    "a boolean"
                } else if s.parse::<f64>().is_ok() {
                    "a number"
                } else {
                    "a string"
                }
            }
        }
    }
}

fn pos(m: &saphyr_parser::Marker) -> Pos {
    // saphyr: lines are 1-based, columns 0-based; diagnostics use 1-based columns.
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

fn span(s: &YSpan) -> Span {
    let start = pos(&s.start);
    let mut end = pos(&s.end);
    if end.line < start.line || (end.line == start.line && end.col < start.col) {
        end = start;
    }
    Span { start, end }
}

enum Frame {
    Seq(Vec<Node>, Span, usize),
    Map(Vec<(Node, Node)>, Option<Node>, Span, usize),
}

/// The most nodes an alias expansion may produce: guards against "billion laughs".
const MAX_NODES: usize = 200_000;

/// Parses one YAML document. `Ok(None)` for an empty file.
pub fn parse(source: &str) -> Result<Option<Node>, Diagnostic> {
    let mut parser = Parser::new_from_str(source);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: std::collections::HashMap<usize, Node> = Default::default();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    let mut total_nodes = 0usize;

    while let Some(next) = parser.next_event() {
        let (event, ys) = match next {
            Ok(e) => e,
            Err(e) => {
                let p = pos(e.marker());
                return Err(Diagnostic::error(
                    Span { start: p, end: p },
                    format!("invalid YAML: {}", e.info()),
                )
                .with_help("check the indentation and the brackets and quotes around this place"));
            }
        };
        let sp = span(&ys);
        let finished: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(
                        Diagnostic::error(sp, "a pipeline file holds one YAML document")
                            .with_help("remove the `---` separator and merge the documents"),
                    );
                }
                None
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(n) => {
                    total_nodes += count_nodes(n);
                    if total_nodes > MAX_NODES {
                        return Err(Diagnostic::error(
                            sp,
                            "too many nodes after expanding aliases",
                        )
                        .with_help("a pipeline file should not need deeply nested aliases"));
                    }
                    let mut n = n.clone();
                    n.span = sp;
                    Some((n, 0))
                }
                None => {
                    return Err(Diagnostic::error(sp, "alias refers to an unknown anchor"));
                }
            },
            Event::Scalar(value, style, anchor, _tag) => {
                total_nodes += 1;
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    ScalarStyle::Literal | ScalarStyle::Folded => Style::Block,
                };
                Some((
                    Node {
                        kind: Kind::Scalar(value.into_owned(), style),
                        span: sp,
                    },
                    anchor,
                ))
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(Vec::new(), sp, anchor));
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(Vec::new(), None, sp, anchor));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, start, anchor)) => {
                    total_nodes += 1;
                    Some((node(Kind::Seq(items), start, sp), anchor))
                }
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(items, _, start, anchor)) => {
                    total_nodes += 1;
                    Some((node(Kind::Map(merge_keys(items)), start, sp), anchor))
                }
                _ => None,
            },
        };
        if total_nodes > MAX_NODES {
            return Err(Diagnostic::error(
                sp,
                "the file is too large for a pipeline",
            ));
        }
        if let Some((n, anchor)) = finished {
            if anchor != 0 {
                anchors.insert(anchor, n.clone());
            }
            match stack.last_mut() {
                Some(Frame::Seq(items, _, _)) => items.push(n),
                Some(Frame::Map(items, key, _, _)) => match key.take() {
                    Some(k) => items.push((k, n)),
                    None => *key = Some(n),
                },
                None => root = Some(n),
            }
        }
    }
    Ok(root)
}

fn node(kind: Kind, start: Span, end: Span) -> Node {
    let span = Span {
        start: start.start,
        end: if end.end.line > start.start.line || end.end.col > start.start.col {
            end.end
        } else {
            start.end
        },
    };
    Node { kind, span }
}

fn count_nodes(n: &Node) -> usize {
    match &n.kind {
        Kind::Scalar(..) => 1,
        Kind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Kind::Map(items) => {
            1 + items
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
    }
}

/// Applies YAML merge keys (`<<: *anchor` or `<<: [*a, *b]`): the merged mappings'
/// entries are added unless the mapping sets the same key itself.
fn merge_keys(items: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    let is_merge = |k: &Node| matches!(&k.kind, Kind::Scalar(s, Style::Plain) if s == "<<");
    if !items.iter().any(|(k, _)| is_merge(k)) {
        return items;
    }
    let mut own: Vec<(Node, Node)> = Vec::new();
    let mut merged: Vec<(Node, Node)> = Vec::new();
    for (k, v) in items {
        if !is_merge(&k) {
            own.push((k, v));
            continue;
        }
        let sources = match v.kind {
            Kind::Seq(list) => list,
            _ => vec![v],
        };
        for src in sources {
            match src.kind {
                Kind::Map(entries) => merged.extend(entries),
                // Not a mapping: keep it, so that the loader reports it.
                _ => own.push((k.clone(), src)),
            }
        }
    }
    for (k, v) in merged {
        let key = k.as_str().map(str::to_string);
        let taken = own
            .iter()
            .any(|(o, _)| o.as_str().map(str::to_string) == key);
        if !taken {
            own.push((k, v));
        }
    }
    own
}
