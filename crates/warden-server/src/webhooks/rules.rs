//! Rules applied to a delivery: whether a rule matches (and if not, why), and the task it
//! files, its fields filled from the payload. Pure.
//!
//! Templates are MiniJinja: `{{ issue.title }}`, `{% for a in alerts %}...{% endfor %}`,
//! filters such as `default`, `join`, `truncate`. Chosen over a `{{ path }}` filler of our
//! own because Alertmanager groups several alerts and PagerDuty nests lists, which a prompt
//! wants to loop over; MiniJinja is sandboxed (no I/O, no code), built here without default
//! features, with undefined fields as errors (a template naming a field the payload lacks
//! rejects the delivery, naming the expression) and fuel bounding a render's work. Payload
//! text is only ever a value, never parsed as a template.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value, json};

use super::config::{Rule, Source};
use crate::tasks::model::TaskSubmission;

/// How much work one render may do (MiniJinja's fuel: about one unit per instruction).
const FUEL: u64 = 200_000;

/// A delivery, authenticated and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub source: Source,
    /// The sender's delivery id (computed for Alertmanager).
    pub delivery_id: String,
    /// GitHub: X-GitHub-Event; Alertmanager: the status; PagerDuty: event.event_type;
    /// generic: X-Webhook-Event, or empty.
    pub event: String,
    pub payload: Value,
}

impl Delivery {
    /// The event as listed: `issue_comment.created`, `firing`, `incident.triggered`.
    pub fn label(&self) -> String {
        match (
            &self.source,
            self.payload.get("action").and_then(Value::as_str),
        ) {
            (Source::Github, Some(action)) => format!("{}.{action}", self.event),
            _ => self.event.clone(),
        }
    }
}

/// What a rule makes of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It applies; `command` is the comment's text after the rule's prefix.
    Match { command: Option<String> },
    /// It does not, and why.
    Skip(String),
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Whether `rule` applies to `d`.
pub fn evaluate(rule: &Rule, d: &Delivery) -> Verdict {
    if rule.source() != d.source {
        return Verdict::Skip(format!("is for {}", rule.source));
    }
    let p = &d.payload;
    let skip = |m: String| Verdict::Skip(m);
    match &d.source {
        Source::Github => {
            let event = d.event.as_str();
            if rule.event.as_deref() != Some(event) {
                return skip(format!(
                    "event `{event}` is not `{}`",
                    rule.event.as_deref().unwrap_or("")
                ));
            }
            if let Some(want) = &rule.action {
                let got = str_at(p, "/action").unwrap_or("");
                if got != want {
                    return skip(format!("action `{got}` is not `{want}`"));
                }
            }
            if let Some(want) = &rule.repository {
                let got = str_at(p, "/repository/full_name").unwrap_or("");
                if !got.eq_ignore_ascii_case(want) {
                    return skip(format!("repository `{got}` is not `{want}`"));
                }
            }
            if let Some(want) = rule.pull_request {
                let on_pr = p.pointer("/issue/pull_request").is_some();
                if on_pr != want {
                    return skip(
                        if on_pr {
                            "the comment is on a pull request, not an issue"
                        } else {
                            "the comment is on an issue, not a pull request"
                        }
                        .into(),
                    );
                }
            }
            // Whose words would reach the agent: the comment's, issue's or pull request's
            // author. Push needs write access, so it has no such check.
            let author_of = match event {
                "issue_comment" | "pull_request_review_comment" => Some("/comment"),
                "issues" => Some("/issue"),
                "pull_request" => Some("/pull_request"),
                _ => None,
            };
            if let (Some(obj), Some(allowed)) = (author_of, &rule.author_association) {
                let login = str_at(p, &format!("{obj}/user/login")).unwrap_or("?");
                match str_at(p, &format!("{obj}/author_association")) {
                    Some(a) if allowed.iter().any(|x| x == a) => {}
                    Some(a) => {
                        return skip(format!(
                            "author `{login}` is {a}, not one of {}",
                            allowed.join(", ")
                        ));
                    }
                    None => {
                        return skip(format!(
                            "the payload has no {}/author_association",
                            &obj[1..]
                        ));
                    }
                }
            }
            if let Some(prefix) = &rule.comment_prefix {
                let body = str_at(p, "/comment/body").unwrap_or("").trim_start();
                let rest = body.strip_prefix(prefix.as_str());
                match rest {
                    Some(r) if r.is_empty() || r.starts_with(char::is_whitespace) => {
                        return Verdict::Match {
                            command: Some(r.trim().to_string()),
                        };
                    }
                    _ => return skip(format!("the comment does not start with `{prefix}`")),
                }
            }
            Verdict::Match { command: None }
        }
        Source::Alertmanager => {
            if let Some(want) = &rule.status {
                let got = str_at(p, "/status").unwrap_or("");
                if got != want {
                    return skip(format!("status `{got}` is not `{want}`"));
                }
            }
            let common = |k: &str| {
                p.get("commonLabels")
                    .and_then(|l| l.get(k))
                    .and_then(Value::as_str)
            };
            if let Some(want) = &rule.alertname
                && common("alertname") != Some(want.as_str())
            {
                return skip(format!(
                    "commonLabels.alertname `{}` is not `{want}`",
                    common("alertname").unwrap_or("")
                ));
            }
            for (k, want) in &rule.labels {
                if common(k) != Some(want.as_str()) {
                    return skip(format!(
                        "commonLabels.{k} `{}` is not `{want}`",
                        common(k).unwrap_or("")
                    ));
                }
            }
            Verdict::Match { command: None }
        }
        Source::Pagerduty => {
            if let Some(want) = &rule.event_type
                && d.event != *want
            {
                return skip(format!("event_type `{}` is not `{want}`", d.event));
            }
            Verdict::Match { command: None }
        }
        Source::Generic(_) => {
            for (pointer, want) in &rule.matches {
                match p.pointer(pointer) {
                    Some(got) if got == want => {}
                    Some(got) => {
                        return skip(format!("{pointer} is {got}, not {want}"));
                    }
                    None => return skip(format!("{pointer} is missing")),
                }
            }
            Verdict::Match { command: None }
        }
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(50);
    env
}

/// Checks a template's syntax (at start); the error names `field`.
pub fn check_template(field: &str, source: &str) -> Result<(), String> {
    environment()
        .template_from_str(source)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "`{field}` is not a valid template: {}",
                describe(&e, source)
            )
        })
}

