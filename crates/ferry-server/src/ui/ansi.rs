//! A log's bytes as HTML: every character escaped, ANSI colours and styles (SGR) as
//! CSS classes (no inline styles: the pages' Content-Security-Policy forbids them), every
//! other escape sequence dropped. A log arrives in chunks (a byte range, a live line):
//! [`AnsiHtml`] keeps the parser's and the style's state from one chunk to the next, so
//! a colour set in one chunk or a character split between two comes out right.

use anstyle_parse::{Params, Parser, Perform};

/// Converts a log, chunk by chunk, to HTML.
#[derive(Debug, Default)]
pub struct AnsiHtml {
    parser: Parser,
    style: Style,
    /// Continuation bytes the current UTF-8 character still needs.
    pending: u8,
}

/// The SGR state that matters for the page.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Style {
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
    /// 0–15: the 16 colours (8–15 bright).
    fg: Option<u8>,
    bg: Option<u8>,
}

impl Style {
    /// Its CSS classes (`b`, `dim`, `i`, `u`, `fgN`, `bgN`), or none.
    fn classes(&self) -> String {
        let mut c = Vec::new();
        if self.bold {
            c.push("b".to_string());
        }
        if self.dim {
            c.push("dim".to_string());
        }
        if self.italic {
            c.push("i".to_string());
        }
        if self.underline {
            c.push("u".to_string());
        }
        if let Some(n) = self.fg {
            c.push(format!("fg{n}"));
        }
        if let Some(n) = self.bg {
            c.push(format!("bg{n}"));
        }
        c.join(" ")
    }

    /// Applies one SGR sequence's parameters.
    fn apply(&mut self, params: &Params) {
        let mut all = params.iter().map(|p| p.first().copied().unwrap_or(0));
        let mut any = false;
        while let Some(p) = all.next() {
            any = true;
            match p {
                0 => *self = Style::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => (self.bold, self.dim) = (false, false),
                23 => self.italic = false,
                24 => self.underline = false,
                30..=37 => self.fg = Some((p - 30) as u8),
                39 => self.fg = None,
                40..=47 => self.bg = Some((p - 40) as u8),
                49 => self.bg = None,
                90..=97 => self.fg = Some((p - 90 + 8) as u8),
                100..=107 => self.bg = Some((p - 100 + 8) as u8),
                // 256 colours: the first 16 are the classes; the others, and true
                // colour, are not shown (their parameters are skipped).
                38 | 48 => {
                    let n = match all.next() {
                        Some(5) => all.next().filter(|n| *n < 16).map(|n| n as u8),
                        Some(2) => {
                            all.next();
                            all.next();
                            all.next();
                            None
                        }
                        _ => None,
                    };
                    if p == 38 {
                        self.fg = n;
                    } else {
                        self.bg = n;
                    }
                }
                _ => {}
            }
        }
        if !any {
            *self = Style::default(); // `ESC[m` resets
        }
    }
}

/// What one chunk becomes.
struct Out<'a> {
    html: String,
    style: &'a mut Style,
    /// The style the open `<span>` has (none open: the default style).
    open: Option<Style>,
}

impl Out<'_> {
    fn close(&mut self) {
        if self.open.take().is_some() {
            self.html.push_str("</span>");
        }
    }

    fn text(&mut self, c: char) {
        if self.open != Some(*self.style) {
            self.close();
            if *self.style != Style::default() {
                self.html.push_str("<span class=\"");
                self.html.push_str(&self.style.classes());
                self.html.push_str("\">");
                self.open = Some(*self.style);
            }
        }
        match c {
            '<' => self.html.push_str("&lt;"),
            '>' => self.html.push_str("&gt;"),
            '&' => self.html.push_str("&amp;"),
            '"' => self.html.push_str("&quot;"),
            '\'' => self.html.push_str("&#39;"),
            c => self.html.push(c),
        }
    }
}

impl Perform for Out<'_> {
    fn print(&mut self, c: char) {
        self.text(c);
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            // A line ends outside any span, so that lines can be cut apart.
            b'\n' => {
                self.close();
                self.html.push('\n');
            }
            b'\t' => self.text('\t'),
            _ => {} // bell, backspace, carriage return …: not shown
        }
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: u8) {
        if action == b'm' && intermediates.is_empty() && !ignore {
            self.style.apply(params);
        }
    }
}

impl AnsiHtml {
    pub fn new() -> Self {
        Self::default()
    }

    /// A line has ended (its bytes were given without their newline): any escape
    /// sequence it left open ends with it; the style goes on.
    pub fn end_line(&mut self) {
        self.parser = Parser::default();
        self.pending = 0;
    }

    /// The HTML of the next chunk of the log. Each chunk's spans are closed at its end
    /// (and opened again in the next, when the style still holds).
    pub fn push(&mut self, chunk: &[u8]) -> String {
        let mut out = Out {
            html: String::with_capacity(chunk.len() + chunk.len() / 8),
            style: &mut self.style,
            open: None,
        };
        for &b in chunk {
            // A byte that is not where UTF-8 has it (a continuation byte alone, a byte
            // no UTF-8 text has) is shown as U+FFFD: the parser would drop it.
            let stray = match b {
                0x80..=0xbf if self.pending > 0 => {
                    self.pending -= 1;
                    false
                }
                0x80..=0xbf | 0xc0 | 0xc1 | 0xf5..=0xff => true,
                0xc2..=0xdf => {
                    self.pending = 1;
                    false
                }
                0xe0..=0xef => {
                    self.pending = 2;
                    false
                }
                0xf0..=0xf4 => {
                    self.pending = 3;
                    false
                }
                _ => {
                    self.pending = 0;
                    false
                }
            };
            // A line ends any escape sequence: an unterminated string (`ESC ]`, `ESC P`)
            // must not swallow the lines after it.
            if b == b'\n' {
                self.parser = Parser::default();
            }
            if stray {
                self.pending = 0;
                for r in "\u{fffd}".bytes() {
                    self.parser.advance(&mut out, r);
                }
                continue;
            }
            self.parser.advance(&mut out, b);
        }
        out.close();
        out.html
    }
}

