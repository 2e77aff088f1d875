//! The local sandbox driver (`warden-sandbox`) against real jails on this machine: each
//! sandbox is a detached `warden run` holding the runtime server. Needs root or
//! unprivileged user namespaces, Landlock, seccomp and a cgroup v2 hierarchy (for the
//! freezer); fails rather than skips when they are missing.
//!
//! `STANDIN` tests run a small Python server as the jailed runtime (it answers
//! `/v1/health` and counts in the workspace) so that the lifecycle is tested on its own.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use support::{DataDir, processes_mentioning};
use warden_sandbox::{
    ClaimRequest, CreateRequest, Driver, DriverError, Launch, LocalConfig, LocalDriver,
    MemoryStore, Phase, PoolSpec, SandboxStore, Template,
};

/// A stand-in runtime server: answers every request with 200 on the socket and writes a
/// counter to `<workspace>/counter` every 20 ms (to see a frozen sandbox stop).
const STANDIN: &str = r#"
import os, socket, sys, threading, time
sock, ws = sys.argv[1], sys.argv[2]
def count():
    i = 0
    while True:
        i += 1
        with open(ws + "/counter.tmp", "w") as f:
            f.write(str(i))
        os.rename(ws + "/counter.tmp", ws + "/counter")
        time.sleep(0.02)
threading.Thread(target=count, daemon=True).start()
s = socket.socket(socket.AF_UNIX)
s.bind(sock)
s.listen(64)
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 36\r\nConnection: close\r\n\r\n{\"status\":\"ok\",\"uptime_seconds\":1.0}")
    c.close()
"#;

struct Fixture {
    /// Kills whatever sandbox is left under it when dropped: sandboxes outlive their driver
    /// on purpose, and a failed test must not leave them running.
    _data: DataDir,
    data: PathBuf,
    store: Arc<MemoryStore>,
}

impl Fixture {
    fn new() -> Fixture {
        let data = DataDir::new();
        Fixture {
            data: data.path().to_path_buf(),
            _data: data,
            store: Arc::new(MemoryStore::new()),
        }
    }

    fn config(&self) -> LocalConfig {
        let mut cfg = LocalConfig::with_exe(&self.data, env!("CARGO_BIN_EXE_warden"));
        cfg.runtime_command = Some(vec![
            "/usr/bin/python3".into(),
            "-c".into(),
            STANDIN.into(),
            "{socket}".into(),
            "{workspace}".into(),
        ]);
        cfg.reaper_interval = Duration::from_millis(100);
        cfg
    }

    fn driver(&self) -> LocalDriver {
        LocalDriver::new(self.config(), self.store.clone()).unwrap()
    }
}

fn template(name: &str) -> Template {
    Template {
        name: name.into(),
        policy: toml::from_str("[resources]\nmemory = \"256M\"\npids = 64").unwrap(),
        shutdown_after: None,
        idle_timeout: None,
        workspace_quota: None,
    }
}

fn create(t: &str) -> CreateRequest {
    CreateRequest {
        template: t.into(),
        ..CreateRequest::default()
    }
}

