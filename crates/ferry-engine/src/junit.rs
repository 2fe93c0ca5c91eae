//! JUnit XML reports: counts and failure messages.

use ferry_store::{TestFailure, TestSummary};
use quick_xml::Reader;
use quick_xml::events::Event;

/// The most failure messages kept per job, and their length.
const MAX_FAILURES: usize = 50;
const MAX_MESSAGE: usize = 2000;

/// Parses one JUnit XML document (`<testsuites>` or `<testsuite>` at the root) and adds
/// its test cases to `summary`.
pub fn parse_junit(xml: &str, summary: &mut TestSummary) -> Result<(), String> {
    let mut reader = Reader::from_str(xml);
    // (name, outcome, message attribute, failure body)
    let mut case: Option<Case> = None;
    let mut in_failure = false;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("invalid XML at byte {}: {e}", reader.buffer_position()))?;
        let (e, empty) = match ev {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::Text(t) if in_failure => {
                if let Some(c) = case.as_mut() {
                    c.3.push_str(&t.decode().unwrap_or_default());
                }
                continue;
            }
            Event::GeneralRef(r) if in_failure => {
                if let Some(c) = case.as_mut() {
                    let name = r.decode().unwrap_or_default();
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(text) => c.3.push_str(text),
                        None => match r.resolve_char_ref() {
                            Ok(Some(ch)) => c.3.push(ch),
                            _ => c.3.push_str(&format!("&{name};")),
                        },
                    }
                }
                continue;
            }
            Event::CData(t) if in_failure => {
                if let Some(c) = case.as_mut() {
                    c.3.push_str(&String::from_utf8_lossy(&t));
                }
                continue;
            }
            Event::End(e) => {
                match e.name().as_ref() {
                    b"failure" | b"error" => in_failure = false,
                    b"testcase" => finish_case(case.take(), summary),
                    _ => {}
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        match e.name().as_ref() {
            b"testcase" => {
                let mut name = String::new();
                let mut class = String::new();
                for a in e.attributes().flatten() {
                    let v = a
                        .unescape_value()
                        .map(|v| v.into_owned())
                        .unwrap_or_default();
                    match a.key.as_ref() {
                        b"name" => name = v,
                        b"classname" => class = v,
                        _ => {}
                    }
                }
                let full = if class.is_empty() {
                    name
                } else {
                    format!("{class} › {name}")
                };
                case = Some((full, None, String::new(), String::new()));
                if empty {
                    finish_case(case.take(), summary);
                }
            }
            tag @ (b"failure" | b"error" | b"skipped") => {
                if let Some(c) = case.as_mut() {
                    let kind = if tag == b"skipped" {
                        "skipped"
                    } else {
                        "failed"
                    };
                    if c.1 != Some("failed") {
                        c.1 = Some(kind);
                    }
                    for a in e.attributes().flatten() {
                        if a.key.as_ref() == b"message" && c.2.is_empty() {
                            c.2 = a
                                .unescape_value()
                                .map(|v| v.into_owned())
                                .unwrap_or_default();
                        }
                    }
                    in_failure = kind == "failed" && !empty;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

type Case = (String, Option<&'static str>, String, String);

fn finish_case(case: Option<Case>, summary: &mut TestSummary) {
    let Some((name, outcome, attr, body)) = case else {
        return;
    };
    let message = if attr.is_empty() {
        body.trim().to_string()
    } else {
        attr
    };
    match outcome {
        None => summary.passed += 1,
        Some("skipped") => summary.skipped += 1,
        _ => {
            summary.failed += 1;
            if summary.failures.len() < MAX_FAILURES {
                let mut message = message;
                if message.len() > MAX_MESSAGE {
                    let mut cut = MAX_MESSAGE;
                    while !message.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    message.truncate(cut);
                    message.push('…');
                }
                summary.failures.push(TestFailure { name, message });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_messages() {
        let xml = r#"<?xml version="1.0"?>
<testsuites>
  <testsuite name="math" tests="4">
    <testcase classname="math" name="adds"/>
    <testcase classname="math" name="divides"><failure message="division by zero">trace</failure></testcase>
    <testcase classname="math" name="rounds"><skipped/></testcase>
    <testcase classname="math" name="parses"><error>boom &amp; more</error></testcase>
    <testcase name="plain"></testcase>
  </testsuite>
</testsuites>"#;
        let mut s = TestSummary::default();
        parse_junit(xml, &mut s).expect("valid");
        assert_eq!((s.passed, s.failed, s.skipped), (2, 2, 1));
        assert_eq!(s.failures[0].name, "math › divides");
        assert_eq!(s.failures[0].message, "division by zero");
        assert_eq!(s.failures[1].message, "boom & more");
    }

    #[test]
    fn rejects_garbage() {
        let mut s = TestSummary::default();
        assert!(parse_junit("<testsuite><testcase></testsuite>", &mut s).is_err());
    }
}