/// A whole log (or one piece that stands alone) as HTML.
pub fn to_html(log: &[u8]) -> String {
    AnsiHtml::new().push(log)
}

/// The text of a log's bytes without its escape sequences (to be escaped by whoever
/// shows it).
pub fn strip(log: &[u8]) -> String {
    struct Plain(String);
    impl Perform for Plain {
        fn print(&mut self, c: char) {
            self.0.push(c);
        }
        fn execute(&mut self, byte: u8) {
            if byte == b'\t' || byte == b'\n' {
                self.0.push(byte as char);
            }
        }
    }
    let text = String::from_utf8_lossy(log);
    let mut plain = Plain(String::with_capacity(text.len()));
    let mut parser = Parser::<anstyle_parse::DefaultCharAccumulator>::new();
    for b in text.bytes() {
        parser.advance(&mut plain, b);
    }
    plain.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unterminated_string_sequence_ends_with_its_line() {
        // `ESC ]` (OSC) and `ESC P` (DCS) left open swallow nothing past the newline.
        for open in [&b"\x1b]8;;javascript:alert(1)"[..], b"\x1bPq#0;"] {
            let mut log = b"before ".to_vec();
            log.extend_from_slice(open);
            log.extend_from_slice(b"\nthe next line\n");
            let html = to_html(&log);
            assert!(html.contains("the next line"), "{html}");
        }
        let mut a = AnsiHtml::new();
        let _ = a.push(b"\x1b]0;title never ended");
        a.end_line();
        assert_eq!(a.push(b"shown"), "shown");
    }

    #[test]
    fn text_is_escaped_and_colours_become_classes() {
        let cases: &[(&[u8], &str)] = &[
            (b"plain\n", "plain\n"),
            (
                b"<script>alert('x')</script> & \"q\"",
                "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;",
            ),
            (
                b"\x1b[31mred\x1b[0m ok",
                "<span class=\"fg1\">red</span> ok",
            ),
            (
                b"\x1b[1;32mbold green\x1b[m.",
                "<span class=\"b fg2\">bold green</span>.",
            ),
            (
                b"\x1b[91mbright\x1b[39m",
                "<span class=\"fg9\">bright</span>",
            ),
            (
                b"\x1b[38;5;4mblue\x1b[38;5;200mpink",
                "<span class=\"fg4\">blue</span>pink",
            ),
            (
                b"\x1b[38;2;1;2;3mtrue\x1b[1mbold",
                "true<span class=\"b\">bold</span>",
            ),
            (
                b"\x1b[44;30mon blue",
                "<span class=\"fg0 bg4\">on blue</span>",
            ),
            // A style goes on past a line's end, in a span of each line.
            (
                b"\x1b[33ma\nb\x1b[0m",
                "<span class=\"fg3\">a</span>\n<span class=\"fg3\">b</span>",
            ),
            // Other sequences (cursor moves, titles, links) and controls are dropped.
            (
                b"\x1b[2K\x1b]0;title\x07\x1b]8;;http://x\x07link\x1b]8;;\x07\rdone\x08",
                "linkdone",
            ),
            (b"tab\there", "tab\there"),
            (b"bad \xff byte", "bad \u{fffd} byte"),
            (b"lone \x80 continuation", "lone \u{fffd} continuation"),
        ];
        for (input, want) in cases {
            assert_eq!(
                to_html(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn style_and_characters_carry_over_between_chunks() {
        let mut a = AnsiHtml::new();
        assert_eq!(a.push(b"\x1b[3"), "");
        assert_eq!(a.push(b"5mone "), "<span class=\"fg5\">one </span>");
        assert_eq!(
            a.push(b"two\x1b[0m three"),
            "<span class=\"fg5\">two</span> three"
        );
        // `é` split between two chunks.
        assert_eq!(a.push(&[b'c', 0xc3]), "c");
        assert_eq!(a.push(&[0xa9, b'!']), "é!");
    }

    /// Whatever the bytes, the output is text and closed spans only: no tag the log
    /// wrote survives.
    #[test]
    fn no_bytes_make_markup() {
        let mut seed = 0x2545_f491_u64;
        for _ in 0..2000 {
            let mut bytes = Vec::new();
            for _ in 0..64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pick = [
                    b'<', b'>', b'&', b'"', 0x1b, b'[', b'm', b'3', b';', b'\n', b'a', 0xc3,
                ];
                bytes.push(pick[(seed % pick.len() as u64) as usize]);
            }
            let html = to_html(&bytes);
            let stripped = html
                .replace("</span>", "")
                .split("<span class=\"")
                .enumerate()
                .map(|(i, part)| {
                    if i == 0 {
                        part.to_string()
                    } else {
                        part.split_once("\">")
                            .map(|(_, rest)| rest.to_string())
                            .unwrap_or_default()
                    }
                })
                .collect::<String>();
            assert!(
                !stripped.contains('<') && !stripped.contains('>') && !stripped.contains('"'),
                "{html}"
            );
            assert_eq!(
                html.matches("<span").count(),
                html.matches("</span>").count(),
                "{html}"
            );
        }
    }
}
