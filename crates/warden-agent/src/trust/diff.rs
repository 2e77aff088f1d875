//! Comparing pins with the files read now (pure), and the unified diffs that show a change.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use similar::TextDiff;

use super::{FileRole, MAX_PINNED_CONTENT, Pin, PinSet, TrustedFile};

/// A diff longer than this is cut (at a line end) and says so.
pub const MAX_DIFF_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    Added,
    Modified,
    Removed,
}

impl ChangeKind {
    fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Modified => 'M',
            ChangeKind::Removed => 'D',
        }
    }
}

/// One file that differs from its pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// The pin key: relative to the repository, or `~/...`.
    pub path: String,
    pub kind: ChangeKind,
    pub role: FileRole,
    pub pinned_sha256: Option<String>,
    pub current_sha256: Option<String>,
    /// A unified diff from the pinned text to the current one (`a/PATH` to `b/PATH`).
    pub diff: String,
    /// Set when the diff does not show the whole change: which side was cut, or why there is
    /// no text to compare.
    pub truncated: Option<String>,
}

/// The remote recorded with the pins differs from the repository's now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteChange {
    pub pinned: Option<String>,
    pub now: Option<String>,
}

/// Added, modified and removed files, in path order. `gone(key)` says whether a pinned
/// repository file that was not read now no longer exists.
pub fn compare(
    pins: &PinSet,
    current: &[TrustedFile],
    gone: impl Fn(&str) -> bool,
) -> Vec<FileChange> {
    let now: BTreeMap<&str, &TrustedFile> = current.iter().map(|f| (f.key.as_str(), f)).collect();
    let mut out = Vec::new();
    for (key, f) in &now {
        match pins.files.get(*key) {
            None => out.push(added(f)),
            Some(pin) if pin.sha256 != f.sha256_hex() => out.push(modified(key, pin, f)),
            Some(_) => {}
        }
    }
    for (key, pin) in &pins.files {
        if !now.contains_key(key.as_str()) && gone(key) {
            out.push(removed(key, pin));
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn added(f: &TrustedFile) -> FileChange {
    let note = f.text_truncated.then(|| {
        format!("the file is longer than {MAX_PINNED_CONTENT} bytes: only its beginning is shown")
    });
    let (diff, cut) = unified(&f.key, "", &f.text);
    FileChange {
        path: f.key.clone(),
        kind: ChangeKind::Added,
        role: f.role,
        pinned_sha256: None,
        current_sha256: Some(f.sha256_hex()),
        diff,
        truncated: join_notes(note, cut),
    }
}

pub(super) fn modified(key: &str, pin: &Pin, f: &TrustedFile) -> FileChange {
    let (diff, note) = match &pin.content {
        Some(old) => {
            let mut notes = Vec::new();
            if pin.content_truncated || f.text_truncated {
                notes.push(format!(
                    "only the first {MAX_PINNED_CONTENT} bytes of each side are kept: a change past them is not shown"
                ));
            }
            if pin.lossy || f.lossy {
                notes.push("not valid UTF-8: invalid bytes are shown as U+FFFD".to_string());
            }
            let (diff, cut) = unified(key, old, &f.text);
            if diff.is_empty() {
                notes.push("the texts kept are equal: the change lies past them, or in bytes that are not text".to_string());
            }
            let note = (!notes.is_empty()).then(|| notes.join("; "));
            (diff, join_notes(note, cut))
        }
        None => (
            String::new(),
            Some(
                "the pinned text was not kept (the repository's pins passed their size cap): only the hashes differ"
                    .to_string(),
            ),
        ),
    };
    FileChange {
        path: key.to_string(),
        kind: ChangeKind::Modified,
        role: pin.role,
        pinned_sha256: Some(pin.sha256.clone()),
        current_sha256: Some(f.sha256_hex()),
        diff,
        truncated: note,
    }
}

fn removed(key: &str, pin: &Pin) -> FileChange {
    let (diff, note) = match &pin.content {
        Some(old) => {
            let (diff, cut) = unified(key, old, "");
            let note = pin.content_truncated.then(|| {
                format!("only the first {MAX_PINNED_CONTENT} bytes of the pinned file were kept")
            });
            (diff, join_notes(note, cut))
        }
        None => (
            String::new(),
            Some("the pinned text was not kept: the file is gone".to_string()),
        ),
    };
    FileChange {
        path: key.to_string(),
        kind: ChangeKind::Removed,
        role: pin.role,
        pinned_sha256: Some(pin.sha256.clone()),
        current_sha256: None,
        diff,
        truncated: note,
    }
}

fn join_notes(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

/// A unified diff of `old` to `new`, cut at [`MAX_DIFF_BYTES`] (with the note saying so).
fn unified(key: &str, old: &str, new: &str) -> (String, Option<String>) {
    let diff = TextDiff::from_lines(old, new);
    let mut text = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{key}"), &format!("b/{key}"))
        .to_string();
    if text.len() <= MAX_DIFF_BYTES {
        return (text, None);
    }
    let mut end = MAX_DIFF_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let end = text[..end].rfind('\n').map_or(end, |i| i + 1);
    let full = text.len();
    text.truncate(end);
    (
        text,
        Some(format!(
            "the diff is {full} bytes: only its first {end} are shown"
        )),
    )
}

/// The message of [`super::TrustError::Changed`]: a summary, then every diff.
pub fn changed_message(repo: &Path, diffs: &[FileChange], remote: Option<&RemoteChange>) -> String {
    let mut out = format!(
        "instruction files of {} changed since they were pinned; the run stops until the change is accepted with `warden trust --repo {}`\n",
        repo.display(),
        repo.display()
    );
    out.push_str(&render_changes(diffs, remote));
    out.trim_end().to_string()
}

/// A summary line per change, then each unified diff (the text `warden trust` prints).
pub fn render_changes(diffs: &[FileChange], remote: Option<&RemoteChange>) -> String {
    let mut out = String::new();
    if let Some(r) = remote {
        let show = |u: &Option<String>| u.clone().unwrap_or_else(|| "(none)".into());
        let _ = writeln!(
            out,
            "  R origin remote: {} -> {}",
            show(&r.pinned),
            show(&r.now)
        );
    }
    for c in diffs {
        let _ = writeln!(out, "  {} {} ({})", c.kind.letter(), c.path, c.role);
    }
    for c in diffs {
        out.push('\n');
        let _ = writeln!(
            out,
            "{} {}: sha256 {} -> {}",
            match c.kind {
                ChangeKind::Added => "added",
                ChangeKind::Modified => "modified",
                ChangeKind::Removed => "removed",
            },
            c.path,
            c.pinned_sha256.as_deref().unwrap_or("(none)"),
            c.current_sha256.as_deref().unwrap_or("(none)"),
        );
        out.push_str(&c.diff);
        if !c.diff.is_empty() && !c.diff.ends_with('\n') {
            out.push('\n');
        }
        if let Some(n) = &c.truncated {
            let _ = writeln!(out, "[diff truncated: {n}]");
        }
    }
    out
}
