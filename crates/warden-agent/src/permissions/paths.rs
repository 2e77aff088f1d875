//! `Read(...)` and `Edit(...)` rules: gitignore-style patterns with Claude Code's anchors, and
//! the lexical normalisation of the paths they are matched against.

use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

/// Where a path pattern starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// `//etc/**`: the file system root.
    Absolute,
    /// `~/.ssh/**`: the home directory.
    Home,
    /// `/src/**`: the project root of the settings file (the repository).
    Root,
    /// `./src/**`, `src/**`, `*.env`: the current directory.
    Cwd,
}

/// A compiled path pattern.
#[derive(Debug, Clone)]
pub(crate) struct PathPattern {
    pub anchor: Anchor,
    /// Matched against the path relative to the anchor; `None` matches everything under it.
    glob: Option<GlobMatcher>,
}

impl PathPattern {
    /// Parses a specifier. Gitignore rules: a pattern with a `/` before its last character is
    /// anchored at its base, one without matches at any depth below it; a trailing `/` names
    /// a directory (and so everything inside); `*` and `?` do not cross `/`, `**` does.
    pub fn parse(spec: &str) -> Result<PathPattern, String> {
        let (anchor, rest, anchored) = if let Some(rest) = spec.strip_prefix("//") {
            (Anchor::Absolute, rest, true)
        } else if spec == "~" {
            (Anchor::Home, "", true)
        } else if let Some(rest) = spec.strip_prefix("~/") {
            (Anchor::Home, rest, true)
        } else if spec.starts_with('~') {
            return Err(
                "`~user` paths are not supported; write `~/...` or `//home/user/...`".into(),
            );
        } else if let Some(rest) = spec.strip_prefix('/') {
            (Anchor::Root, rest, true)
        } else if let Some(rest) = spec.strip_prefix("./") {
            (Anchor::Cwd, rest, true)
        } else {
            let body = spec.strip_suffix('/').unwrap_or(spec);
            (Anchor::Cwd, spec, body.contains('/'))
        };
        if rest.starts_with('!') {
            return Err("negated (`!`) patterns have no meaning in a permission rule".into());
        }
        let rest = rest.trim_end_matches('/');
        let rest = rest.trim_start_matches('/');
        if rest.split('/').any(|c| c == "..") {
            return Err("`..` is not allowed inside a pattern; write the path it leads to".into());
        }
        let rest = rest
            .split('/')
            .filter(|c| *c != "." && !c.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        if rest.is_empty() || rest == "**" {
            return Ok(PathPattern { anchor, glob: None });
        }
        let text = if anchored || rest.starts_with("**/") {
            rest
        } else {
            format!("**/{rest}")
        };
        let glob = GlobBuilder::new(&text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("the pattern `{spec}` is not valid: {}", e.kind()))?;
        Ok(PathPattern {
            anchor,
            glob: Some(glob.compile_matcher()),
        })
    }

    /// Whether the normalised absolute `path`, or a directory holding it, matches when the
    /// anchor is `base`.
    pub fn matches(&self, base: &Path, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(base) else {
            return false;
        };
        let Some(glob) = &self.glob else {
            return true;
        };
        let mut prefix = PathBuf::new();
        for component in relative.components() {
            prefix.push(component);
            if glob.is_match(&prefix) {
                return true;
            }
        }
        false
    }
}

/// `path` made absolute against `cwd` (and `~` against `home`), with `.` and `..` resolved
/// lexically: no symlink is followed, so `./secrets/../secrets/key` is `<cwd>/secrets/key`
/// whatever is on disk. The sandbox, not this check, decides what a symlink can reach.
pub fn resolve_path(path: &str, cwd: &Path, home: &Path) -> PathBuf {
    let joined = if path == "~" {
        home.to_path_buf()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else {
        cwd.join(path)
    };
    normalize(&joined)
}

/// Resolves `.` and `..` lexically; `..` at the root stays at the root.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(spec: &str, path: &str) -> bool {
        PathPattern::parse(spec).unwrap().matches(
            Path::new("/w"),
            &resolve_path(path, Path::new("/w"), Path::new("/h")),
        )
    }

    #[test]
    fn gitignore_semantics() {
        assert!(m(".env", "/w/.env"));
        assert!(m(".env", "/w/sub/.env"));
        assert!(!m("./.env", "/w/sub/.env"));
        assert!(m("./.env", "/w/.env"));
        assert!(m("secrets/", "/w/secrets/key"));
        assert!(m("secrets", "/w/a/secrets/deep/key"));
        assert!(!m("src/*.rs", "/w/src/a/b.rs"));
        assert!(m("src/**/*.rs", "/w/src/a/b.rs"));
        assert!(m("*.pem", "/w/x/y.pem"));
        assert!(!m("*.pem", "/elsewhere/y.pem"));
        assert!(m("secrets/**", "./secrets/../secrets/key"));
    }

    #[test]
    fn normalises_lexically() {
        assert_eq!(
            normalize(Path::new("/a/./b/../../..//c")),
            PathBuf::from("/c")
        );
        assert_eq!(
            resolve_path("~/x/../.ssh/id", Path::new("/w"), Path::new("/h")),
            PathBuf::from("/h/.ssh/id")
        );
    }

    #[test]
    fn rejects_what_gitignore_would_misread() {
        for bad in ["!x", "a/../b", "~bob/x", "[z-a]"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
