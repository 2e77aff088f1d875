//! Router tests with `oneshot` requests, commands jailed in pod isolation, and the client
//! over a real unix socket.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use warden_jail::spawn::{Confinement, PodJail};
use warden_sandboxd::client::{Client, StreamInput, StreamOutput};
use warden_sandboxd::fs::Root;
use warden_sandboxd::proto::{Command, ExecControl, ExecRequest, ExecResult};
use warden_sandboxd::{Sandboxd, app};

fn state(dir: &std::path::Path, quota: Option<u64>) -> Arc<Sandboxd> {
    let root = Root::open(dir).unwrap();
    let jail = PodJail::prepare(&warden_policy::Profile::Pod.policy(), root.path(), &[])
        .expect("pod jail (needs Landlock and seccomp)");
    let mut s = Sandboxd::new(root, Confinement::Pod(Arc::new(jail)));
    s.quota = quota;
    Arc::new(s)
}

async fn send(st: &Arc<Sandboxd>, method: &str, uri: &str, body: Body) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .unwrap();
    let resp = app(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

fn j(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(b)))
}

async fn exec(st: &Arc<Sandboxd>, body: serde_json::Value) -> ExecResult {
    let (s, b) = send(st, "POST", "/v1/exec", Body::from(body.to_string())).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

#[tokio::test]
async fn legacy_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), None);
    let (s, b) = send(&st, "GET", "/", Body::empty()).await;
    assert_eq!(
        (s, j(&b)),
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    );
    let (s, b) = send(
        &st,
        "POST",
        "/execute",
        Body::from(r#"{"command":"echo out; echo err >&2; exit 4"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v = j(&b);
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["timed_out"], false);
    let (s, b) = send(
        &st,
        "POST",
        "/execute",
        Body::from(r#"{"command":"sleep 5","timeout_seconds":0.3}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j(&b)["exit_code"], 124);
    assert_eq!(j(&b)["timed_out"], true);
    let (s, b) = send(&st, "POST", "/execute", Body::from(r#"{"cmd":"x"}"#)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        j(&b)["message"].as_str().unwrap().contains("cmd"),
        "{}",
        String::from_utf8_lossy(&b)
    );

    let boundary = "XyZ";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d/up.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nhello\r\n--{boundary}--\r\n"
    );
    let req = Request::builder()
        .method("POST")
        .uri("/upload")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap();
    let resp = app(st.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        std::fs::read(dir.path().join("d/up.txt")).unwrap(),
        b"hello"
    );
    let (s, b) = send(&st, "GET", "/download/d%2Fup.txt", Body::empty()).await;
    assert_eq!((s, b.as_slice()), (StatusCode::OK, &b"hello"[..]));
    let (s, b) = send(&st, "GET", "/list/d", Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    let v = j(&b);
    assert_eq!(v[0]["name"], "up.txt");
    assert_eq!(v[0]["type"], "file");
    assert_eq!(v[0]["size"], 5);
    assert!(v[0]["mod_time"].as_f64().unwrap() > 1e9);
    let (_, b) = send(&st, "GET", "/exists/d%2Fup.txt", Body::empty()).await;
    assert_eq!(
        j(&b),
        serde_json::json!({"path": "d/up.txt", "exists": true})
    );
    let (_, b) = send(&st, "GET", "/exists/nope", Body::empty()).await;
    assert_eq!(j(&b)["exists"], false);
    for uri in [
        "/download/..%2F..%2Fetc%2Fpasswd",
        "/list/%2Fetc",
        "/exists/..%2Fx",
        "/download/%2e%2e/x",
    ] {
        let (s, _) = send(&st, "GET", uri, Body::empty()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{uri}");
    }
}

#[tokio::test]
async fn sandboxd_files() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Some(1000));
    let (s, _) = send(
        &st,
        "PUT",
        "/v1/files/a%2Fb.sh?mode=0755",
        Body::from("#!/bin/sh\necho run\n"),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.path().join("a/b.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    let (s, b) = send(&st, "GET", "/v1/files/a%2Fb.sh", Body::empty()).await;
    assert_eq!(
        (s, b.as_slice()),
        (StatusCode::OK, &b"#!/bin/sh\necho run\n"[..])
    );
    let (s, _) = send(&st, "HEAD", "/v1/files/a%2Fb.sh", Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = send(&st, "HEAD", "/v1/files/missing", Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(b.is_empty());
    let (s, b) = send(&st, "GET", "/v1/files/a", Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    let v = j(&b);
    assert_eq!(v["path"], "a");
    assert_eq!(v["entries"][0]["name"], "b.sh");
    assert_eq!(v["entries"][0]["mode"], "0755");
    assert!(
        v["entries"][0]["modified_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let (s, _) = send(
        &st,
        "PUT",
        "/v1/files/x%2Fy%2Fz?type=directory",
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(dir.path().join("x/y/z").is_dir());
    let (s, b) = send(&st, "DELETE", "/v1/files/x", Body::empty()).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(j(&b)["code"], "CONFLICT");
    let (s, _) = send(&st, "DELETE", "/v1/files/x?recursive=true", Body::empty()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(!dir.path().join("x").exists());
    let (s, b) = send(&st, "PUT", "/v1/files/f?mode=9999", Body::from("x")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(j(&b)["message"].as_str().unwrap().starts_with("mode:"));
    let (s, b) = send(&st, "PUT", "/v1/files/f?type=fifo", Body::from("x")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(j(&b)["message"].as_str().unwrap().contains("directory"));
    // Quota: 1000 bytes in all.
    let (s, b) = send(&st, "PUT", "/v1/files/big", Body::from(vec![b'x'; 1200])).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(j(&b)["code"], "RESOURCE_EXHAUSTED");
    assert!(!dir.path().join("big").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("warden"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let (_, b) = send(&st, "GET", "/v1/health", Body::empty()).await;
    assert_eq!(j(&b)["status"], "ok");
    let (s, _) = send(&st, "DELETE", "/v1/files/", Body::empty()).await;
    assert!(s.is_client_error());
}

#[tokio::test]
async fn path_escapes_are_refused() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    std::os::unix::fs::symlink("../outside/secret", root.join("rel")).unwrap();
    let st = state(&root, None);
    let forbidden = [
        ("GET", "/v1/files/..%2Foutside%2Fsecret"),
        ("GET", "/v1/files/%2e%2e%2Foutside"),
        ("GET", "/v1/files/%2Fetc%2Fpasswd"),
        ("GET", "/v1/files/out%2Fsecret"),
        ("GET", "/v1/files/rel"),
        ("GET", "/v1/files/out"),
        ("PUT", "/v1/files/out%2Fplanted"),
        ("PUT", "/v1/files/out%2Fsub%2Fplanted"),
        ("PUT", "/v1/files/out%2Fd?type=directory"),
        ("DELETE", "/v1/files/out%2Fsecret"),
    ];
    for (m, uri) in forbidden {
        let (s, b) = send(&st, m, uri, Body::from("pwned")).await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "{m} {uri}: {}",
            String::from_utf8_lossy(&b)
        );
        assert_eq!(j(&b)["code"], "PERMISSION_DENIED");
    }
    // Writing over the symlink replaces the link itself, never its target.
    let (s, _) = send(&st, "PUT", "/v1/files/rel", Body::from("new")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        "s"
    );
    assert!(
        !std::fs::symlink_metadata(root.join("rel"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Deleting the link removes the link, not the directory it points to.
    let (s, _) = send(&st, "DELETE", "/v1/files/out?recursive=true", Body::empty()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(outside.join("secret").exists());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    // A directory swapped for a symlink between requests, many times over.
    std::fs::create_dir(root.join("swap")).unwrap();
    let r2 = root.clone();
    let o2 = outside.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let racer = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::fs::remove_dir_all(r2.join("swap"));
            let _ = std::os::unix::fs::symlink(&o2, r2.join("swap"));
            let _ = std::fs::remove_file(r2.join("swap"));
            let _ = std::fs::create_dir(r2.join("swap"));
        }
    });
    for _ in 0..300 {
        let _ = send(&st, "PUT", "/v1/files/swap%2Fplanted", Body::from("x")).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    racer.join().unwrap();
    assert!(
        !outside.join("planted").exists(),
        "a write escaped through the swapped symlink"
    );
    // Exec cwd outside the root.
    let (s, b) = send(
        &st,
        "POST",
        "/v1/exec",
        Body::from(r#"{"command":"pwd","cwd":"../outside"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&b));
    assert!(j(&b)["message"].as_str().unwrap().starts_with("cwd:"));
}

#[tokio::test]
async fn exec_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("noexec"), "x").unwrap();
    let st = state(dir.path(), None);
    let r = exec(&st, serde_json::json!({"command": ["sh", "-c", "exit 7"]})).await;
    assert_eq!((r.exit_code, r.timed_out), (7, false));
    let r = exec(
        &st,
        serde_json::json!({"command": ["definitely-not-a-program"]}),
    )
    .await;
    assert_eq!(r.exit_code, 127);
    let r = exec(&st, serde_json::json!({"command": ["./noexec"]})).await;
    assert_eq!(r.exit_code, 126);
    let r = exec(&st, serde_json::json!({"command": "kill -TERM $$"})).await;
    assert_eq!((r.exit_code, r.signal), (128 + 15, Some(15)));
    let r = exec(
        &st,
        serde_json::json!({"command": "cat", "stdin": "from stdin"}),
    )
    .await;
    assert_eq!(r.stdout, "from stdin");
    let r = exec(
        &st,
        serde_json::json!({"command": "echo $FOO; pwd", "env": {"FOO": "bar"}, "cwd": "sub"}),
    )
    .await;
    let canon = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(r.stdout, format!("bar\n{}/sub\n", canon.display()));
    // The timeout kills the whole group: a background child must not survive.
    let t = std::time::Instant::now();
    let r = exec(
        &st,
        serde_json::json!({"command": "(sleep 30; touch survived) & sleep 30", "timeout_ms": 300}),
    )
    .await;
    assert_eq!((r.exit_code, r.timed_out), (124, true));
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 30; touch survived"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "group survived: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    // The jail holds: nothing outside the root is writable.
    let r = exec(
        &st,
        serde_json::json!({"command": "echo x > /etc/warden-sandboxd-test || echo denied"}),
    )
    .await;
    assert_eq!(r.stdout, "denied\n");
    // Bad requests name the field.
    let (s, b) = send(
        &st,
        "POST",
        "/v1/exec",
        Body::from(r#"{"command":"x","timeout":3}"#),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(j(&b)["message"].as_str().unwrap().contains("timeout"));
    let (s, b) = send(&st, "POST", "/v1/exec", Body::from(r#"{"command":[]}"#)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(j(&b)["message"].as_str().unwrap().starts_with("command"));
    // Output cap.
    let mut small = Sandboxd::new(Root::open(dir.path()).unwrap(), st.confinement.clone());
    small.output_cap = 10;
    let small = Arc::new(small);
    let (_, b) = send(
        &small,
        "POST",
        "/v1/exec",
        Body::from(r#"{"command":"seq 1 100"}"#),
    )
    .await;
    let r: ExecResult = serde_json::from_slice(&b).unwrap();
    assert!(r.truncated);
    assert_eq!(r.stdout.len(), 10);
}

#[tokio::test]
async fn exec_stream_sse_order() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), None);
    let (s, b) = send(
        &st,
        "POST",
        "/v1/exec/stream",
        Body::from(r#"{"command":"echo one; sleep 0.1; echo two >&2; exit 3"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(b).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names, ["started", "stdout", "stderr", "exit"], "{text}");
    assert!(text.contains(r#""exit_code":3"#), "{text}");
}

#[tokio::test]
async fn client_over_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), None);
    let sock = dir.path().join("sd.sock");
    let bound =
        warden_sandboxd::server::Bound::bind(&warden_sandboxd::server::Listen::Unix(sock.clone()))
            .await
            .unwrap();
    tokio::spawn(bound.serve(app(st)));
    let c = Client::new(&sock);
    assert_eq!(c.health().await.unwrap().status, "ok");
    let r = c
        .exec(&ExecRequest::new(Command::Shell("echo hi".into())))
        .await
        .unwrap();
    assert_eq!(r.stdout, "hi\n");
    c.mkdir("d/e").await.unwrap();
    c.write_file("d/e/f.txt", Some(0o600), Body::from("data"))
        .await
        .unwrap();
    assert!(c.exists("d/e/f.txt").await.unwrap());
    assert!(!c.exists("d/none").await.unwrap());
    let body = c
        .read_file("d/e/f.txt")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"data");
    let l = c.list_dir("d/e").await.unwrap();
    assert_eq!(l.entries[0].name, "f.txt");
    assert_eq!(l.entries[0].mode, "0600");
    match c.remove("d", false).await {
        Err(warden_sandboxd::client::ClientError::Api(e)) => {
            assert_eq!(e.code, warden_sandboxd::proto::ErrorCode::Conflict)
        }
        other => panic!("{other:?}"),
    }
    c.remove("d", true).await.unwrap();
    // A refused upload is answered with its error, not a broken connection, even when the
    // rest of the body arrives after sandboxd has refused it (as when `warden serve` relays
    // an upload from its own client).
    let chunks = futures_util::stream::unfold(0, |i| async move {
        if i == 3 {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 64 << 10])),
            i + 1,
        ))
    });
    let late = Body::from_stream(chunks);
    match c.write_file("../escape.bin", None, late).await {
        Err(warden_sandboxd::client::ClientError::Api(e)) => {
            assert_eq!(
                e.code,
                warden_sandboxd::proto::ErrorCode::PermissionDenied,
                "{e:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().parent().unwrap().join("escape.bin").exists());
    match c.read_file("../x").await {
        Err(warden_sandboxd::client::ClientError::Api(e)) => {
            assert_eq!(e.code, warden_sandboxd::proto::ErrorCode::PermissionDenied)
        }
        other => panic!("{other:?}"),
    }
    // Streaming with stdin over the WebSocket.
    let mut s = c
        .exec_stream(ExecRequest::new(Command::Shell(
            "cat; echo done >&2".into(),
        )))
        .await
        .unwrap();
    assert!(s.pid > 0);
    s.input
        .send(StreamInput::Stdin("abc".into()))
        .await
        .unwrap();
    s.input
        .send(StreamInput::Control(ExecControl::Eof))
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let exit = loop {
        match s.output.recv().await.unwrap() {
            StreamOutput::Stdout(b) => out.extend_from_slice(&b),
            StreamOutput::Stderr(b) => err.extend_from_slice(&b),
            StreamOutput::Exit { exit_code, .. } => break exit_code,
            StreamOutput::Error(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(
        (out.as_slice(), err.as_slice(), exit),
        (&b"abc"[..], &b"done\n"[..], 0)
    );
    // A terminal: `tty` names a pts, and a resize reaches it.
    let mut req = ExecRequest::new(Command::Shell("tty; read x; stty size".into()));
    req.tty = true;
    req.cols = Some(100);
    req.rows = Some(30);
    let mut s = c.exec_stream(req).await.unwrap();
    s.input
        .send(StreamInput::Control(ExecControl::Resize {
            cols: 120,
            rows: 40,
        }))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    s.input
        .send(StreamInput::Stdin("go\n".into()))
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        match s.output.recv().await.unwrap() {
            StreamOutput::Stdout(b) => out.extend_from_slice(&b),
            StreamOutput::Stderr(_) => {}
            StreamOutput::Exit { exit_code, .. } => {
                assert_eq!(exit_code, 0);
                break;
            }
            StreamOutput::Error(e) => panic!("{e:?}"),
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("40 120"), "{text}");
    // Dropping a stream kills its command.
    let s = c
        .exec_stream(ExecRequest::new(Command::Shell("sleep 41.5".into())))
        .await
        .unwrap();
    drop(s);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 41.5"])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "command outlived its client");
}
