//! Bearer tokens of `warden router --token-file`: each token grants every sandbox, or the
//! sandboxes its scopes name. Tokens are compared in constant time.
//!
//! The file, one token a line (`#` starts a comment line, blank lines are skipped):
//!
//! ```text
//! # TOKEN                              SCOPE ...
//! 3f6c0a...e1                                         # every sandbox
//! 9b2d41...7a   team-a/*   team-b/builder-7           # all of team-a, one of team-b
//! ```

use std::fmt;

use http::HeaderMap;
use subtle::ConstantTimeEq;

/// The shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `NAMESPACE/*`
    Namespace(String),
    /// `NAMESPACE/ID`
    Sandbox { namespace: String, id: String },
}

impl Scope {
    fn covers(&self, namespace: &str, id: &str) -> bool {
        match self {
            Scope::Namespace(ns) => ns == namespace,
            Scope::Sandbox {
                namespace: ns,
                id: i,
            } => ns == namespace && i == id,
        }
    }
}

/// One token and its scopes (`None`: every sandbox).
struct TokenEntry {
    token: Vec<u8>,
    scopes: Option<Vec<Scope>>,
}

/// The tokens the router accepts.
pub struct TokenTable {
    entries: Vec<TokenEntry>,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("TokenTable")
            .field("tokens", &self.entries.len())
            .finish()
    }
}

/// A line of the token file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TokenFileError {
    pub line: usize,
    pub message: String,
}

/// What a valid token grants.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    scopes: Option<&'a [Scope]>,
}

impl Grant<'_> {
    /// Every sandbox (auth off, or a token without scopes).
    pub const ALL: Grant<'static> = Grant { scopes: None };

    pub fn allows(&self, namespace: &str, id: &str) -> bool {
        match self.scopes {
            None => true,
            Some(scopes) => scopes.iter().any(|s| s.covers(namespace, id)),
        }
    }

    /// Whether the token is limited to some sandboxes.
    pub fn is_scoped(&self) -> bool {
        self.scopes.is_some()
    }
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    let (ns, id) = s.split_once('/').ok_or_else(|| {
        format!(
            "scope `{s}` is not NAMESPACE/ID or NAMESPACE/* (for example team-a/* or team-a/sbx-1)"
        )
    })?;
    if !warden_policy::is_dns_label(ns) {
        return Err(format!(
            "scope `{s}`: `{ns}` is not a namespace name (lowercase letters, digits and '-', at most 63)"
        ));
    }
    if id == "*" {
        return Ok(Scope::Namespace(ns.to_string()));
    }
    if !warden_policy::is_dns_label(id) {
        return Err(format!(
            "scope `{s}`: `{id}` is not a sandbox name or `*` (lowercase letters, digits and '-', at most 63)"
        ));
    }
    Ok(Scope::Sandbox {
        namespace: ns.to_string(),
        id: id.to_string(),
    })
}

impl TokenTable {
    /// Parses the token file's text.
    pub fn parse(text: &str) -> Result<TokenTable, TokenFileError> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| TokenFileError { line, message };
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            // A trailing comment after the scopes.
            let content = match content.find(" #").or_else(|| content.find("\t#")) {
                Some(at) => content[..at].trim_end(),
                None => content,
            };
            let mut words = content.split_ascii_whitespace();
            let Some(token) = words.next() else { continue };
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(err("the token must be visible ASCII characters".into()));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(err(format!(
                    "the token is {} characters; use at least {MIN_TOKEN_LEN} (for example \
                     `openssl rand -hex 32`)",
                    token.len()
                )));
            }
            if entries.iter().any(|e| e.token == token.as_bytes()) {
                return Err(err("this token is already on an earlier line".into()));
            }
            let scopes = words
                .map(parse_scope)
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            entries.push(TokenEntry {
                token: token.as_bytes().to_vec(),
                scopes: (!scopes.is_empty()).then_some(scopes),
            });
        }
        if entries.is_empty() {
            return Err(TokenFileError {
                line: 0,
                message:
                    "no tokens: write one token per line, `TOKEN [NAMESPACE/ID|NAMESPACE/* ...]`"
                        .into(),
            });
        }
        Ok(TokenTable { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The grant of the request's `Authorization: Bearer` token; `None` when it is missing
    /// or unknown. Every token is compared, each in constant time.
    pub fn check(&self, headers: &HeaderMap) -> Option<Grant<'_>> {
        let presented = bearer(headers)?;
        let mut found: Option<&TokenEntry> = None;
        for entry in &self.entries {
            let eq: bool = entry.token.as_slice().ct_eq(presented).into();
            if eq && found.is_none() {
                found = Some(entry);
            }
        }
        found.map(|e| Grant {
            scopes: e.scopes.as_deref(),
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccc";

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn parses_tokens_and_scopes() {
        let t = TokenTable::parse(&format!(
            "# comment\n\n{A}\n  {B} team-a/* team-b/sbx-1   # trailing\n{C}\tteam-c/x\n"
        ))
        .unwrap();
        assert_eq!(t.len(), 3);
        let a = t.check(&with_auth(&format!("Bearer {A}"))).unwrap();
        assert!(!a.is_scoped());
        assert!(a.allows("anything", "at-all"));
        let b = t.check(&with_auth(&format!("bearer {B}"))).unwrap();
        assert!(b.is_scoped());
        for (ns, id, ok) in [
            ("team-a", "x", true),
            ("team-a", "y", true),
            ("team-b", "sbx-1", true),
            ("team-b", "sbx-2", false),
            ("default", "sbx-1", false),
        ] {
            assert_eq!(b.allows(ns, id), ok, "{ns}/{id}");
        }
        let c = t.check(&with_auth(&format!("Bearer  {C} "))).unwrap();
        assert!(c.allows("team-c", "x") && !c.allows("team-c", "y"));
    }

    #[test]
    fn rejects_bad_credentials() {
        let t = TokenTable::parse(A).unwrap();
        for bad in [
            String::new(),
            "Bearer".into(),
            "Bearer ".into(),
            format!("Basic {A}"),
            format!("Bearer {A}x"),
            format!("Bearer {}", &A[1..]),
            format!("Token {A}"),
        ] {
            let h = if bad.is_empty() {
                HeaderMap::new()
            } else {
                with_auth(&bad)
            };
            assert!(t.check(&h).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn file_errors_name_the_line() {
        for (text, line, needle) in [
            ("short", 1, "at least 16"),
            (&format!("# c\n{A} team-a") as &str, 2, "NAMESPACE/ID"),
            (&format!("{A} Team/x"), 1, "not a namespace"),
            (&format!("{A} team/X_1"), 1, "not a sandbox name"),
            (&format!("{A}\n{A}"), 2, "already"),
            ("# only comments\n", 0, "no tokens"),
        ] {
            let e = TokenTable::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
        let dbg = format!("{:?}", TokenTable::parse(A).unwrap());
        assert!(!dbg.contains(A), "{dbg}");
    }
}
