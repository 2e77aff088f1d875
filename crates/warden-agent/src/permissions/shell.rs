//! A conservative reader of the shell commands in `Bash` tool calls: it splits a command line
//! into the simple commands that would run, and reports anything it does not understand.
//!
//! Why not a parser crate: the well-kept Rust shell parsers (brush-parser, yash-syntax) parse
//! the whole bash or POSIX language, and walking their ASTs for every place a command can hide
//! (words, redirections, here-documents, parameter expansions, arithmetic) is as much code as
//! this reader, with a grammar we do not control: a construct their AST models but our walk
//! forgets would be a silent hole. This reader accepts a small subset (simple commands, `&&`,
//! `||`, `;`, `|`, `&`, newlines, `( )` and `{ }` groups, `if`/`while`/`until`/`for` bodies,
//! quotes, redirections, here-documents, `$(...)`, backticks and `<(...)`), and everything
//! else (`case`, functions, arithmetic, arrays, `${...}` holding a command, unbalanced quotes)
//! becomes a *problem*. The permission checker never allows a command with a problem, so a gap
//! in this reader costs a question to a person, never a silent allow.

/// What a command line holds: every simple command that would run, including those inside
/// command substitutions and groups, and the constructs this reader refused to interpret.
#[derive(Debug, Default)]
pub(crate) struct Script {
    pub commands: Vec<SimpleCommand>,
    pub problems: Vec<String>,
}

/// One simple command: its words (leading `NAME=value` assignments included) and its
/// redirections.
#[derive(Debug, Default, Clone)]
pub(crate) struct SimpleCommand {
    pub words: Vec<Word>,
    pub redirects: Vec<Redirect>,
}

/// A word as written (`raw`) and after quote removal (`value`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub raw: String,
    pub value: String,
    /// Holds an expansion whose value is only known at run time (`$X`, `$(...)`, backticks,
    /// `${...}`, `$'...'`), so `value` is not what will run.
    pub dynamic: bool,
    /// Holds an unquoted `*`, `?`, `[` or `{`: the shell may expand it to file names or to
    /// several words.
    pub glob: bool,
    /// Some part of it was quoted or escaped (so it is never a reserved word).
    pub quoted: bool,
}

/// A redirection: `2>&1`, `> out.txt`, `< in`, `<<EOF`.
#[derive(Debug, Clone)]
pub(crate) struct Redirect {
    /// The file descriptor written before the operator (`2` in `2>`), or empty.
    pub fd: String,
    pub op: String,
    pub target: Word,
}

impl Redirect {
    /// Whether the redirection can only read, or write to nowhere: input from a file or a
    /// here-document, `/dev/null`, and descriptor duplication (`2>&1`, `>&-`).
    pub fn is_harmless(&self) -> bool {
        match self.op.as_str() {
            "<" | "<<" | "<<-" | "<<<" | "<&" => true,
            ">&" => !self.target.dynamic && is_fd_target(&self.target.value),
            _ => !self.target.dynamic && self.target.value == "/dev/null",
        }
    }

    /// As written back, e.g. `2>&1` or `> out.txt`.
    pub fn render(&self, word: impl Fn(&Word) -> String) -> String {
        if matches!(self.op.as_str(), ">&" | "<&") && is_fd_target(&self.target.value) {
            format!("{}{}{}", self.fd, self.op, self.target.value)
        } else {
            format!("{}{} {}", self.fd, self.op, word(&self.target))
        }
    }
}

