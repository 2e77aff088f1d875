//! Sandboxes as a service, measured through `warden serve`'s HTTP API (issue 4):
//!
//! (a) claim from a warm pool, then the first exec in the claimed sandbox;
//! (b) exec round trip in a warm sandbox, against plain fork+exec of the same command;
//! (c) many concurrent idle sandboxes: creation rate and memory per sandbox;
//! (d) cold create.
//!
//! It starts its own `warden serve` on a fresh data directory and talks HTTP/1.1 over one
//! kept-alive connection per thread (a hand-rolled client: the measured path should be the
//! server's, not a client library's).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

struct Args {
    warden: PathBuf,
    claims: usize,
    execs: usize,
    idle: usize,
    cold: usize,
    concurrency: usize,
    markdown: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        warden: PathBuf::from("target/release/warden"),
        claims: 200,
        execs: 1000,
        idle: 1000,
        cold: 50,
        concurrency: 8,
        markdown: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match flag.as_str() {
            "--warden" => a.warden = PathBuf::from(it.next().expect("--warden needs a path")),
            "--claims" => a.claims = num("--claims"),
            "--execs" => a.execs = num("--execs"),
            "--idle" => a.idle = num("--idle"),
            "--cold" => a.cold = num("--cold"),
            "--concurrency" => a.concurrency = num("--concurrency"),
            "--markdown" => a.markdown = true,
            "-h" | "--help" => {
                println!(
                    "usage: warden-bench-sandbox [--warden PATH] [--claims N] [--execs N] \
                     [--idle N] [--cold N] [--concurrency N] [--markdown]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown flag {other}; see --help"),
        }
    }
    a
}

/// One kept-alive HTTP/1.1 connection to `warden serve`.
struct Conn {
    addr: String,
    token: String,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str, token: &str) -> Conn {
        let s = TcpStream::connect(addr).expect("connect to warden serve");
        s.set_nodelay(true).unwrap();
        Conn {
            addr: addr.to_string(),
            token: token.to_string(),
            reader: BufReader::new(s),
        }
    }

    /// Sends a request and reads the whole response: (status, body).
    fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        self.reader.get_mut().write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).unwrap();
                let n = usize::from_str_radix(line.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            out.resize(n, 0);
            self.reader.read_exact(&mut out).unwrap();
        }
        (status, out)
    }

    fn json(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let (status, bytes) = self.call(method, path, body);
        let text = String::from_utf8_lossy(&bytes);
        if !(200..300).contains(&status) {
            return Err(format!("{method} {path} -> {status}: {text}"));
        }
        if bytes.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice(&bytes).map_err(|_| format!("not JSON: {text}"))
        }
    }
}

struct Server {
    child: Child,
    addr: String,
    token: String,
    data: PathBuf,
}

