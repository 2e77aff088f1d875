//! The git workflow of a task (`tasks::git`) against real sandboxes: the local driver (a
//! detached `warden run` holding sandboxd, with the template's egress policy and credential
//! routes) and a git smart-HTTP server on the host (`testing_git`: Debian git's
//! `http-backend`). Clones, branches, commits and pushes happen inside the sandbox, through
//! its egress proxy.
//!
//! Needs root or unprivileged user namespaces, Landlock and seccomp (like every sandbox test),
//! `git` on the host, and the `warden` binary: `WARDEN_EXE`, else the one next to this test's
//! target directory, built with `cargo build -p warden` when missing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use warden_sandbox::{
    ByteStream, ClaimRequest, CreateRequest, Driver, DriverError, ExecSession, LocalConfig,
    LocalDriver, MemoryStore, PoolSpec, PoolStatus, RuntimeConn, SandboxEvent, SandboxInfo,
    Template,
};
use warden_sandboxd::proto::{Command, DirListing, ExecRequest, ExecResult};
use warden_server::tasks::git::{
    self, CHECKOUT_DIR, GitConfig, GitError, GitLog, GitStream, PushResult, Remote,
};
use warden_server::tasks::model::{TaskDefaults, TaskSpec, TaskSubmission};
#[path = "support/local_sandboxes.rs"]
#[allow(dead_code)] // task_git uses the binary and the data directory only
mod local_sandboxes;

use local_sandboxes::{DataDir, warden_exe};
use warden_server::testing_git::{
    Credentials, GitServer, GitServerOptions, branch_commit, commit_files, create_bare_repo,
    host_git, install_hook,
};

/// A driver that records every exec it is asked for (argv and environment), so a test can
/// check what the sandbox was handed.
#[derive(Debug)]
struct RecordingDriver {
    inner: LocalDriver,
    execs: Mutex<Vec<ExecRequest>>,
}