/// A MiniJinja error in one line, quoting the template's expression when it has a span.
fn describe(e: &minijinja::Error, source: &str) -> String {
    let mut out = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(r) = e.range()
        && let Some(expr) = source.get(r)
    {
        out.push_str(&format!(" at `{expr}`"));
    }
    if let Some(line) = e.line() {
        out.push_str(&format!(" (line {line})"));
    }
    out
}

/// The variables a template sees: the payload's top-level fields, the whole payload as
/// `payload`, and `webhook` (source, event, delivery_id, and command when a comment prefix
/// matched).
pub fn context(d: &Delivery, command: Option<&str>) -> Value {
    let mut ctx = match &d.payload {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut webhook = json!({
        "source": d.source.to_string(),
        "event": d.event,
        "delivery_id": d.delivery_id,
    });
    if let Some(c) = command {
        webhook["command"] = json!(c);
    }
    ctx.insert("payload".into(), d.payload.clone());
    ctx.insert("webhook".into(), webhook);
    Value::Object(ctx)
}

/// Fills one template; the error names the field and the expression.
pub fn render(field: &str, source: &str, ctx: &Value) -> Result<String, String> {
    let env = environment();
    let value = minijinja::Value::from(minijinja::value::Serde(ctx));
    env.render_str(source, value)
        .map_err(|e| format!("`{field}`: {}", describe(&e, source)))
}

/// The idempotency key of the task a rule files for a delivery; hashed when longer than a
/// key may be (a long generic hook name and delivery id).
pub fn idempotency_key(d: &Delivery, rule: &str) -> String {
    use sha2::Digest;
    let key = format!("webhook:{}:{}:{rule}", d.source, d.delivery_id);
    if key.len() <= 200 {
        key
    } else {
        format!(
            "webhook:{}",
            hex::encode(sha2::Sha256::digest(key.as_bytes()))
        )
    }
}

/// The task `rule` files for `d` (which it matched with `command`).
pub fn submission(
    rule: &Rule,
    d: &Delivery,
    command: Option<&str>,
) -> Result<TaskSubmission, String> {
    let ctx = context(d, command);
    let repo_template = rule.repo.as_deref().unwrap_or("");
    let repo = render("repo", repo_template, &ctx)?.trim().to_string();
    let task = render("prompt", &rule.prompt, &ctx)?;
    if task.trim().is_empty() {
        return Err("`prompt` rendered empty".into());
    }
    let base_branch = match &rule.base_branch {
        Some(b) => Some(render("base_branch", b, &ctx)?.trim().to_string()),
        None => None,
    };
    Ok(TaskSubmission {
        repo,
        task,
        base_branch,
        new_branch: None,
        agent: rule.agent.clone(),
        model: rule.model.clone(),
        template: rule.template.clone(),
        timeout: None,
        env: BTreeMap::new(),
        idempotency_key: Some(idempotency_key(d, &rule.name)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Rule {
        let mut r: Rule =
            toml::from_str(&format!("name = \"r\"\nprompt = \"p\"\n{toml_text}")).unwrap();
        if r.source == "github" && r.author_association.is_none() {
            r.author_association = Some(
                super::super::config::DEFAULT_AUTHOR_ASSOCIATIONS
                    .map(String::from)
                    .to_vec(),
            );
        }
        r
    }

    fn gh(event: &str, payload: Value) -> Delivery {
        Delivery {
            source: Source::Github,
            delivery_id: "d-1".into(),
            event: event.into(),
            payload,
        }
    }

    fn comment(body: &str, assoc: &str, on_pr: bool) -> Value {
        let mut issue = json!({"number": 7, "title": "Tests fail", "body": "They do."});
        if on_pr {
            issue["pull_request"] = json!({"url": "https://api.github.com/x"});
        }
        json!({
            "action": "created",
            "issue": issue,
            "comment": {"body": body, "author_association": assoc, "user": {"login": "alice"}},
            "repository": {"full_name": "Org/App", "clone_url": "https://github.com/Org/App.git"},
        })
    }

    fn is_match(v: &Verdict) -> bool {
        matches!(v, Verdict::Match { .. })
    }

    /// A rule's TOML, a delivery, and the command it matches with or why it skips.
    type GithubCase<'a> = (&'a str, Delivery, Result<Option<&'a str>, &'a str>);

    #[test]
    fn github_rules() {
        let base = "source = \"github\"\nevent = \"issue_comment\"\n";
        let cases: &[GithubCase] = &[
            (
                base,
                gh("issue_comment", comment("hi", "OWNER", false)),
                Ok(None),
            ),
            (
                base,
                gh("push", comment("hi", "OWNER", false)),
                Err("event `push`"),
            ),
            (
                &format!("{base}action = \"edited\""),
                gh("issue_comment", comment("hi", "OWNER", false)),
                Err("action `created` is not `edited`"),
            ),
            (
                &format!("{base}repository = \"org/app\""),
                gh("issue_comment", comment("hi", "MEMBER", false)),
                Ok(None),
            ),
            (
                &format!("{base}repository = \"org/other\""),
                gh("issue_comment", comment("hi", "MEMBER", false)),
                Err("repository `Org/App`"),
            ),
            // Strangers are ignored by default, and say so.
            (
                base,
                gh("issue_comment", comment("/warden fix it", "NONE", false)),
                Err("author `alice` is NONE, not one of OWNER, MEMBER, COLLABORATOR"),
            ),
            (
                base,
                gh("issue_comment", comment("hi", "CONTRIBUTOR", false)),
                Err("CONTRIBUTOR"),
            ),
            (
                &format!("{base}author_association = [\"CONTRIBUTOR\"]"),
                gh("issue_comment", comment("hi", "CONTRIBUTOR", false)),
                Ok(None),
            ),
            (
                base,
                gh("issue_comment", json!({"comment": {"body": "x"}})),
                Err("no comment/author_association"),
            ),
            (
                &format!("{base}comment_prefix = \"/warden\""),
                gh(
                    "issue_comment",
                    comment("  /warden fix the tests \n", "COLLABORATOR", false),
                ),
                Ok(Some("fix the tests")),
            ),
            (
                &format!("{base}comment_prefix = \"/warden\""),
                gh("issue_comment", comment("/warden", "OWNER", false)),
                Ok(Some("")),
            ),
            (
                &format!("{base}comment_prefix = \"/warden\""),
                gh("issue_comment", comment("/wardenx go", "OWNER", false)),
                Err("does not start with `/warden`"),
            ),
            (
                &format!("{base}comment_prefix = \"/warden\""),
                gh(
                    "issue_comment",
                    comment("please /warden go", "OWNER", false),
                ),
                Err("does not start with"),
            ),
            (
                &format!("{base}pull_request = true"),
                gh("issue_comment", comment("x", "OWNER", true)),
                Ok(None),
            ),
            (
                &format!("{base}pull_request = true"),
                gh("issue_comment", comment("x", "OWNER", false)),
                Err("on an issue, not a pull request"),
            ),
            (
                &format!("{base}pull_request = false"),
                gh("issue_comment", comment("x", "OWNER", true)),
                Err("on a pull request"),
            ),
            (
                "source = \"github\"\nevent = \"push\"",
                gh("push", json!({"ref": "refs/heads/main", "repository": {}})),
                Ok(None),
            ),
            (
                "source = \"github\"\nevent = \"issues\"\naction = \"opened\"",
                gh(
                    "issues",
                    json!({"action": "opened", "issue": {"author_association": "MEMBER"}}),
                ),
                Ok(None),
            ),
            (
                "source = \"github\"\nevent = \"pull_request\"",
                gh(
                    "pull_request",
                    json!({"action": "opened", "pull_request": {"author_association": "NONE", "user": {"login": "mallory"}}}),
                ),
                Err("author `mallory` is NONE"),
            ),
            (
                "source = \"alertmanager\"",
                gh("issue_comment", comment("hi", "OWNER", false)),
                Err("is for alertmanager"),
            ),
        ];
        for (text, d, want) in cases {
            let got = evaluate(&rule(text), d);
            match (want, &got) {
                (Ok(cmd), Verdict::Match { command }) => {
                    assert_eq!(command.as_deref(), *cmd, "{text}")
                }
                (Err(why), Verdict::Skip(m)) => assert!(m.contains(why), "{text}: {m}"),
                _ => panic!("{text}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn alertmanager_pagerduty_and_generic_rules() {
        let am = |status: &str, labels: Value| Delivery {
            source: Source::Alertmanager,
            delivery_id: "am-1".into(),
            event: status.into(),
            payload: json!({"status": status, "commonLabels": labels, "alerts": []}),
        };
        let pd = |t: &str| Delivery {
            source: Source::Pagerduty,
            delivery_id: "01X".into(),
            event: t.into(),
            payload: json!({"event": {"id": "01X", "event_type": t}}),
        };
        let generic = |p: Value| Delivery {
            source: Source::Generic("deploys".into()),
            delivery_id: "g1".into(),
            event: String::new(),
            payload: p,
        };
        let crit = json!({"alertname": "HighLatency", "severity": "critical"});
        let cases: Vec<(&str, Delivery, Result<(), &str>)> = vec![
            (
                "source = \"alertmanager\"",
                am("firing", crit.clone()),
                Ok(()),
            ),
            (
                "source = \"alertmanager\"\nstatus = \"firing\"",
                am("resolved", crit.clone()),
                Err("status `resolved`"),
            ),
            (
                "source = \"alertmanager\"\nalertname = \"HighLatency\"",
                am("firing", crit.clone()),
                Ok(()),
            ),
            (
                "source = \"alertmanager\"\nalertname = \"DiskFull\"",
                am("firing", crit.clone()),
                Err("alertname `HighLatency` is not `DiskFull`"),
            ),
            (
                "source = \"alertmanager\"\nlabels = { severity = \"critical\" }",
                am("firing", crit.clone()),
                Ok(()),
            ),
            (
                "source = \"alertmanager\"\nlabels = { severity = \"critical\" }",
                am("firing", json!({"alertname": "X"})),
                Err("commonLabels.severity"),
            ),
            (
                "source = \"pagerduty\"",
                pd("incident.acknowledged"),
                Ok(()),
            ),
            (
                "source = \"pagerduty\"\nevent_type = \"incident.triggered\"",
                pd("incident.triggered"),
                Ok(()),
            ),
            (
                "source = \"pagerduty\"\nevent_type = \"incident.triggered\"",
                pd("incident.resolved"),
                Err("event_type `incident.resolved`"),
            ),
            (
                "source = \"generic:deploys\"\nmatch = { \"/env\" = \"prod\", \"/n\" = 3 }",
                generic(json!({"env": "prod", "n": 3})),
                Ok(()),
            ),
            (
                "source = \"generic:deploys\"\nmatch = { \"/env\" = \"prod\" }",
                generic(json!({"env": "dev"})),
                Err("/env is \"dev\", not \"prod\""),
            ),
            (
                "source = \"generic:deploys\"\nmatch = { \"/a/b\" = true }",
                generic(json!({"a": {}})),
                Err("/a/b is missing"),
            ),
            (
                "source = \"generic:other\"",
                generic(json!({})),
                Err("is for generic:other"),
            ),
        ];
        for (text, d, want) in cases {
            let got = evaluate(&rule(text), &d);
            match (want, &got) {
                (Ok(()), v) => assert!(is_match(v), "{text}: {v:?}"),
                (Err(why), Verdict::Skip(m)) => assert!(m.contains(why), "{text}: {m}"),
                (Err(why), v) => panic!("{text}: want a skip ({why}), got {v:?}"),
            }
        }
    }

    #[test]
    fn prompts_are_filled_from_the_payload() {
        let d = gh("issue_comment", comment("/warden fix it", "OWNER", false));
        let ctx = context(&d, Some("fix it"));
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("{{ issue.title }}", Ok("Tests fail")),
            (
                "#{{ issue.number }} by {{ comment.user.login }}",
                Ok("#7 by alice"),
            ),
            (
                "{{ webhook.command }} ({{ webhook.source }} {{ webhook.event }} {{ webhook.delivery_id }})",
                Ok("fix it (github issue_comment d-1)"),
            ),
            ("{{ payload.repository.full_name | lower }}", Ok("org/app")),
            ("{{ issue.milestone | default('none') }}", Ok("none")),
            (
                "{% if issue.pull_request is defined %}PR{% else %}issue{% endif %}",
                Ok("issue"),
            ),
            // A field the payload lacks is an error naming the expression.
            ("Fix {{ issue.titel }}", Err("at `issue.titel`")),
            ("{{ nothing.at.all }}", Err("undefined")),
            (
                "{% for x in issue.labels %}{{ x }}{% endfor %}",
                Err("undefined"),
            ),
        ];
        for (template, want) in cases {
            let got = render("prompt", template, &ctx);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{template}"),
                (Err(w), Err(g)) => assert!(
                    g.contains(w) && g.starts_with("`prompt`"),
                    "{template}: {g}"
                ),
                _ => panic!("{template}: want {want:?}, got {got:?}"),
            }
        }
        // The payload's text is a value, never a template.
        let evil = gh(
            "issue_comment",
            comment(
                "{{ webhook.delivery_id }}{% for i in range(10) %}x{% endfor %}",
                "OWNER",
                false,
            ),
        );
        let got = render("prompt", "{{ comment.body }}", &context(&evil, None)).unwrap();
        assert_eq!(
            got,
            "{{ webhook.delivery_id }}{% for i in range(10) %}x{% endfor %}"
        );
        // Loops over Alertmanager's alerts.
        let am = Delivery {
            source: Source::Alertmanager,
            delivery_id: "am-1".into(),
            event: "firing".into(),
            payload: json!({"alerts": [{"labels": {"instance": "a"}}, {"labels": {"instance": "b"}}]}),
        };
        let got = render(
            "prompt",
            "{% for a in alerts %}{{ a.labels.instance }};{% endfor %}",
            &context(&am, None),
        )
        .unwrap();
        assert_eq!(got, "a;b;");
        // Runaway templates run out of fuel.
        let e = render(
            "prompt",
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
            &ctx,
        )
        .unwrap_err();
        assert!(e.contains("fuel"), "{e}");
    }

    #[test]
    fn submissions_carry_the_rule_task_fields() {
        let r = rule(
            "source = \"github\"\nevent = \"issue_comment\"\nrepo = \"{{ repository.clone_url }}\"\n\
             base_branch = \"{{ 'release' }}\"\nagent = \"codex\"\nmodel = \"openai/gpt-5\"\ntemplate = \"big\"",
        );
        let d = gh("issue_comment", comment("/warden x", "OWNER", false));
        let s = submission(&r, &d, Some("x")).unwrap();
        assert_eq!(s.repo, "https://github.com/Org/App.git");
        assert_eq!(s.task, "p");
        assert_eq!(s.base_branch.as_deref(), Some("release"));
        assert_eq!(s.agent.as_deref(), Some("codex"));
        assert_eq!(s.model.as_deref(), Some("openai/gpt-5"));
        assert_eq!(s.template.as_deref(), Some("big"));
        assert_eq!(s.idempotency_key.as_deref(), Some("webhook:github:d-1:r"));
        let mut bad = r.clone();
        bad.prompt = "{{ issue.nope }}".into();
        let e = submission(&bad, &d, None).unwrap_err();
        assert!(e.contains("`prompt`") && e.contains("issue.nope"), "{e}");
        assert_eq!(
            d.label(),
            "issue_comment.created",
            "GitHub events are listed with their action"
        );
    }
}
