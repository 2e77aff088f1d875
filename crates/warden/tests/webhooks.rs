//! Webhooks end to end, through the real binaries and clients: `curl` posts a GitHub
//! `issue_comment` delivery signed with `openssl dgst -sha256 -hmac` to `warden serve`, whose
//! rule files a task; the task runs warden's agent against a scripted model in its own
//! sandbox and pushes to a git server on the host (`testing_git`); a forged and a replayed
//! delivery start nothing; `warden webhook ls` and `warden webhook deliveries` show the rule
//! and what became of each delivery.
//!
//! Needs what `tasks.rs` needs (root or user namespaces, git), and curl and openssl.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Api, DataDir, WARDEN, serve_env, wait_for};
use warden_agent::model::testing::{ScriptedLlm, Turn};
use warden_server::testing_git::{
    GitServer, GitServerOptions, branch_commit, create_bare_repo, host_git,
};

const SECRET: &str = "e2e-github-webhook-secret-0123456789";

/// The config: the `default` template reaches the git server only; GitHub deliveries are
/// on, with one rule for `/warden` comments.
fn config(dir: &Path, git: &GitServer, secret_file: &Path) -> PathBuf {
    let port = git.addr().port();
    let path = dir.join("serve.toml");
    std::fs::write(
        &path,
        format!(
            r#"[templates.default]
shutdown_after = "1h"
[templates.default.policy]
profile = "default"
[templates.default.policy.network]
mode = "proxy"
allow_domains = ["localhost"]
allow_cidrs = ["127.0.0.0/8"]
allow_ports = [{port}]

[webhooks.github]
secret_file = "{}"

[[webhooks.rules]]
name = "fix-on-comment"
source = "github"
event = "issue_comment"
action = "created"
comment_prefix = "/warden"
base_branch = "main"
prompt = "{{{{ webhook.command }}}} (issue #{{{{ issue.number }}}}: {{{{ issue.title }}}})"
"#,
            secret_file.display()
        ),
    )
    .unwrap();
    path
}

/// `curl` posting `payload` as a GitHub delivery; `signature` is the header's value.
fn curl_github(
    url: &str,
    dir: &Path,
    delivery: &str,
    payload: &[u8],
    signature: &str,
) -> (u16, Value) {
    let body_file = dir.join(format!("payload-{delivery}.json"));
    std::fs::write(&body_file, payload).unwrap();
    let answer = dir.join(format!("answer-{delivery}.json"));
    let out = Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&answer)
        .args(["-w", "%{http_code}", "-X", "POST"])
        .arg(format!("{url}/webhooks/github"))
        .args(["-H", "Content-Type: application/json"])
        .args(["-H", "X-GitHub-Event: issue_comment"])
        .args(["-H", &format!("X-GitHub-Delivery: {delivery}")])
        .args(["-H", &format!("X-Hub-Signature-256: {signature}")])
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()))
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let text = std::fs::read_to_string(&answer).unwrap_or_default();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `sha256=<hex>` as GitHub computes it, by openssl.
fn openssl_signature(secret: &str, payload: &[u8], dir: &Path) -> String {
    let file = dir.join("to-sign");
    std::fs::write(&file, payload).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .arg(&file)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "HMAC-SHA2-256(file)= <hex>"
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().last().unwrap();
    assert_eq!(hex.len(), 64, "{text}");
    format!("sha256={hex}")
}