impl RecordingDriver {
    fn execs(&self) -> Vec<ExecRequest> {
        self.execs.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Driver for RecordingDriver {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn recover(&self) -> Result<Vec<SandboxInfo>, DriverError> {
        self.inner.recover().await
    }
    async fn put_template(&self, template: Template) -> Result<(), DriverError> {
        self.inner.put_template(template).await
    }
    async fn delete_template(&self, name: &str) -> Result<(), DriverError> {
        self.inner.delete_template(name).await
    }
    async fn templates(&self) -> Vec<Template> {
        self.inner.templates().await
    }
    async fn put_pool(&self, pool: PoolSpec) -> Result<(), DriverError> {
        self.inner.put_pool(pool).await
    }
    async fn delete_pool(&self, name: &str) -> Result<(), DriverError> {
        self.inner.delete_pool(name).await
    }
    async fn pools(&self) -> Vec<PoolStatus> {
        self.inner.pools().await
    }
    async fn create(&self, request: CreateRequest) -> Result<SandboxInfo, DriverError> {
        self.inner.create(request).await
    }
    async fn claim(&self, request: ClaimRequest) -> Result<SandboxInfo, DriverError> {
        self.inner.claim(request).await
    }
    async fn get(&self, id: &str) -> Result<SandboxInfo, DriverError> {
        self.inner.get(id).await
    }
    async fn list(&self) -> Vec<SandboxInfo> {
        self.inner.list().await
    }
    async fn delete(&self, id: &str) -> Result<(), DriverError> {
        self.inner.delete(id).await
    }
    async fn suspend(&self, id: &str) -> Result<SandboxInfo, DriverError> {
        self.inner.suspend(id).await
    }
    async fn resume(&self, id: &str) -> Result<SandboxInfo, DriverError> {
        self.inner.resume(id).await
    }
    async fn set_shutdown(
        &self,
        id: &str,
        at: Option<SystemTime>,
    ) -> Result<SandboxInfo, DriverError> {
        self.inner.set_shutdown(id, at).await
    }
    async fn exec(&self, id: &str, request: ExecRequest) -> Result<ExecResult, DriverError> {
        self.execs.lock().unwrap().push(request.clone());
        self.inner.exec(id, request).await
    }
    async fn exec_stream(
        &self,
        id: &str,
        request: ExecRequest,
    ) -> Result<ExecSession, DriverError> {
        self.execs.lock().unwrap().push(request.clone());
        self.inner.exec_stream(id, request).await
    }
    async fn read_file(&self, id: &str, path: &str) -> Result<ByteStream, DriverError> {
        self.inner.read_file(id, path).await
    }
    async fn write_file(
        &self,
        id: &str,
        path: &str,
        mode: Option<u32>,
        body: ByteStream,
    ) -> Result<(), DriverError> {
        self.inner.write_file(id, path, mode, body).await
    }
    async fn list_dir(&self, id: &str, path: &str) -> Result<DirListing, DriverError> {
        self.inner.list_dir(id, path).await
    }
    async fn exists(&self, id: &str, path: &str) -> Result<bool, DriverError> {
        self.inner.exists(id, path).await
    }
    async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<(), DriverError> {
        self.inner.remove(id, path, recursive).await
    }
    async fn mkdir(&self, id: &str, path: &str) -> Result<(), DriverError> {
        self.inner.mkdir(id, path).await
    }
    async fn connect_runtime(&self, id: &str, port: u16) -> Result<RuntimeConn, DriverError> {
        self.inner.connect_runtime(id, port).await
    }
    fn events(&self) -> tokio::sync::broadcast::Receiver<SandboxEvent> {
        self.inner.events()
    }
}

/// One sandbox made from a template with `policy`, and the git server it talks to.
struct Fixture {
    driver: Arc<RecordingDriver>,
    sandbox: String,
    server: GitServer,
    /// The bare repositories the server serves.
    repos: PathBuf,
    /// What the workflow logged.
    logs: Arc<Mutex<Vec<GitLog>>>,
    data: DataDir,
}

impl Fixture {
    /// Starts the git server (with `credentials`, if any), then a sandbox whose template
    /// policy is `policy(server port, data directory)`.
    async fn new(
        credentials: Option<Credentials>,
        policy: impl FnOnce(u16, &Path) -> String,
    ) -> Fixture {
        let data = DataDir::new("wd-git-");
        let repos = data.path().join("repos");
        std::fs::create_dir_all(&repos).unwrap();
        let server = GitServer::start(
            &repos,
            GitServerOptions {
                credentials,
                host_address: false,
            },
        )
        .await
        .unwrap();
        let policy = policy(server.addr().port(), data.path());
        let cfg = LocalConfig::with_exe(data.path(), warden_exe());
        let driver = Arc::new(RecordingDriver {
            inner: LocalDriver::new(cfg, Arc::new(MemoryStore::new())).unwrap(),
            execs: Mutex::new(Vec::new()),
        });
        driver
            .put_template(Template {
                name: "tasks".into(),
                policy: toml::from_str(&policy).unwrap(),
                shutdown_after: Some(Duration::from_secs(600)),
                idle_timeout: None,
                workspace_quota: None,
            })
            .await
            .unwrap();
        let info = driver
            .create(CreateRequest {
                template: "tasks".into(),
                ..CreateRequest::default()
            })
            .await
            .unwrap();
        Fixture {
            driver,
            sandbox: info.id,
            server,
            repos,
            logs: Arc::new(Mutex::new(Vec::new())),
            data,
        }
    }

    fn log(&self) -> impl Fn(GitLog) + Send + Sync + use<> {
        let logs = self.logs.clone();
        move |l: GitLog| logs.lock().unwrap().push(l)
    }

    fn log_text(&self) -> String {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| format!("[{}] {}", l.stream, l.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn clone(&self, spec: &TaskSpec, cfg: &GitConfig) -> Result<git::Checkout, GitError> {
        git::clone_and_branch(self.driver.as_ref(), &self.sandbox, spec, cfg, &self.log()).await
    }

    async fn push(
        &self,
        spec: &TaskSpec,
        cfg: &GitConfig,
        message: &str,
    ) -> Result<PushResult, GitError> {
        git::commit_and_push(
            self.driver.as_ref(),
            &self.sandbox,
            spec,
            cfg,
            message,
            &self.log(),
        )
        .await
    }

    /// A shell command in the sandbox, standing in for the agent; must succeed.
    async fn agent(&self, script: &str) -> String {
        let mut req = ExecRequest::new(Command::Shell(script.into()));
        req.cwd = Some(CHECKOUT_DIR.into());
        req.timeout_ms = Some(60_000);
        let r = self.driver.inner.exec(&self.sandbox, req).await.unwrap();
        assert_eq!(
            r.exit_code, 0,
            "`{script}` failed: {}{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// A command in the sandbox, not recorded; its result.
    async fn run(&self, argv: &[&str], cwd: Option<&str>) -> ExecResult {
        let mut req = ExecRequest::new(Command::Argv(argv.iter().map(|a| a.to_string()).collect()));
        req.cwd = cwd.map(String::from);
        req.timeout_ms = Some(60_000);
        self.driver.inner.exec(&self.sandbox, req).await.unwrap()
    }

    /// Deletes the sandbox and waits until nothing of it runs.
    async fn finish(self) {
        let dir = self.driver.inner.sandbox_dir(&self.sandbox);
        self.driver.delete(&self.sandbox).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while dir.exists() {
            assert!(
                Instant::now() < deadline,
                "sandbox {} remains",
                self.sandbox
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(self.server);
        drop(self.data);
    }
}

/// A sandbox that reaches the host's loopback (where the git server is) through its proxy,
/// on the server's port only.
fn direct_policy(port: u16, _: &Path) -> String {
    format!(
        "[network]\nmode = \"proxy\"\nallow_cidrs = [\"127.0.0.1/32\"]\nallow_ports = [{port}]\n"
    )
}

fn spec(repo: &str, base: Option<&str>, new_branch: &str) -> TaskSpec {
    TaskSubmission {
        repo: repo.into(),
        task: "make the change".into(),
        base_branch: base.map(String::from),
        new_branch: Some(new_branch.into()),
        ..TaskSubmission::default()
    }
    .validate("task-gittest", &TaskDefaults::default())
    .unwrap()
}

fn config() -> GitConfig {
    GitConfig {
        author_name: "Task Bot".into(),
        author_email: "task-bot@example.com".into(),
        ..GitConfig::default()
    }
}

/// `git log -1 --format=FORMAT COMMIT` in a bare repository of the host.
fn show(bare: &Path, format: &str, commit: &str) -> String {
    host_git(
        bare,
        &["log", "-1", &format!("--format={format}"), commit, "--"],
    )
    .unwrap()
    .trim_end()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_branch_commit_and_push_through_the_proxy() {
    let fx = Fixture::new(None, direct_policy).await;
    let bare = create_bare_repo(&fx.repos, "app.git", "main", &[("README.md", "hello\n")]).unwrap();
    let base = commit_files(
        &bare,
        "main",
        Some("main"),
        &[("src/lib.rs", "// v2\n")],
        "Second",
    )
    .unwrap();
    commit_files(
        &bare,
        "dev",
        Some("main"),
        &[("dev.txt", "dev\n")],
        "Dev work",
    )
    .unwrap();
    let spec = spec(&fx.server.url("app.git"), Some("main"), "warden/feature-1");
    let cfg = config();

    let checkout = fx
        .clone(&spec, &cfg)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fx.log_text()));
    assert_eq!(checkout.dir, CHECKOUT_DIR);
    assert_eq!(checkout.base_branch, "main");
    assert_eq!(checkout.base_commit.as_deref(), Some(base.as_str()));
    assert_eq!(checkout.new_branch, "warden/feature-1");
    assert_eq!(
        checkout.remote,
        Remote::Proxy {
            url: fx.server.url("app.git")
        }
    );
    let log = fx.log_text();
    assert!(
        log.contains("[command] git clone --no-tags --single-branch --depth 1 --branch main --"),
        "{log}"
    );
    // Only the base branch, shallow, on the new branch.
    let branches = fx
        .run(
            &["git", "branch", "-a", "--format=%(refname)"],
            Some(CHECKOUT_DIR),
        )
        .await;
    assert_eq!(
        branches.stdout.lines().collect::<Vec<_>>(),
        [
            "refs/heads/main",
            "refs/heads/warden/feature-1",
            "refs/remotes/origin/HEAD",
            "refs/remotes/origin/main"
        ],
        "{branches:?}"
    );
    assert!(
        fx.driver
            .exists(&fx.sandbox, "repo/.git/shallow")
            .await
            .unwrap()
    );

    // The agent: edits, and config that would send our push elsewhere or run its own code.
    fx.agent(
        "echo 'new feature' > FEATURE.md && rm README.md && \
         git config url.http://127.0.0.1:9/.pushInsteadOf http:// && \
         git config core.fsmonitor 'touch /tmp/fsmonitor-ran; false' && \
         git config include.path /tmp/evil.config",
    )
    .await;
    let message = "Add the feature\n\n# What changed\n\n- FEATURE.md added\n";
    let result = fx
        .push(&spec, &cfg, message)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fx.log_text()));
    let PushResult::Pushed { commit } = result else {
        panic!("expected a push, got {result:?}\n{}", fx.log_text());
    };
    assert_eq!(commit.len(), 40, "{commit}");
    assert_eq!(
        branch_commit(&bare, "warden/feature-1").as_deref(),
        Some(commit.as_str())
    );
    assert_eq!(
        show(&bare, "%an <%ae>|%cn <%ce>|%P", &commit),
        format!("Task Bot <task-bot@example.com>|Task Bot <task-bot@example.com>|{base}")
    );
    assert_eq!(show(&bare, "%B", &commit), message.trim_end());
    let files = host_git(&bare, &["ls-tree", "-r", "--name-only", &commit]).unwrap();
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        ["FEATURE.md", "src/lib.rs"]
    );
    // The base branch is untouched, the fsmonitor never ran.
    assert_eq!(branch_commit(&bare, "main").as_deref(), Some(base.as_str()));
    let ran = fx.run(&["test", "-e", "/tmp/fsmonitor-ran"], None).await;
    assert_ne!(ran.exit_code, 0, "the agent's fsmonitor ran in our git");
    assert!(
        fx.server
            .requests()
            .iter()
            .any(|r| r.is_push() && r.status == 200)
    );
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_route_adds_the_token_the_sandbox_never_sees() {
    let token = format!(
        "tok-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let token_file = {
        let token = token.clone();
        move |data: &Path| {
            use std::os::unix::fs::PermissionsExt;
            let file = data.join("git-token");
            std::fs::write(&file, &token).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            file
        }
    };
    let fx = Fixture::new(
        Some(Credentials::Basic {
            username: "x-access-token".into(),
            password: token.clone(),
        }),
        |port, data| {
            format!(
                "[network]\nmode = \"proxy\"\n\
                 [routes.git]\nkind = \"git\"\nupstream = \"http://127.0.0.1:{port}\"\n\
                 credential = {{ file = \"{}\" }}\n",
                token_file(data).display()
            )
        },
    )
    .await;
    let bare = create_bare_repo(
        &fx.repos,
        "private.git",
        "main",
        &[("README.md", "secret sauce\n")],
    )
    .unwrap();
    let spec = spec(&fx.server.url("private.git"), None, "warden/routed");
    let cfg = config();

    let checkout = fx
        .clone(&spec, &cfg)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fx.log_text()));
    assert_eq!(
        checkout.remote,
        Remote::Route {
            route: "git".into(),
            url: "http://127.0.0.1:3128/git/private.git".into()
        }
    );
    assert_eq!(checkout.base_branch, "main");
    fx.agent("echo routed > ROUTED.md").await;
    let result = fx
        .push(&spec, &cfg, "Routed change")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fx.log_text()));
    let PushResult::Pushed { commit } = result else {
        panic!("expected a push, got {result:?}");
    };
    assert_eq!(
        branch_commit(&bare, "warden/routed").as_deref(),
        Some(commit.as_str())
    );

    // The token reached the server with every request...
    let requests = fx.server.requests();
    assert!(requests.iter().any(|r| r.is_push()), "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.authorization && r.authorized && r.status == 200),
        "{requests:?}"
    );
    // ...and is nowhere in the sandbox: not in its environment, the checkout (.git/config
    // included), or any argv or variable it was handed.
    let env = fx.run(&["env"], None).await;
    assert_eq!(env.exit_code, 0);
    assert!(
        !env.stdout.contains(&token),
        "the sandbox's environment holds the token"
    );
    let config = fx.run(&["cat", "repo/.git/config"], None).await;
    assert!(
        config
            .stdout
            .contains("http://127.0.0.1:3128/git/private.git"),
        "{}",
        config.stdout
    );
    let grep = fx
        .run(&["grep", "-r", "-l", "-F", "-e", &token, "."], None)
        .await;
    assert_eq!(grep.exit_code, 1, "the token is in the workspace: {grep:?}");
    let execs = fx.driver.execs();
    assert!(!execs.is_empty());
    for req in &execs {
        let argv = req.command.argv().join(" ");
        assert!(!argv.contains(&token), "argv holds the token: {argv}");
        assert!(
            req.env.values().all(|v| !v.contains(&token)),
            "the environment of `{argv}` holds the token"
        );
    }
    assert!(!fx.log_text().contains(&token));
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_route_a_server_that_wants_a_token_fails_authentication() {
    let fx = Fixture::new(Some(Credentials::Bearer("t0k3n".into())), direct_policy).await;
    create_bare_repo(&fx.repos, "private.git", "main", &[("a", "a\n")]).unwrap();
    let spec = spec(&fx.server.url("private.git"), None, "warden/x");
    let err = fx.clone(&spec, &config()).await.unwrap_err();
    eprintln!("reason: {}", err.reason());
    assert!(
        matches!(err, GitError::AuthFailed { .. }),
        "{err:?}\n{}",
        fx.log_text()
    );
    let reason = err.reason();
    assert!(reason.contains("credential route"), "{reason}");
    assert!(fx.server.requests().iter().all(|r| r.status == 401));
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_changes_push_nothing_but_the_agents_own_commits_are_pushed() {
    let fx = Fixture::new(None, direct_policy).await;
    let bare = create_bare_repo(&fx.repos, "lib.git", "trunk", &[("lib.txt", "v1\n")]).unwrap();
    let spec = spec(&fx.server.url("lib.git"), None, "warden/nothing");
    let cfg = config();
    let checkout = fx
        .clone(&spec, &cfg)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fx.log_text()));
    // No base branch given: the remote's default.
    assert_eq!(checkout.base_branch, "trunk");

    assert_eq!(
        fx.push(&spec, &cfg, "nothing").await.unwrap(),
        PushResult::NoChanges
    );
    assert_eq!(branch_commit(&bare, "warden/nothing"), None);
    assert!(!fx.server.requests().iter().any(|r| r.is_push()));

    // The agent commits on its own and leaves the tree clean: its commit is pushed as is.
    fx.agent(
        "echo v2 > lib.txt && git -c user.name=Agent -c user.email=agent@example.com \
         commit -q -am 'Agent commit'",
    )
    .await;
    let agent_commit = fx
        .run(&["git", "rev-parse", "HEAD"], Some(CHECKOUT_DIR))
        .await
        .stdout;
    let result = fx
        .push(&spec, &cfg, "unused")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fx.log_text()));
    assert_eq!(
        result,
        PushResult::Pushed {
            commit: agent_commit.trim().to_string()
        }
    );
    assert_eq!(
        branch_commit(&bare, "warden/nothing").as_deref(),
        Some(agent_commit.trim())
    );
    assert_eq!(show(&bare, "%an", agent_commit.trim()), "Agent");
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_failures_say_what_went_wrong() {
    let fx = Fixture::new(None, direct_policy).await;
    create_bare_repo(&fx.repos, "app.git", "main", &[("a", "a\n")]).unwrap();
    let cfg = config();

    // A base branch the repository does not have.
    let err = fx
        .clone(
            &spec(&fx.server.url("app.git"), Some("release/9"), "warden/x"),
            &cfg,
        )
        .await
        .unwrap_err();
    eprintln!("reason: {}", err.reason());
    match &err {
        GitError::UnknownBaseBranch { branch, .. } => assert_eq!(branch, "release/9"),
        other => panic!(
            "expected UnknownBaseBranch, got {other:?}\n{}",
            fx.log_text()
        ),
    }
    assert!(
        err.reason()
            .contains("base branch `release/9` does not exist"),
        "{}",
        err.reason()
    );

    // A repository that does not exist (404).
    let err = fx
        .clone(&spec(&fx.server.url("missing.git"), None, "warden/x"), &cfg)
        .await
        .unwrap_err();
    eprintln!("reason: {}", err.reason());
    assert!(
        matches!(err, GitError::RepoNotFound { .. }),
        "{err:?}\n{}",
        fx.log_text()
    );
    assert!(err.reason().contains("missing.git"), "{}", err.reason());

    // A host the egress policy does not allow: the proxy's 403, named as such.
    let port = fx.server.addr().port();
    let denied = format!("http://git.warden-test.invalid:{port}/app.git");
    let err = fx
        .clone(&spec(&denied, None, "warden/x"), &cfg)
        .await
        .unwrap_err();
    eprintln!("reason: {}", err.reason());
    match &err {
        GitError::EgressDenied { host, .. } => {
            assert_eq!(host, &format!("git.warden-test.invalid:{port}"))
        }
        other => panic!("expected EgressDenied, got {other:?}\n{}", fx.log_text()),
    }
    let reason = err.reason();
    assert!(
        reason.contains("not allowed by the sandbox's egress policy"),
        "{reason}"
    );
    assert!(!reason.contains('\n'));
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_pushes_carry_gits_message() {
    let fx = Fixture::new(None, direct_policy).await;
    let cfg = config();

    // A hook of the remote refuses.
    let hooked = create_bare_repo(&fx.repos, "hooked.git", "main", &[("a", "a\n")]).unwrap();
    install_hook(
        &hooked,
        "pre-receive",
        "#!/bin/sh\necho 'refusing: pushes to this repository need review' >&2\nexit 1\n",
    )
    .unwrap();
    let s = spec(&fx.server.url("hooked.git"), None, "warden/hooked");
    fx.clone(&s, &cfg)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fx.log_text()));
    fx.agent("echo change > b").await;
    let err = fx.push(&s, &cfg, "Change").await.unwrap_err();
    eprintln!("reason: {}", err.reason());
    let GitError::PushRejected { branch, detail, .. } = &err else {
        panic!("expected PushRejected, got {err:?}\n{}", fx.log_text());
    };
    assert_eq!(branch, "warden/hooked");
    assert!(
        detail.contains("refusing: pushes to this repository need review"),
        "{detail}"
    );
    assert!(detail.contains("pre-receive hook declined"), "{detail}");
    assert_eq!(branch_commit(&hooked, "warden/hooked"), None);

    // The new branch exists already with an unrelated history.
    let taken = create_bare_repo(&fx.repos, "taken.git", "main", &[("a", "a\n")]).unwrap();
    let theirs = commit_files(
        &taken,
        "warden/taken",
        None,
        &[("x", "x\n")],
        "Someone else's",
    )
    .unwrap();
    let s = spec(&fx.server.url("taken.git"), None, "warden/taken");
    fx.clone(&s, &cfg)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fx.log_text()));
    fx.agent("echo change > b").await;
    let err = fx.push(&s, &cfg, "Change").await.unwrap_err();
    eprintln!("reason: {}", err.reason());
    let GitError::PushRejected { detail, .. } = &err else {
        panic!("expected PushRejected, got {err:?}\n{}", fx.log_text());
    };
    assert!(detail.contains("rejected"), "{detail}");
    assert!(err.reason().contains("`warden/taken`"), "{}", err.reason());
    assert_eq!(
        branch_commit(&taken, "warden/taken").as_deref(),
        Some(theirs.as_str())
    );
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_git_command_is_an_argv_with_safe_settings() {
    let fx = Fixture::new(None, direct_policy).await;
    create_bare_repo(&fx.repos, "app.git", "main", &[("a", "a\n")]).unwrap();
    let spec = spec(&fx.server.url("app.git"), None, "warden/argv");
    fx.clone(&spec, &config())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fx.log_text()));
    let gits: Vec<ExecRequest> = fx
        .driver
        .execs()
        .into_iter()
        .filter(|r| matches!(&r.command, Command::Argv(a) if a[0] == "git"))
        .collect();
    assert!(gits.len() >= 3, "{gits:?}");
    for r in &gits {
        let argv = r.command.argv();
        assert!(
            argv.windows(2)
                .any(|w| w == ["-c", "core.hooksPath=/dev/null"]),
            "{argv:?}"
        );
        assert!(
            argv.windows(2).any(|w| w == ["-c", "credential.helper="]),
            "{argv:?}"
        );
        assert_eq!(
            r.env.get("GIT_TERMINAL_PROMPT").map(String::as_str),
            Some("0")
        );
        assert_eq!(
            r.env.get("GIT_ALLOW_PROTOCOL").map(String::as_str),
            Some("http:https")
        );
        assert_eq!(
            r.env.get("GIT_CONFIG_GLOBAL").map(String::as_str),
            Some("/dev/null")
        );
    }
    // No shell anywhere.
    assert!(
        fx.driver
            .execs()
            .iter()
            .all(|r| matches!(r.command, Command::Argv(_)))
    );
    let logs = fx.logs.lock().unwrap().clone();
    assert!(
        logs.iter()
            .any(|l| l.stream == GitStream::Command && l.text.starts_with("git clone"))
    );
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_server_serves_clone_and_push_to_the_hosts_git() {
    let data = DataDir::new("wd-git-");
    let repos = data.path().join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    let server = GitServer::start(
        &repos,
        GitServerOptions {
            credentials: Some(Credentials::Bearer("s3cret".into())),
            host_address: true,
        },
    )
    .await
    .unwrap();
    let bare = create_bare_repo(&repos, "srv.git", "main", &[("a", "a\n")]).unwrap();
    let work = data.path().join("work");
    let work_s = work.to_string_lossy().into_owned();
    // The host's git blocks: keep it off the runtime's workers.
    let url = server
        .host_url("srv.git")
        .unwrap_or_else(|| server.url("srv.git"));
    let (url2, root) = (url.clone(), data.path().to_path_buf());
    let denied = tokio::task::spawn_blocking(move || {
        host_git(&root, &["clone", "--quiet", "--", &url2, "denied"])
    })
    .await
    .unwrap();
    assert!(denied.is_err(), "cloned without the token");
    let root = data.path().to_path_buf();
    let commit = tokio::task::spawn_blocking(move || {
        let auth = "http.extraHeader=Authorization: Bearer s3cret";
        host_git(
            &root,
            &["-c", auth, "clone", "--quiet", "--", &url, &work_s],
        )
        .unwrap();
        std::fs::write(work.join("b"), "b\n").unwrap();
        host_git(&work, &["add", "b"]).unwrap();
        host_git(&work, &["commit", "--quiet", "-m", "b"]).unwrap();
        host_git(
            &work,
            &[
                "-c",
                auth,
                "push",
                "--quiet",
                "origin",
                "HEAD:refs/heads/pushed",
            ],
        )
        .unwrap();
        host_git(&work, &["rev-parse", "HEAD"]).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        branch_commit(&bare, "pushed").as_deref(),
        Some(commit.trim())
    );
    let requests = server.requests();
    assert!(requests.iter().any(|r| r.status == 401 && !r.authorization));
    assert!(
        requests
            .iter()
            .any(|r| r.is_push() && r.authorized && r.status == 200)
    );
    assert!(
        server.backend_errors().is_empty(),
        "{:?}",
        server.backend_errors()
    );
}
