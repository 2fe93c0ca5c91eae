//! No input makes the loader panic: arbitrary text, and text assembled from pipeline-ish
//! fragments (which reaches much deeper than random bytes).

use proptest::prelude::*;

const FRAGMENTS: &[&str] = &[
    "jobs:",
    "\n",
    "  ",
    "    ",
    "build:",
    "test:",
    "run: make",
    "steps:",
    "- run: x",
    "- ",
    "needs: [build]",
    "needs: test",
    "if: ",
    "event.branch == 'main'",
    "${{",
    "}}",
    "matrix.db",
    "matrix:",
    "db: [1, 2]",
    "include:",
    "exclude:",
    "env:",
    "A: b",
    "timeout: 5m",
    "10x",
    "retry:",
    "max: 2",
    "when: [failure]",
    "artifacts: [a/*]",
    "reports:",
    "junit: x.xml",
    "on:",
    "push:",
    "branches: [main]",
    "tag:",
    "schedule: [\"0 3 * * *\"]",
    "&a",
    "*a",
    "<<: *a",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "'",
    "\"",
    "|",
    ">",
    "#",
    "---",
    "~",
    "null",
    "true",
    "é",
    "\t",
    "x-a:",
    "FERRY_JOB",
    "changed('**')",
    "glob(a, 'b')",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(s in "\\PC{0,300}") {
        let _ = ferry_config::load(&s);
    }

    #[test]
    fn pipeline_fragments(parts in proptest::collection::vec(0..FRAGMENTS.len(), 0..60)) {
        let text: String = parts.iter().map(|i| FRAGMENTS[*i]).collect();
        if let Err(diags) = ferry_config::load(&text) {
            // Rendering must not panic either, whatever the spans.
            let _ = ferry_config::render_all(&diags, "f.yml", &text, true);
        }
    }
}

#[test]
fn alias_bomb_is_refused() {
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("b{}", i - 1)
        };
        text.push_str(&format!("b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    let err = ferry_config::load(&text).expect_err("refused");
    assert!(err[0].message.contains("too many nodes"), "{:?}", err[0]);
}