fn is_fd_target(s: &str) -> bool {
    s == "-" || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Longest command line read; longer ones are a problem (nobody reviews them either).
const MAX_LEN: usize = 64 * 1024;
/// Deepest nesting of substitutions and `sh -c` strings.
pub(crate) const MAX_DEPTH: usize = 8;
/// Most simple commands in one call.
const MAX_COMMANDS: usize = 256;

/// Reads `src` as a command line.
pub(crate) fn parse(src: &str) -> Script {
    let mut script = Script::default();
    parse_into(src, 0, &mut script);
    script
}

/// Reads `src` (nested `depth` deep) and appends what it holds to `script`.
pub(crate) fn parse_into(src: &str, depth: usize, script: &mut Script) {
    if depth > MAX_DEPTH {
        script
            .problems
            .push("commands are nested too deeply".to_string());
        return;
    }
    if src.len() > MAX_LEN {
        script
            .problems
            .push(format!("the command is longer than {MAX_LEN} bytes"));
        return;
    }
    let before = script.commands.len();
    let mut lexer = Lexer {
        chars: src.chars().collect(),
        pos: 0,
        depth,
        script,
        heredocs: Vec::new(),
    };
    let tokens = lexer.tokens();
    // The commands of substitutions were read while lexing; list them after the commands of
    // this line, which reads in the order a person would.
    let inner = script.commands.split_off(before);
    assemble(tokens, script);
    script.commands.extend(inner);
    if script.commands.len() > MAX_COMMANDS {
        script
            .problems
            .push(format!("more than {MAX_COMMANDS} commands in one call"));
    }
}

#[derive(Debug)]
enum Token {
    Word(Word),
    /// `&&`, `||`, `;`, `|`, `&`, a newline, `(` or `)`.
    Op(&'static str),
    Redirect(Redirect),
}

struct PendingHeredoc {
    delimiter: String,
    strip_tabs: bool,
    /// A quoted delimiter makes the body literal; otherwise it is expanded like `"..."`.
    literal: bool,
}

struct Lexer<'s> {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    script: &'s mut Script,
    heredocs: Vec<PendingHeredoc>,
}

fn is_meta(c: char) -> bool {
    matches!(
        c,
        '|' | '&' | ';' | '(' | ')' | '<' | '>' | ' ' | '\t' | '\n'
    )
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn problem(&mut self, what: impl Into<String>) {
        self.script.problems.push(what.into());
    }

    fn tokens(&mut self) -> Vec<Token> {
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\r' => self.pos += 1,
                '\\' if self.peek_at(1) == Some('\n') => self.pos += 2,
                '\n' => {
                    self.pos += 1;
                    out.push(Token::Op("\n"));
                    self.read_heredoc_bodies();
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                ';' => {
                    if self.peek_at(1) == Some(';') || self.peek_at(1) == Some('&') {
                        self.problem("`case` clauses are not analysed");
                        self.pos += 2;
                    } else {
                        self.pos += 1;
                    }
                    out.push(Token::Op(";"));
                }
                '&' => match self.peek_at(1) {
                    Some('&') => {
                        self.pos += 2;
                        out.push(Token::Op("&&"));
                    }
                    Some('>') => {
                        let op = if self.peek_at(2) == Some('>') {
                            "&>>"
                        } else {
                            "&>"
                        };
                        self.pos += op.len();
                        self.redirect(String::new(), op, &mut out);
                    }
                    _ => {
                        self.pos += 1;
                        out.push(Token::Op("&"));
                    }
                },
                '|' => {
                    match self.peek_at(1) {
                        Some('|') => {
                            self.pos += 2;
                            out.push(Token::Op("||"));
                        }
                        Some('&') => {
                            self.pos += 2;
                            out.push(Token::Op("|"));
                        }
                        _ => {
                            self.pos += 1;
                            out.push(Token::Op("|"));
                        }
                    };
                }
                '(' => {
                    self.pos += 1;
                    out.push(Token::Op("("));
                }
                ')' => {
                    self.pos += 1;
                    out.push(Token::Op(")"));
                }
                '<' | '>' if self.peek_at(1) == Some('(') => {
                    let word = self.word();
                    out.push(Token::Word(word));
                }
                '<' | '>' => self.redirect_op(String::new(), &mut out),
                '0'..='9' if self.fd_prefix_len().is_some() => {
                    let len = self.fd_prefix_len().unwrap_or(0);
                    let fd: String = self.chars[self.pos..self.pos + len].iter().collect();
                    self.pos += len;
                    self.redirect_op(fd, &mut out);
                }
                _ => {
                    let word = self.word();
                    out.push(Token::Word(word));
                }
            }
        }
        if !self.heredocs.is_empty() {
            self.problem("a here-document is not terminated");
        }
        out
    }

    /// The length of a run of digits directly followed by `<` or `>` (`2>`), if any.
    fn fd_prefix_len(&self) -> Option<usize> {
        let mut n = 0;
        while self.peek_at(n).is_some_and(|c| c.is_ascii_digit()) {
            n += 1;
        }
        (n > 0 && matches!(self.peek_at(n), Some('<' | '>')) && self.peek_at(n + 1) != Some('('))
            .then_some(n)
    }

    fn redirect_op(&mut self, fd: String, out: &mut Vec<Token>) {
        let rest: String = self.chars[self.pos..].iter().take(3).collect();
        let op = [
            "<<<", "<<-", "&>>", "<<", "<>", "<&", ">>", ">|", ">&", "<", ">",
        ]
        .into_iter()
        .find(|op| rest.starts_with(op))
        .unwrap_or(">");
        self.pos += op.len();
        self.redirect(fd, op, out);
    }

    fn redirect(&mut self, fd: String, op: &'static str, out: &mut Vec<Token>) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
        match self.peek() {
            Some(c) if !is_meta(c) || (matches!(c, '<' | '>') && self.peek_at(1) == Some('(')) => {}
            _ => {
                self.problem(format!("the redirection `{fd}{op}` has no target"));
                return;
            }
        }
        let target = self.word();
        if op == "<<" || op == "<<-" {
            self.heredocs.push(PendingHeredoc {
                delimiter: target.value.clone(),
                strip_tabs: op == "<<-",
                literal: target.quoted,
            });
        }
        out.push(Token::Redirect(Redirect {
            fd,
            op: op.to_string(),
            target,
        }));
    }

    /// Reads the bodies of the here-documents opened on the line just ended.
    fn read_heredoc_bodies(&mut self) {
        for doc in std::mem::take(&mut self.heredocs) {
            let mut body = String::new();
            let mut terminated = false;
            while self.pos < self.chars.len() {
                let start = self.pos;
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
                let line: String = self.chars[start..self.pos].iter().collect();
                if self.peek() == Some('\n') {
                    self.pos += 1;
                }
                let check = if doc.strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    line.as_str()
                };
                if check == doc.delimiter {
                    terminated = true;
                    break;
                }
                body.push_str(&line);
                body.push('\n');
            }
            if !terminated {
                self.problem(format!(
                    "the here-document `{}` is not terminated",
                    doc.delimiter
                ));
            }
            if !doc.literal {
                self.scan_expansions(&body);
            }
        }
    }

    /// Finds the command substitutions in text expanded like a double-quoted string (an
    /// unquoted here-document body) and reads the commands inside.
    fn scan_expansions(&mut self, text: &str) {
        let mut sub = Lexer {
            chars: text.chars().collect(),
            pos: 0,
            depth: self.depth,
            script: self.script,
            heredocs: Vec::new(),
        };
        let mut scratch = Word::default();
        while let Some(c) = sub.peek() {
            match c {
                '\\' => sub.pos += 2,
                '$' => sub.dollar(&mut scratch),
                '`' => sub.backtick(&mut scratch),
                _ => sub.pos += 1,
            }
        }
    }

    /// Reads one word, reading the commands of the substitutions it holds.
    fn word(&mut self) -> Word {
        let start = self.pos;
        let mut w = Word::default();
        // A process substitution `<(...)` or `>(...)` is a word of its own.
        if matches!(self.peek(), Some('<' | '>')) && self.peek_at(1) == Some('(') {
            self.pos += 1;
            self.substitution(&mut w);
        }
        while let Some(c) = self.peek() {
            if is_meta(c) {
                break;
            }
            match c {
                '\'' => {
                    w.quoted = true;
                    self.pos += 1;
                    loop {
                        match self.peek() {
                            None => {
                                self.problem("a single quote is not closed");
                                break;
                            }
                            Some('\'') => {
                                self.pos += 1;
                                break;
                            }
                            Some(c) => {
                                w.value.push(c);
                                self.pos += 1;
                            }
                        }
                    }
                }
                '"' => {
                    w.quoted = true;
                    self.pos += 1;
                    self.double_quoted(&mut w);
                }
                '\\' => {
                    self.pos += 1;
                    match self.peek() {
                        Some('\n') => self.pos += 1,
                        Some(c) => {
                            w.quoted = true;
                            w.value.push(c);
                            self.pos += 1;
                        }
                        None => {}
                    }
                }
                '$' => self.dollar(&mut w),
                '`' => self.backtick(&mut w),
                // `{a,b}` and `{1..3}` are brace expansions: like a glob, the words they
                // become are not the word written.
                '*' | '?' | '[' | '{' => {
                    w.glob = true;
                    w.value.push(c);
                    self.pos += 1;
                }
                _ => {
                    w.value.push(c);
                    self.pos += 1;
                }
            }
        }
        w.raw = self.chars[start..self.pos].iter().collect();
        w
    }

    fn double_quoted(&mut self, w: &mut Word) {
        loop {
            match self.peek() {
                None => {
                    self.problem("a double quote is not closed");
                    return;
                }
                Some('"') => {
                    self.pos += 1;
                    return;
                }
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some('\n') => self.pos += 1,
                        Some(c @ ('$' | '`' | '"' | '\\')) => {
                            w.value.push(c);
                            self.pos += 1;
                        }
                        Some(_) | None => w.value.push('\\'),
                    }
                }
                Some('$') => self.dollar(w),
                Some('`') => self.backtick(w),
                Some(c) => {
                    w.value.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// At a `$`: a substitution, an expansion, or a plain dollar sign.
    fn dollar(&mut self, w: &mut Word) {
        match self.peek_at(1) {
            Some('(') if self.peek_at(2) == Some('(') => {
                self.problem("arithmetic expansion `$((...))` is not analysed");
                w.dynamic = true;
                self.pos += 1;
                // Skip the balanced parentheses so the rest of the line still reads.
                let _ = self.balanced_parens();
            }
            Some('(') => {
                self.pos += 1;
                self.substitution(w);
            }
            Some('{') => {
                w.dynamic = true;
                self.pos += 2;
                let start = self.pos;
                let mut depth = 1;
                while let Some(c) = self.peek() {
                    self.pos += 1;
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let inner: String = self.chars[start..self.pos.saturating_sub(1)]
                    .iter()
                    .collect();
                if depth != 0 {
                    self.problem("a `${` is not closed");
                } else if inner.contains("$(") || inner.contains('`') || inner.contains("<(") {
                    self.problem("a command inside `${...}` is not analysed");
                }
            }
            Some('\'') => {
                // ANSI-C quoting can spell any name (`$'\x72m'`): its value is unknown to us.
                w.dynamic = true;
                w.quoted = true;
                self.pos += 2;
                loop {
                    match self.peek() {
                        None => {
                            self.problem("a `$'` quote is not closed");
                            break;
                        }
                        Some('\\') => self.pos += 2,
                        Some('\'') => {
                            self.pos += 1;
                            break;
                        }
                        Some(_) => self.pos += 1,
                    }
                }
            }
            Some('"') => {
                w.quoted = true;
                self.pos += 2;
                self.double_quoted(w);
            }
            Some(c) if c.is_ascii_alphanumeric() || "_@*#?$!-".contains(c) => {
                w.dynamic = true;
                self.pos += 1;
                if c.is_ascii_alphabetic() || c == '_' {
                    while self
                        .peek()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        self.pos += 1;
                    }
                } else {
                    self.pos += 1;
                }
            }
            _ => {
                w.value.push('$');
                self.pos += 1;
            }
        }
    }

    /// At the `(` of `$(`, `<(` or `>(`: reads the commands inside.
    fn substitution(&mut self, w: &mut Word) {
        w.dynamic = true;
        match self.balanced_parens() {
            Some(inner) => parse_into(&inner, self.depth + 1, self.script),
            None => self.problem("a `(` is not closed"),
        }
    }

    /// At a `(`: the text up to its matching `)` (which is consumed), skipping quoted text.
    fn balanced_parens(&mut self) -> Option<String> {
        self.pos += 1;
        let start = self.pos;
        let mut depth = 1usize;
        while let Some(c) = self.peek() {
            match c {
                '\\' => self.pos += 2,
                '\'' => {
                    self.pos += 1;
                    while self.peek().is_some_and(|c| c != '\'') {
                        self.pos += 1;
                    }
                    self.pos += 1;
                }
                '"' => {
                    self.pos += 1;
                    while let Some(c) = self.peek() {
                        match c {
                            '\\' => self.pos += 2,
                            '"' => break,
                            _ => self.pos += 1,
                        }
                    }
                    self.pos += 1;
                }
                '(' => {
                    depth += 1;
                    self.pos += 1;
                }
                ')' => {
                    depth -= 1;
                    self.pos += 1;
                    if depth == 0 {
                        let end = self.pos - 1;
                        return Some(self.chars[start..end].iter().collect());
                    }
                }
                _ => self.pos += 1,
            }
        }
        self.pos = self.pos.min(self.chars.len());
        None
    }

    /// At a backtick: reads the commands up to the closing one.
    fn backtick(&mut self, w: &mut Word) {
        w.dynamic = true;
        self.pos += 1;
        let mut inner = String::new();
        loop {
            match self.peek() {
                None => {
                    self.problem("a backtick is not closed");
                    return;
                }
                Some('`') => {
                    self.pos += 1;
                    break;
                }
                Some('\\') => {
                    match self.peek_at(1) {
                        Some(c @ ('`' | '\\' | '$')) => inner.push(c),
                        Some(c) => {
                            inner.push('\\');
                            inner.push(c);
                        }
                        None => {}
                    }
                    self.pos += 2;
                }
                Some(c) => {
                    inner.push(c);
                    self.pos += 1;
                }
            }
        }
        parse_into(&inner, self.depth + 1, self.script);
    }
}

/// Words that open or close compound commands where a command would start.
fn reserved(word: &Word) -> Option<&'static str> {
    if word.quoted || word.dynamic {
        return None;
    }
    Some(match word.raw.as_str() {
        "if" => "if",
        "then" => "then",
        "else" => "else",
        "elif" => "elif",
        "fi" => "fi",
        "do" => "do",
        "done" => "done",
        "while" => "while",
        "until" => "until",
        "for" => "for",
        "select" => "select",
        "case" => "case",
        "esac" => "esac",
        "function" => "function",
        "coproc" => "coproc",
        "!" => "!",
        "{" => "{",
        "}" => "}",
        "((" => "((",
        _ => return None,
    })
}