fn webhook_cli(url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(WARDEN)
        .arg("webhook")
        .args(args)
        .env("WARDEN_SERVER", url)
        .env("WARDEN_TOKEN", token)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_github_comment_runs_a_task_and_forgeries_start_nothing() {
    let repos = tempfile::tempdir().unwrap();
    create_bare_repo(repos.path(), "app.git", "main", &[("README.md", "hello\n")]).unwrap();
    let git = GitServer::start(repos.path(), GitServerOptions::default())
        .await
        .unwrap();
    let llm = ScriptedLlm::start(vec![
        Turn::tool_call(
            "toolu_1",
            "Bash",
            json!({"command": "printf 'fixed by a webhook\\n' > FIX.md"}),
        ),
        Turn::text("Wrote FIX.md."),
    ])
    .await;
    let data = DataDir::new();
    let secret_file = data.path().join("github-webhook-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let cfg = config(data.path(), &git, &secret_file);
    let server = serve_env(
        data.path(),
        &["--config", cfg.to_str().unwrap()],
        &[
            ("WARDEN_MODEL", "anthropic/claude-sonnet-4-5"),
            ("ANTHROPIC_BASE_URL", &llm.url()),
            ("ANTHROPIC_API_KEY", "test-key"),
            ("WARDEN_LOG", "info"),
        ],
    );
    let token = data.token();
    let api = Api::new(&server, Some(token.clone()));
    let work = tempfile::tempdir().unwrap();

    let payload = json!({
        "action": "created",
        "issue": {"number": 12, "title": "Add a FIX.md", "body": "Please."},
        "comment": {"body": "/warden write FIX.md", "author_association": "COLLABORATOR",
                    "user": {"login": "alice"}},
        "repository": {"full_name": "org/app",
                       "clone_url": format!("http://localhost:{}/app.git", git.addr().port())},
        "sender": {"login": "alice"},
    })
    .to_string();
    let signature = openssl_signature(SECRET, payload.as_bytes(), work.path());
    let delivery = "5a0e2d40-c9f1-11f0-8a1b-3e2f1a9b7c11";

    // A forged delivery: another secret's signature. 401, nothing started.
    let forged = openssl_signature("not-the-webhook-secret", payload.as_bytes(), work.path());
    let (code, answer) = curl_github(
        &server.url,
        work.path(),
        delivery,
        payload.as_bytes(),
        &forged,
    );
    assert_eq!(code, 401, "{answer}");
    assert!(!answer.to_string().contains(SECRET));
    assert_eq!(api.get("/v1/tasks").json()["tasks"], json!([]));

    // The real one.
    let (code, answer) = curl_github(
        &server.url,
        work.path(),
        delivery,
        payload.as_bytes(),
        &signature,
    );
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["outcome"], "accepted");
    let id = answer["task_ids"][0].as_str().unwrap().to_string();

    // Replayed: 409, still one task.
    let (code, answer) = curl_github(
        &server.url,
        work.path(),
        delivery,
        payload.as_bytes(),
        &signature,
    );
    assert_eq!(code, 409, "{answer}");

    let mut task = Value::Null;
    wait_for(
        &format!("task {id} to end"),
        Duration::from_secs(180),
        || {
            task = api.get(&format!("/v1/tasks/{id}")).json();
            ["SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELED"]
                .contains(&task["status"].as_str().unwrap_or(""))
        },
    );
    assert_eq!(task["status"], "SUCCEEDED", "{task}");
    assert_eq!(task["task"], "write FIX.md (issue #12: Add a FIX.md)");
    assert_eq!(task["base_branch"], "main");
    let bare = repos.path().join("app.git");
    let branch = task["new_branch"].as_str().unwrap();
    let pushed = branch_commit(&bare, branch).expect("the task pushed its branch");
    assert_eq!(
        host_git(&bare, &["show", &format!("{pushed}:FIX.md")]).unwrap(),
        "fixed by a webhook\n"
    );
    assert_eq!(
        api.get("/v1/tasks").json()["tasks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The CLI shows the rule (never the secret) and every delivery with its outcome.
    let ls = webhook_cli(&server.url, &token, &["ls"]);
    let ls_text = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success(), "{ls:?}");
    assert!(
        ls_text.contains("fix-on-comment") && ls_text.contains("/webhooks/github"),
        "{ls_text}"
    );
    assert!(!ls_text.contains(SECRET), "{ls_text}");
    let out = webhook_cli(&server.url, &token, &["deliveries"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for want in [
        "accepted",
        "rejected",
        "duplicate",
        &id,
        "issue_comment.created",
        delivery,
    ] {
        assert!(text.contains(want), "no `{want}` in:\n{text}");
    }
    let out = webhook_cli(
        &server.url,
        &token,
        &[
            "deliveries",
            "--outcome",
            "rejected",
            "--source",
            "github",
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rejected = list["deliveries"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{list}");
    assert_eq!(rejected[0]["status_code"], 401);
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not match"),
        "{list}"
    );
    // Bad arguments are usage errors, naming the allowed values.
    let bad = webhook_cli(&server.url, &token, &["deliveries", "--outcome", "lost"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("accepted, ignored, rejected, duplicate")
    );
    // The server logged the rejection with its reason.
    let logged = server.log.lock().unwrap().join("\n");
    assert!(
        logged.contains("webhook delivery rejected") && logged.contains("does not match"),
        "{logged}"
    );
    assert!(!logged.contains(SECRET));
    wait_for("the task's sandbox to go", Duration::from_secs(30), || {
        api.get("/v1/sandboxes")
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    });
}

/// A bad `[webhooks]` section stops `warden serve` at start with exit 64, naming the field
/// and never showing a secret.
#[test]
fn bad_webhook_config_is_a_usage_error_at_start() {
    let data = DataDir::new();
    let short = data.path().join("short-secret");
    std::fs::write(&short, "tiny-secret\n").unwrap();
    let cases = [
        (
            "[webhooks.github]\nsecret_env = \"WARDEN_TEST_UNSET_WEBHOOK_SECRET\"\n".to_string(),
            "$WARDEN_TEST_UNSET_WEBHOOK_SECRET is not set",
        ),
        (
            format!("[webhooks.github]\nsecret_file = \"{}\"\n", short.display()),
            "shorter than 16 characters",
        ),
        (
            "[webhooks.github]\nsecret = \"inline\"\n".to_string(),
            "unknown field `secret`",
        ),
        (
            "[webhooks.pagerduty]\nsecret_env = \"X\"\n[[webhooks.rules]]\nname = \"r\"\n\
             source = \"pagerduty\"\nevent_type = \"incident.triggered\"\nprompt = \"x\"\n"
                .to_string(),
            "`repo` is required",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let cfg = data.path().join(format!("bad-{i}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(WARDEN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .arg("--config")
            .arg(&cfg)
            .env_remove("WARDEN_TEST_UNSET_WEBHOOK_SECRET")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text}: {stderr}");
        assert!(stderr.contains(want), "{text}: {stderr}");
        assert!(!stderr.contains("tiny-secret"), "{stderr}");
    }
}
