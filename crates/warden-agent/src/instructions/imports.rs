//! Finding `@path` imports in the Markdown of an instruction file.
//!
//! An import is `@` at the start of a line or after whitespace, followed by the path up to the
//! next whitespace (`\ ` keeps a space in the path). Trailing punctuation that ends a sentence
//! (`,;:!?)]}>"'` and a single `.`) is not part of the path. Imports inside fenced code blocks
//! (``` or ~~~, indented at most three spaces, closed by a fence of the same character at
//! least as long) and inside inline code spans (a run of backticks closed by a run of the same
//! length on the same line) are ignored. `@@x` and a lone `@` are not imports.

/// The import paths of `text`, in order of appearance, with the 1-based line of each.
pub fn find_imports(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some((ch, len)) = fence_marker(line) {
            match fence {
                None => {
                    fence = Some((ch, len));
                    continue;
                }
                Some((open_ch, open_len)) => {
                    let rest = line.trim_start().trim_start_matches(ch);
                    if ch == open_ch && len >= open_len && rest.trim().is_empty() {
                        fence = None;
                    }
                    continue;
                }
            }
        }
        if fence.is_some() {
            continue;
        }
        scan_line(line, i + 1, &mut found);
    }
    found
}

/// The fence character and run length when `line` starts a code fence.
fn fence_marker(line: &str) -> Option<(char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let ch = rest.chars().next()?;
    if ch != '`' && ch != '~' {
        return None;
    }
    let len = rest.len() - rest.trim_start_matches(ch).len();
    (len >= 3).then_some((ch, len))
}

fn scan_line(line: &str, line_no: usize, found: &mut Vec<(usize, String)>) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'`' => {
                let run = count_run(bytes, i, b'`');
                match closing_run(bytes, i + run, run) {
                    Some(end) => i = end,
                    // An unmatched run is literal text.
                    None => i += run,
                }
            }
            b'@' if i == 0 || bytes[i - 1].is_ascii_whitespace() => {
                let (path, end) = take_path(line, i + 1);
                if !path.is_empty() && !path.starts_with('@') {
                    found.push((line_no, path));
                }
                i = end.max(i + 1);
            }
            _ => i += 1,
        }
    }
}

fn count_run(bytes: &[u8], start: usize, b: u8) -> usize {
    bytes[start..].iter().take_while(|&&c| c == b).count()
}

/// The index after a run of exactly `len` backticks at or after `from`.
fn closing_run(bytes: &[u8], from: usize, len: usize) -> Option<usize> {
    let mut j = from;
    while j < bytes.len() {
        if bytes[j] == b'`' {
            let run = count_run(bytes, j, b'`');
            if run == len {
                return Some(j + run);
            }
            j += run;
        } else {
            j += 1;
        }
    }
    None
}

/// The path starting at byte `start` and the index where it ends.
fn take_path(line: &str, start: usize) -> (String, usize) {
    let mut path = String::new();
    let mut chars = line[start..].char_indices().peekable();
    let mut end = line.len();
    while let Some((off, c)) = chars.next() {
        if c == '\\' && chars.peek().is_some_and(|&(_, n)| n == ' ') {
            path.push(' ');
            chars.next();
            continue;
        }
        if c.is_whitespace() {
            end = start + off;
            break;
        }
        path.push(c);
    }
    while path.ends_with([',', ';', ':', '!', '?', ')', ']', '}', '>', '"', '\'']) {
        path.pop();
    }
    if path.ends_with('.') && !path.ends_with("..") && !path.ends_with("/.") && path != "." {
        path.pop();
    }
    (path, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Vec<String> {
        find_imports(text).into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn import_syntax_table() {
        let cases: &[(&str, &[&str])] = &[
            ("@a.md", &["a.md"]),
            ("See @docs/guide.md for more.", &["docs/guide.md"]),
            ("See @docs/guide.md.", &["docs/guide.md"]),
            ("two: @a.md, @b.md;", &["a.md", "b.md"]),
            ("(see @a.md)", &["a.md"]),
            ("@~/.claude/mine.md", &["~/.claude/mine.md"]),
            ("@/abs/path.md", &["/abs/path.md"]),
            ("@../up.md", &["../up.md"]),
            ("@README", &["README"]),
            ("@my\\ notes.md x", &["my notes.md"]),
            ("mail me: me@example.com", &[]),
            ("a lone @ sign", &[]),
            ("@@not-an-import", &[]),
            ("\t@tabbed.md", &["tabbed.md"]),
            ("`@in-span.md` but @out.md", &["out.md"]),
            ("``a ` @in-double.md`` @after.md", &["after.md"]),
            ("unclosed ` @counts.md", &["counts.md"]),
            ("```\n@fenced.md\n```\n@after.md", &["after.md"]),
            ("~~~md\n@tilde.md\n~~~\n@after.md", &["after.md"]),
            (
                "````\n```\n@still-fenced.md\n````\n@after.md",
                &["after.md"],
            ),
            ("   ```\n@indented-fence.md\n   ```", &[]),
            ("    ```\n@not-a-fence.md", &["not-a-fence.md"]),
            ("```\n@never-closed.md", &[]),
            ("```\n~~~\n@mixed.md\n```\n@after.md", &["after.md"]),
            ("@a.md @a.md", &["a.md", "a.md"]),
        ];
        for (text, want) in cases {
            assert_eq!(paths(text), *want, "text: {text:?}");
        }
    }

    #[test]
    fn imports_carry_their_line() {
        let got = find_imports("# Title\n\nsee @a.md\n```\n@x\n```\n@b.md\r\n");
        assert_eq!(got, vec![(3, "a.md".to_string()), (7, "b.md".to_string())]);
    }
}