/// Groups tokens into simple commands.
fn assemble(tokens: Vec<Token>, script: &mut Script) {
    let mut current = SimpleCommand::default();
    let mut parens = 0i64;
    let mut braces = 0i64;
    // Inside a `for NAME in WORDS` header: its words are data, not a command.
    let mut for_header = false;
    let finish = |current: &mut SimpleCommand, script: &mut Script| {
        let cmd = std::mem::take(current);
        if !cmd.words.is_empty() || cmd.redirects.iter().any(|r| !r.is_harmless()) {
            script.commands.push(cmd);
        }
    };
    for token in tokens {
        match token {
            Token::Op(op @ ("(" | ")")) => {
                if op == "(" && (!current.words.is_empty() || !current.redirects.is_empty())
                    || for_header
                {
                    script.problems.push(format!(
                        "`{op}` inside a command (a function, an array or arithmetic) is not analysed"
                    ));
                    finish(&mut current, script);
                    for_header = false;
                }
                finish(&mut current, script);
                if op == "(" {
                    parens += 1;
                } else {
                    parens -= 1;
                    if parens < 0 {
                        script.problems.push("a `)` is not opened".to_string());
                        parens = 0;
                    }
                }
            }
            Token::Op(_) => {
                finish(&mut current, script);
                for_header = false;
            }
            Token::Redirect(r) => current.redirects.push(r),
            Token::Word(w) => {
                if for_header {
                    continue;
                }
                if current.words.is_empty() {
                    match reserved(&w) {
                        Some("if" | "then" | "else" | "elif" | "do" | "while" | "until" | "!") => {
                            continue;
                        }
                        Some("fi" | "done") => continue,
                        Some("{") => {
                            braces += 1;
                            continue;
                        }
                        Some("}") => {
                            braces -= 1;
                            if braces < 0 {
                                script.problems.push("a `}` is not opened".to_string());
                                braces = 0;
                            }
                            continue;
                        }
                        Some("for") => {
                            for_header = true;
                            continue;
                        }
                        Some(other) => {
                            script.problems.push(format!("`{other}` is not analysed"));
                            continue;
                        }
                        None => {}
                    }
                }
                current.words.push(w);
            }
        }
    }
    finish(&mut current, script);
    if parens != 0 {
        script.problems.push("a `(` is not closed".to_string());
    }
    if braces != 0 {
        script.problems.push("a `{` is not closed".to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(src: &str) -> (Vec<Vec<String>>, Vec<String>) {
        let s = parse(src);
        (
            s.commands
                .iter()
                .map(|c| c.words.iter().map(|w| w.value.clone()).collect())
                .collect(),
            s.problems,
        )
    }

    #[test]
    fn splits_lists_pipelines_and_substitutions() {
        let (cmds, problems) =
            values("git add -A && git commit -m 'a; b' | tee x; echo $(date) `id`");
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = cmds.iter().map(|c| c[0].as_str()).collect();
        assert_eq!(names, ["git", "git", "tee", "echo", "date", "id"]);
        assert_eq!(cmds[1][3], "a; b");
    }

    #[test]
    fn reads_heredocs_and_their_substitutions() {
        let (cmds, problems) = values("cat <<EOF\nrm -rf /\n$(whoami)\nEOF\necho done");
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = cmds.iter().map(|c| c[0].as_str()).collect();
        assert_eq!(names, ["cat", "echo", "whoami"]);
        let (cmds, problems) = values("cat <<'EOF'\n$(whoami)\nEOF");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(cmds.len(), 1);
    }

    #[test]
    fn reports_what_it_does_not_read() {
        for src in [
            "case x in a) rm -rf /;; esac",
            "f() { rm -rf /; }",
            "echo $((1+2))",
            "echo 'open",
            "echo \"open",
            "(echo",
            "echo ${x:-$(rm -rf /)}",
            "a=(1 2)",
            "cat <<EOF\nno end",
        ] {
            assert!(!parse(src).problems.is_empty(), "{src}");
        }
    }

    #[test]
    fn control_flow_bodies_are_commands() {
        let (cmds, problems) = values(
            "if git diff --quiet; then echo clean; else rm -rf /; fi\nfor f in *.rs; do cat \"$f\"; done",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = cmds.iter().map(|c| c[0].as_str()).collect();
        assert_eq!(names, ["git", "echo", "rm", "cat"]);
    }
}