/// Waits until nothing of a sandbox remains: no process, no cgroup, no directory.
async fn assert_gone(dir: &Path, cgroups: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = processes_mentioning(dir);
        let cgs: Vec<&PathBuf> = cgroups.iter().filter(|c| c.exists()).collect();
        if procs.is_empty() && cgs.is_empty() && !dir.exists() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "sandbox remains: processes {procs:?}, cgroups {cgs:?}, directory exists: {}",
                dir.exists()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_counter(ws: &Path) -> u64 {
    std::fs::read_to_string(ws.join("counter"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_conflict_naming(r: Result<impl std::fmt::Debug, DriverError>, word: &str) {
    match r {
        Err(DriverError::Conflict(m)) => assert!(m.contains(word), "{m}"),
        other => panic!("expected a Conflict naming {word}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_delete_leaves_nothing() {
    let fx = Fixture::new();
    let d = fx.driver();
    d.put_template(template("t")).await.unwrap();
    let t0 = Instant::now();
    let info = d.create(create("t")).await.unwrap();
    eprintln!("cold create: {:?}", t0.elapsed());
    assert_eq!(info.phase, Phase::Ready);
    assert_eq!(info.launch, Launch::Cold);
    assert!(
        info.id.starts_with("sbx-") && info.id.len() == 14,
        "{}",
        info.id
    );
    assert!(info.shutdown_at.is_some() && info.idle_timeout.is_some());
    let rt = d.runtime(&info.id).unwrap();
    let jail = rt.jail.clone().unwrap();
    assert!(!jail.cgroups.is_empty(), "the sandbox has cgroups");
    for c in &jail.cgroups {
        assert!(c.exists(), "{}", c.display());
    }
    let sup = rt.supervisor.unwrap();
    assert!(sup.alive());
    assert!(!processes_mentioning(&rt.dir).is_empty());
    assert_eq!(d.get(&info.id).await.unwrap().id, info.id);
    assert_eq!(d.list().await.len(), 1);
    assert_eq!(fx.store.load_all().await.unwrap().len(), 1);

    d.delete(&info.id).await.unwrap();
    assert!(!sup.alive(), "the supervisor is gone when delete returns");
    for c in &jail.cgroups {
        assert!(!c.exists(), "{} remains", c.display());
    }
    assert!(!rt.dir.exists());
    assert_gone(&rt.dir, &jail.cgroups).await;
    assert!(matches!(
        d.get(&info.id).await,
        Err(DriverError::NotFound {
            kind: "sandbox",
            ..
        })
    ));
    assert!(matches!(
        d.delete(&info.id).await,
        Err(DriverError::NotFound { .. })
    ));
    assert!(fx.store.load_all().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_freezes_and_resume_continues() {
    let fx = Fixture::new();
    let d = fx.driver();
    let mut events = d.events();
    d.put_template(template("t")).await.unwrap();
    let info = d.create(create("t")).await.unwrap();
    let ws = d.sandbox_dir(&info.id).join("workspace");
    wait_for("the counter", Duration::from_secs(5), || {
        read_counter(&ws) > 2
    })
    .await;

    let s = d.suspend(&info.id).await.unwrap();
    assert_eq!(s.phase, Phase::Suspended);
    let frozen_at = read_counter(&ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        read_counter(&ws),
        frozen_at,
        "a frozen sandbox makes no progress"
    );
    is_conflict_naming(
        d.exec(
            &info.id,
            warden_sandboxd::proto::ExecRequest::new(warden_sandboxd::proto::Command::Shell(
                "true".into(),
            )),
        )
        .await,
        "suspended",
    );
    is_conflict_naming(d.exists(&info.id, "x").await, "suspended");
    is_conflict_naming(d.mkdir(&info.id, "x").await, "suspended");

    let r = d.resume(&info.id).await.unwrap();
    assert_eq!(r.phase, Phase::Ready);
    wait_for("progress after resume", Duration::from_secs(5), || {
        read_counter(&ws) > frozen_at + 2
    })
    .await;

    // Suspend again, then delete while frozen: nothing remains.
    d.suspend(&info.id).await.unwrap();
    let rt = d.runtime(&info.id).unwrap();
    d.delete(&info.id).await.unwrap();
    assert_gone(&rt.dir, &rt.jail.unwrap().cgroups).await;

    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        kinds.push(e.kind);
    }
    assert_eq!(
        kinds,
        [
            "created",
            "ready",
            "suspended",
            "resumed",
            "suspended",
            "deleted"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_time_and_idle_timeout_stop_the_sandbox() {
    let fx = Fixture::new();
    let d = fx.driver();
    d.put_template(template("t")).await.unwrap();
    let short = d
        .create(CreateRequest {
            shutdown_after: Some(Duration::from_millis(500)),
            ..create("t")
        })
        .await
        .unwrap();
    let idle = d
        .create(CreateRequest {
            idle_timeout: Some(Duration::from_millis(600)),
            ..create("t")
        })
        .await
        .unwrap();
    let kept = d.create(create("t")).await.unwrap();
    let rts: Vec<_> = [&short, &idle]
        .iter()
        .map(|i| d.runtime(&i.id).unwrap())
        .collect();
    for (info, kind) in [(&short, "shutdown time"), (&idle, "no exec or file call")] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = d.get(&info.id).await.unwrap();
            if now.phase == Phase::Stopped {
                assert!(now.message.as_deref().unwrap().contains(kind), "{now:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop: {now:?}",
                info.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        is_conflict_naming(d.exists(&info.id, "x").await, "stopped");
    }
    for rt in rts {
        assert_gone(&rt.dir, &rt.jail.unwrap().cgroups).await;
    }
    // set_shutdown moves the time; a past time ends it at once.
    assert_eq!(d.get(&kept.id).await.unwrap().phase, Phase::Ready);
    let later = SystemTime::now() + Duration::from_secs(3600);
    let s = d.set_shutdown(&kept.id, Some(later)).await.unwrap();
    assert_eq!(s.shutdown_at, Some(later));
    d.set_shutdown(&kept.id, Some(SystemTime::now()))
        .await
        .unwrap();
    wait_for("expiry", Duration::from_secs(5), || {
        futures_now(d.get(&kept.id)).is_ok_and(|i| i.phase == Phase::Stopped)
    })
    .await;
    // A stopped sandbox's record goes on delete.
    d.delete(&kept.id).await.unwrap();
    assert!(d.get(&kept.id).await.is_err());
}

/// Polls a future that completes without waiting (the driver's `get`).
fn futures_now<T>(f: impl Future<Output = T>) -> T {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("get() should not wait"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_fill_claim_warm_refill_and_resize() {
    let fx = Fixture::new();
    let d = fx.driver();
    d.put_template(template("t")).await.unwrap();
    d.put_pool(PoolSpec {
        name: "p".into(),
        template: "t".into(),
        replicas: 3,
    })
    .await
    .unwrap();
    let ready = |n: u32| {
        let d = &d;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let p = &d.pools().await[0];
                if p.ready == n && p.starting == 0 {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "pool never reached {n} ready: {p:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    ready(3).await;
    let members = d.list().await;
    assert_eq!(members.len(), 3);
    for m in &members {
        assert!(
            m.pool_member && m.id.starts_with("p-") && m.id.len() == 7,
            "{m:?}"
        );
        is_conflict_naming(d.exists(&m.id, "x").await, "unclaimed");
    }

    let t0 = Instant::now();
    let claimed = d
        .claim(ClaimRequest {
            pool: "p".into(),
            labels: BTreeMap::from([("owner".into(), "me".into())]),
            ..ClaimRequest::default()
        })
        .await
        .unwrap();
    let took = t0.elapsed();
    eprintln!("warm claim: {took:?}");
    assert!(took < Duration::from_millis(5), "claim took {took:?}");
    assert_eq!(claimed.launch, Launch::Warm);
    assert!(!claimed.pool_member);
    assert_eq!(claimed.pool.as_deref(), Some("p"));
    assert!(claimed.shutdown_at.is_some());
    assert_eq!(claimed.labels["owner"], "me");
    // The pool refills to 3 unclaimed members; the claimed one stays out of it.
    ready(3).await;
    assert_eq!(d.list().await.len(), 4);

    // Resize down to 1, then to 0: excess members go.
    d.put_pool(PoolSpec {
        name: "p".into(),
        template: "t".into(),
        replicas: 1,
    })
    .await
    .unwrap();
    ready(1).await;
    d.put_pool(PoolSpec {
        name: "p".into(),
        template: "t".into(),
        replicas: 0,
    })
    .await
    .unwrap();
    ready(0).await;
    wait_for("excess deleted", Duration::from_secs(10), || {
        std::fs::read_dir(fx.data.join("sandboxes"))
            .unwrap()
            .count()
            == 1
    })
    .await;

    // An empty pool: the claim falls back to a cold create of its template.
    let cold = d
        .claim(ClaimRequest {
            pool: "p".into(),
            ..ClaimRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(cold.launch, Launch::Cold);
    assert!(cold.id.starts_with("sbx-"));

    // Templates in use cannot go; unknown names are NotFound naming them.
    is_conflict_naming(d.delete_template("t").await, "pool");
    match d
        .claim(ClaimRequest {
            pool: "nope".into(),
            ..ClaimRequest::default()
        })
        .await
    {
        Err(DriverError::NotFound { kind: "pool", name }) => assert_eq!(name, "nope"),
        other => panic!("{other:?}"),
    }
    match d.create(create("nope")).await {
        Err(DriverError::NotFound {
            kind: "template",
            name,
        }) => assert_eq!(name, "nope"),
        other => panic!("{other:?}"),
    }
    d.delete_pool("p").await.unwrap();
    d.delete_template("t").await.unwrap();
    for s in d.list().await {
        d.delete(&s.id).await.unwrap();
    }
    wait_for("all gone", Duration::from_secs(10), || {
        std::fs::read_dir(fx.data.join("sandboxes"))
            .unwrap()
            .count()
            == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_adopts_live_sandboxes_and_fails_dead_ones() {
    let fx = Fixture::new();
    let (live, dead, member, dead_rt) = {
        let d = fx.driver();
        d.put_template(template("t")).await.unwrap();
        d.put_pool(PoolSpec {
            name: "p".into(),
            template: "t".into(),
            replicas: 1,
        })
        .await
        .unwrap();
        let live = d.create(create("t")).await.unwrap();
        let dead = d.create(create("t")).await.unwrap();
        wait_for("a pool member", Duration::from_secs(20), || {
            futures_now(d.pools())[0].ready == 1
        })
        .await;
        let member = d.list().await.into_iter().find(|s| s.pool_member).unwrap();
        let dead_rt = d.runtime(&dead.id).unwrap();
        // The "restart": the first driver goes away; its sandboxes stay.
        drop(d);
        (live, dead, member, dead_rt)
    };
    // While the server is down, one supervisor dies.
    dead_rt.supervisor.unwrap().kill();
    wait_for("the supervisor to die", Duration::from_secs(5), || {
        !dead_rt.supervisor.unwrap().alive()
    })
    .await;

    let d = fx.driver();
    d.put_template(template("t")).await.unwrap();
    let recovered = d.recover().await.unwrap();
    assert_eq!(recovered.len(), 3);
    let get = |id: &str| recovered.iter().find(|s| s.id == id).unwrap().clone();
    assert_eq!(get(&live.id).phase, Phase::Ready);
    assert_eq!(get(&member.id).phase, Phase::Ready);
    let failed = get(&dead.id);
    assert_eq!(failed.phase, Phase::Failed);
    assert!(failed.message.unwrap().contains("died"));
    assert_gone(&dead_rt.dir, &dead_rt.jail.clone().unwrap().cgroups).await;
    is_conflict_naming(d.exists(&dead.id, "x").await, "failed");

    // The adopted member is claimable once its pool is declared again.
    d.put_pool(PoolSpec {
        name: "p".into(),
        template: "t".into(),
        replicas: 1,
    })
    .await
    .unwrap();
    let c = d
        .claim(ClaimRequest {
            pool: "p".into(),
            ..ClaimRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(c.id, member.id);
    assert_eq!(c.launch, Launch::Warm);

    // An adopted sandbox whose supervisor dies later is noticed by the reaper.
    let live_rt = d.runtime(&live.id).unwrap();
    live_rt.supervisor.unwrap().kill();
    wait_for("the reaper to notice", Duration::from_secs(5), || {
        futures_now(d.get(&live.id)).is_ok_and(|s| s.phase == Phase::Failed)
    })
    .await;
    assert_gone(&live_rt.dir, &live_rt.jail.unwrap().cgroups).await;

    d.delete_pool("p").await.unwrap();
    for s in d.list().await {
        d.delete(&s.id).await.unwrap();
    }
    wait_for("all gone", Duration::from_secs(10), || {
        std::fs::read_dir(fx.data.join("sandboxes"))
            .unwrap()
            .count()
            == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_templates_and_requests_name_the_field() {
    let fx = Fixture::new();
    let d = fx.driver();
    let field = |r: Result<(), DriverError>| match r {
        Err(DriverError::InvalidArgument { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let mut t = template("t");
    t.policy = toml::from_str("[filesystem]\nworkspace = \"/srv\"").unwrap();
    assert_eq!(
        field(d.put_template(t).await),
        "policy.filesystem.workspace"
    );
    let mut t = template("t");
    t.name = "Not_A_Label".into();
    assert_eq!(field(d.put_template(t).await), "name");
    d.put_template(template("t")).await.unwrap();
    match d
        .create(CreateRequest {
            env: BTreeMap::from([("LD_PRELOAD".into(), "/x.so".into())]),
            ..create("t")
        })
        .await
    {
        Err(DriverError::InvalidArgument { field, .. }) => assert_eq!(field, "env"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        d.put_pool(PoolSpec {
            name: "p".into(),
            template: "missing".into(),
            replicas: 1
        })
        .await,
        Err(DriverError::NotFound {
            kind: "template",
            ..
        })
    ));
    assert!(d.list().await.is_empty());
}

/// The real runtime server: `warden sandboxd --jail inherited` inside the jail.
fn real(fx: &Fixture) -> LocalDriver {
    let mut cfg = fx.config();
    cfg.runtime_command = None;
    LocalDriver::new(cfg, fx.store.clone()).unwrap()
}

fn sh(cmd: &str) -> warden_sandboxd::proto::ExecRequest {
    warden_sandboxd::proto::ExecRequest::new(warden_sandboxd::proto::Command::Shell(cmd.into()))
}

fn body(bytes: &'static [u8]) -> warden_sandbox::ByteStream {
    Box::pin(futures_util::stream::once(async move {
        Ok(bytes::Bytes::from_static(bytes))
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxd_exec_files_and_isolation() {
    use futures_util::TryStreamExt;
    let fx = Fixture::new();
    let d = real(&fx);
    d.put_template(template("t")).await.unwrap();
    let t0 = Instant::now();
    let info = d.create(create("t")).await.unwrap();
    eprintln!("cold create with sandboxd: {:?}", t0.elapsed());
    let id = &info.id;

    let r = d.exec(id, sh("echo hi; pwd")).await.unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(r.stdout.starts_with("hi\n"), "{r:?}");

    // Files, through sandboxd.
    d.mkdir(id, "dir/sub").await.unwrap();
    d.write_file(id, "dir/sub/a.txt", None, body(b"hello"))
        .await
        .unwrap();
    assert!(d.exists(id, "dir/sub/a.txt").await.unwrap());
    assert!(!d.exists(id, "dir/nope").await.unwrap());
    let got: Vec<bytes::Bytes> = d
        .read_file(id, "dir/sub/a.txt")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got.concat(), b"hello");
    let listing = d.list_dir(id, "dir/sub").await.unwrap();
    assert_eq!(listing.entries.len(), 1);
    assert_eq!(listing.entries[0].name, "a.txt");
    let r = d.exec(id, sh("cat dir/sub/a.txt")).await.unwrap();
    assert_eq!(r.stdout, "hello");
    d.remove(id, "dir", true).await.unwrap();
    assert!(!d.exists(id, "dir").await.unwrap());
    // The workspace outlives commands.
    d.exec(id, sh("echo kept > k")).await.unwrap();
    assert_eq!(d.exec(id, sh("cat k")).await.unwrap().stdout, "kept\n");

    // Isolation holds for exec'd commands.
    let r = d.exec(id, sh("cat /etc/shadow")).await.unwrap();
    assert_ne!(r.exit_code, 0, "read /etc/shadow: {r:?}");
    let r = d.exec(id, sh("echo x > /etc/warden-escape")).await.unwrap();
    assert_ne!(r.exit_code, 0, "{r:?}");
    assert!(!Path::new("/etc/warden-escape").exists());
    // Next to the workspace on the host is a private tmpfs inside: writable, never the host.
    let outside = fx.data.join("escape");
    d.exec(id, sh(&format!("echo x > {}", outside.display())))
        .await
        .unwrap();
    assert!(!outside.exists(), "wrote outside the workspace");
    let sibling = d.sandbox_dir(id).join("policy.toml");
    let r = d
        .exec(id, sh(&format!("cat {}", sibling.display())))
        .await
        .unwrap();
    assert_ne!(
        r.exit_code, 0,
        "the sandbox reads its own policy file: {r:?}"
    );
    let r = d
        .exec(
            id,
            sh("python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 53), timeout=2)'"),
        )
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0, "reached the network: {r:?}");
    let r = d.exec(id, sh("ls /proc | grep -c '^[0-9]'")).await.unwrap();
    let visible: u32 = r.stdout.trim().parse().unwrap();
    assert!(
        visible < 10,
        "sees {visible} processes: not its own pid namespace"
    );

    // Suspended: exec refused, naming the phase.
    d.suspend(id).await.unwrap();
    is_conflict_naming(d.exec(id, sh("true")).await, "suspended");
    d.resume(id).await.unwrap();
    assert_eq!(d.exec(id, sh("echo back")).await.unwrap().stdout, "back\n");

    // Streaming exec.
    let mut s = d.exec_stream(id, sh("echo streamed")).await.unwrap();
    let mut out = Vec::new();
    let mut exit = None;
    while let Some(item) = s.output.recv().await {
        match item {
            warden_sandbox::StreamItem::Stdout(b) => out.extend_from_slice(&b),
            warden_sandbox::StreamItem::Event(warden_sandboxd::proto::ExecEvent::Exit {
                exit_code,
                ..
            }) => exit = Some(exit_code),
            _ => {}
        }
    }
    assert_eq!(out, b"streamed\n");
    assert_eq!(exit, Some(0));

    let rt = d.runtime(id).unwrap();
    report_memory(&rt);
    d.delete(id).await.unwrap();
    assert_gone(&rt.dir, &rt.jail.unwrap().cgroups).await;
}

/// Prints what an idle sandbox costs: Pss and Private of its supervisor, init and
/// sandboxd (and anything else in its cgroup), from /proc/PID/smaps_rollup.
fn report_memory(rt: &warden_sandbox::LocalRuntime) {
    let mut pids = vec![rt.supervisor.unwrap().pid as i32];
    let cg = warden_sandbox::local::SandboxCgroups::new(
        rt.jail.clone().unwrap().cgroups,
        rt.jail.as_ref().unwrap().pid,
    )
    .unwrap();
    pids.extend(cg.pids());
    pids.sort_unstable();
    pids.dedup();
    let (mut pss, mut private) = (0u64, 0u64);
    for pid in &pids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let kb = |key: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(key))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        eprintln!(
            "  pid {pid} {}: Pss {} kB, Private {} kB",
            comm.trim(),
            kb("Pss:"),
            kb("Private_Clean:") + kb("Private_Dirty:")
        );
        pss += kb("Pss:");
        private += kb("Private_Clean:") + kb("Private_Dirty:");
    }
    eprintln!(
        "idle sandbox ({} processes): Pss {pss} kB, Private {private} kB",
        pids.len()
    );
}

/// A command in the sandbox can write the directory that holds sandboxd's socket. Replacing
/// the socket with a symlink to another socket (here, a listener standing for another
/// sandbox's runtime or a host daemon) must not steer the driver's calls or the router's
/// connections there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_socket_is_refused() {
    let fx = Fixture::new();
    let d = real(&fx);
    d.put_template(template("t")).await.unwrap();
    let info = d.create(create("t")).await.unwrap();
    let id = &info.id;
    let decoy_dir = tempfile::tempdir_in("/tmp").unwrap();
    let decoy_path = decoy_dir.path().join("decoy.sock");
    let decoy = std::os::unix::net::UnixListener::bind(&decoy_path).unwrap();
    decoy.set_nonblocking(true).unwrap();
    // Before the swap, the router's connection works.
    d.connect_runtime(id, 8888).await.unwrap();

    let sock = fx
        .data
        .join("sandboxes")
        .join(id)
        .join("run")
        .join("sandboxd.sock");
    let swap = format!(
        "rm -f {s} && ln -s {decoy} {s} && ls -l {s}",
        s = sock.display(),
        decoy = decoy_path.display()
    );
    let r = d.exec(id, sh(&swap)).await.unwrap();
    assert_eq!(r.exit_code, 0, "the swap itself should work inside: {r:?}");
    assert!(
        std::fs::symlink_metadata(&sock)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    let e = d.connect_runtime(id, 8888).await.unwrap_err();
    assert!(matches!(e, DriverError::Unavailable(_)), "{e:?}");
    let e = d.exec(id, sh("true")).await.unwrap_err();
    assert!(matches!(e, DriverError::Unavailable(_)), "{e:?}");
    assert!(
        decoy.accept().is_err(),
        "a connection reached the decoy socket"
    );
    d.delete(id).await.unwrap();
}