impl Server {
    fn start(warden: &Path) -> Server {
        let data =
            std::env::temp_dir().join(format!("warden-bench-sandbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(warden)
            .args(["serve", "--listen", &addr, "--data"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.with_extension("log")).unwrap())
            .spawn()
            .expect("start warden serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let (Ok(_), Ok(token)) = (
                TcpStream::connect(&addr),
                std::fs::read_to_string(data.join("token")),
            ) {
                return Server {
                    child,
                    addr,
                    token: token.trim().to_string(),
                    data,
                };
            }
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "warden serve did not start; see {}",
                    data.with_extension("log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn conn(&self) -> Conn {
        Conn::open(&self.addr, &self.token)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Sandboxes outlive the server on purpose: delete them (pool first, so that it does
        // not refill) before stopping it.
        let mut c = self.conn();
        let _ = c.call("DELETE", "/v1/pools/bench", None);
        let list = c
            .json("GET", "/v1/sandboxes?all=true", None)
            .unwrap_or_default();
        for s in list.as_array().into_iter().flatten() {
            let id = s["id"].as_str().unwrap_or_default();
            let _ = c.call("DELETE", &format!("/v1/sandboxes/{id}"), None);
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn wait_pool_ready(c: &mut Conn, want: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = c.json("GET", "/v1/pools/bench", None)?;
        if p["ready"].as_u64().unwrap_or(0) >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("pool never filled: {p}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn exec_true(c: &mut Conn, id: &str) -> Result<(), String> {
    let r = c.json(
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        Some(&json!({"command": ["/bin/true"]})),
    )?;
    if r["exit_code"] != 0 {
        return Err(format!("exec /bin/true in {id}: {r}"));
    }
    Ok(())
}

fn id_of(s: &Value) -> Result<String, String> {
    s["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no id in {s}"))
}

struct Row {
    what: String,
    n: usize,
    p50: Duration,
    p99: Duration,
    note: String,
}

fn row(what: &str, samples: &[Duration], note: String) -> Row {
    Row {
        what: what.into(),
        n: samples.len(),
        p50: percentile(samples, 50.0),
        p99: percentile(samples, 99.0),
        note,
    }
}

fn meminfo_available_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pids() -> BTreeSet<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// (Pss, Private_Dirty + Private_Clean) in KiB, from smaps_rollup.
fn pss_private_kib(pid: u32) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return (0, 0);
    };
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (
        field("Pss:"),
        field("Private_Dirty:") + field("Private_Clean:"),
    )
}

fn main() {
    let args = parse_args();
    let server = Server::start(&args.warden);
    // The release profile aborts on panic, which would skip `Server`'s cleanup: every
    // failure is an error returned here instead.
    let result = run(&args, &server);
    drop(server);
    if let Err(e) = result {
        eprintln!("warden-bench-sandbox: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args, server: &Server) -> Result<(), String> {
    let mut c = server.conn();
    let template =
        json!({"policy": {"profile": "default"}, "shutdown_after": "2h", "idle_timeout": "2h"});
    c.json("PUT", "/v1/templates/bench", Some(&template))?;
    let pool = |replicas: u32| json!({"template": "bench", "replicas": replicas});
    c.json("PUT", "/v1/pools/bench", Some(&pool(4)))?;
    let mut rows = Vec::new();

    // (a) warm claim, then the first exec.
    let (mut claim, mut first, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.claims {
        wait_pool_ready(&mut c, 1)?;
        let t = Instant::now();
        let s = c.json("POST", "/v1/sandboxes", Some(&json!({"pool": "bench"})))?;
        let t_claim = t.elapsed();
        let id = id_of(&s)?;
        if s["launch"] != "warm" {
            return Err(format!("the pool was ready, yet the claim was cold: {s}"));
        }
        let t1 = Instant::now();
        exec_true(&mut c, &id)?;
        first.push(t1.elapsed());
        both.push(t.elapsed());
        claim.push(t_claim);
        c.json("DELETE", &format!("/v1/sandboxes/{id}"), None)?;
    }
    let p50_ms = |v: &[Duration]| percentile(v, 50.0).as_secs_f64() * 1000.0;
    rows.push(row(
        "(a) claim from warm pool",
        &claim,
        format!(
            "target p50 <= 5 ms; upstream agent-sandbox 92 ms: {:.0}x faster",
            92.0 / p50_ms(&claim)
        ),
    ));
    rows.push(row("(a) first exec after claim", &first, String::new()));
    rows.push(row(
        "(a) claim + first exec",
        &both,
        format!(
            "E2B start 100-150 ms: {:.0}x faster than 100 ms",
            100.0 / p50_ms(&both)
        ),
    ));

    // (b) exec round trips in one warm sandbox, and plain fork+exec.
    wait_pool_ready(&mut c, 1)?;
    let id = id_of(&c.json("POST", "/v1/sandboxes", Some(&json!({"pool": "bench"})))?)?;
    let (mut api, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        exec_true(&mut c, &id)?;
    }
    for i in 0..args.execs * 2 {
        // Interleaved, so that drift on the machine spreads over both.
        let t = Instant::now();
        if i % 2 == 0 {
            exec_true(&mut c, &id)?;
            api.push(t.elapsed());
        } else {
            let st = Command::new("/bin/true")
                .status()
                .map_err(|e| format!("/bin/true: {e}"))?;
            if !st.success() {
                return Err(format!("/bin/true: {st}"));
            }
            floor.push(t.elapsed());
        }
    }
    rows.push(row(
        "(b) exec /bin/true over the HTTP API",
        &api,
        format!(
            "target p50 <= 2 ms; {:.2}x the fork+exec floor",
            p50_ms(&api) / p50_ms(&floor)
        ),
    ));
    rows.push(row(
        "(b) fork+exec /bin/true, no sandbox",
        &floor,
        "floor".into(),
    ));
    c.json("DELETE", &format!("/v1/sandboxes/{id}"), None)?;
    c.json("PUT", "/v1/pools/bench", Some(&pool(0)))?;

    // (d) cold create (returns once the sandbox answers), then delete.
    let mut cold = Vec::new();
    for _ in 0..args.cold {
        let t = Instant::now();
        let s = c.json("POST", "/v1/sandboxes", Some(&json!({"template": "bench"})))?;
        cold.push(t.elapsed());
        c.json("DELETE", &format!("/v1/sandboxes/{}", id_of(&s)?), None)?;
    }
    rows.push(row(
        "(d) cold create",
        &cold,
        format!(
            "E2B 100-150 ms: {:.1}x faster than 100 ms",
            100.0 / p50_ms(&cold)
        ),
    ));

    // (c) many idle sandboxes at once.
    std::thread::sleep(Duration::from_secs(2));
    let before_pids = pids();
    let before_avail = meminfo_available_kib();
    let created = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (created, next) = (created.clone(), next.clone());
            let mut conn = server.conn();
            let n = args.idle;
            std::thread::spawn(move || -> Result<(), String> {
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let s =
                        conn.json("POST", "/v1/sandboxes", Some(&json!({"template": "bench"})))?;
                    created.lock().unwrap().push(id_of(&s)?);
                }
                Ok(())
            })
        })
        .collect();
    let mut failure = None;
    for w in workers {
        if let Err(e) = w
            .join()
            .unwrap_or_else(|_| Err("a client thread died".into()))
        {
            failure.get_or_insert(e);
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let create_time = t.elapsed();
    let ids = created.lock().unwrap().clone();
    std::thread::sleep(Duration::from_secs(5));
    let after_avail = meminfo_available_kib();
    let serve_pid = server.child.id();
    let (mut pss, mut private) = (0, 0);
    let mut processes = 0;
    for pid in pids().difference(&before_pids) {
        if *pid == serve_pid {
            continue;
        }
        let (p, q) = pss_private_kib(*pid);
        pss += p;
        private += q;
        processes += 1;
    }
    // Every sandbox still answers.
    for id in ids.iter().step_by((ids.len() / 20).max(1)) {
        exec_true(&mut c, id)?;
    }
    let n = ids.len() as f64;
    let system_kib = before_avail.saturating_sub(after_avail) as f64;
    println!(
        "(c) {} idle sandboxes: created in {:.1} s ({:.0}/s at concurrency {}); {} new processes ({:.1} per sandbox); \
         per sandbox: Pss {:.0} KiB, private {:.0} KiB, MemAvailable drop {:.0} KiB (kernel included; target <= 2048 KiB)",
        ids.len(),
        create_time.as_secs_f64(),
        n / create_time.as_secs_f64(),
        args.concurrency,
        processes,
        processes as f64 / n,
        pss as f64 / n,
        private as f64 / n,
        system_kib / n
    );
    let t = Instant::now();
    for id in &ids {
        c.json("DELETE", &format!("/v1/sandboxes/{id}"), None)?;
    }
    println!(
        "(c) deleted {} sandboxes in {:.1} s",
        ids.len(),
        t.elapsed().as_secs_f64()
    );

    if args.markdown {
        println!("\n| measurement | runs | p50 ms | p99 ms | note |\n|---|---:|---:|---:|---|");
        for r in &rows {
            println!(
                "| {} | {} | {} | {} | {} |",
                r.what,
                r.n,
                ms(r.p50),
                ms(r.p99),
                r.note
            );
        }
    } else {
        for r in &rows {
            println!(
                "{:<40} n={:<5} p50={:>8} ms p99={:>8} ms  {}",
                r.what,
                r.n,
                ms(r.p50),
                ms(r.p99),
                r.note
            );
        }
    }
    Ok(())
}
