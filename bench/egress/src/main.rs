//! Egress proxy benchmark: warden's proxy against squid with the same allowlist, side by
//! side in one run, against the same local upstreams.
//!
//! Figures: added latency (p50, p99) of small HTTP requests on a kept-alive connection and of
//! opening a CONNECT tunnel plus one round trip; requests per second with several clients;
//! upload throughput of 1 GiB through a tunnel; the proxy's RSS with 1,000 tunnels open.
//!
//! The measurements run in rounds, and in every round each figure is taken for the direct
//! path and for each proxy in turn (the order rotating from round to round), so that a slow
//! spell of the machine hits every contender alike. Latency samples are pooled over the
//! rounds; requests per second and throughput are the median of the rounds.
//!
//! Usage: warden-bench-egress [--requests N] [--gib N] [--tunnels N] [--rounds N] [--markdown]
//! [--also NAME=BENCH-BINARY]... (and, internally, `warden-bench-egress serve-warden PORT...`
//! runs warden's proxy). `--also` adds another build of warden's proxy as a contender, such as
//! this benchmark built from an earlier commit, for a before/after in the same run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-warden") {
        serve_warden(&args[1..]);
        return;
    }
    let mut requests = 5000usize;
    let mut gib = 1u64;
    let mut tunnels = 1000usize;
    let mut rounds = 5usize;
    let mut markdown = false;
    let mut also: Vec<(String, PathBuf)> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--requests" => {
                requests = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--requests N")
            }
            "--gib" => gib = it.next().and_then(|v| v.parse().ok()).expect("--gib N"),
            "--tunnels" => tunnels = it.next().and_then(|v| v.parse().ok()).expect("--tunnels N"),
            "--rounds" => {
                rounds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--rounds N (at least 1)")
            }
            "--markdown" => markdown = true,
            "--also" => {
                let spec = it.next().expect("--also NAME=BENCH-BINARY");
                let (name, path) = spec.split_once('=').expect("--also NAME=BENCH-BINARY");
                also.push((name.to_string(), PathBuf::from(path)));
            }
            "-h" | "--help" => {
                println!(
                    "usage: warden-bench-egress [--requests N] [--gib N] [--tunnels N] [--rounds N] [--markdown] [--also NAME=BENCH-BINARY]..."
                );
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }

    let http = spawn_server(serve_http);
    let echo = spawn_server(serve_echo);
    let sink = spawn_server(serve_sink);
    let ports = [http, echo, sink];
    let work = std::env::temp_dir().join(format!("warden-bench-egress-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();

    let mut proxies: Vec<(String, Child, u16)> = Vec::new();
    let exe = std::env::current_exe().unwrap();
    for (name, bench) in std::iter::once(("warden".to_string(), exe)).chain(also) {
        let port = free_port();
        let mut args = vec!["serve-warden".to_string(), port.to_string()];
        args.extend(ports.iter().map(|p| p.to_string()));
        let child = with_parent_death(&bench)
            .args(&args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} ({}): {e}", bench.display()));
        proxies.push((name, child, port));
    }
    match start_squid(&work, &ports) {
        Some((child, port)) => proxies.push(("squid".into(), child, port)),
        None => eprintln!("warning: squid not found or did not start; only warden is measured"),
    }
    for (name, _, port) in &proxies {
        wait_listening(*port).unwrap_or_else(|| panic!("{name} did not start listening"));
    }

    // Every figure, round by round: the direct path and each proxy in turn, the order
    // rotating so that no contender always goes first or last.
    let per_round = requests.div_ceil(rounds);
    let mut direct_http = Vec::new();
    let mut direct_connect = Vec::new();
    let mut results: Vec<Figures> = proxies
        .iter()
        .map(|(name, _, _)| Figures::new(name))
        .collect();
    for round in 0..rounds {
        let mut order: Vec<Option<usize>> = std::iter::once(None)
            .chain((0..proxies.len()).map(Some))
            .collect();
        let contenders = order.len();
        order.rotate_left(round % contenders);
        for &who in &order {
            let proxy = who.map(|i| proxies[i].2);
            let lat = http_latencies(proxy, http, per_round);
            let tun = connect_latencies(proxy, echo, per_round / 5);
            match who {
                None => {
                    direct_http.extend(lat);
                    direct_connect.extend(tun);
                }
                Some(i) => {
                    results[i].http.extend(lat);
                    results[i].connect.extend(tun);
                }
            }
        }
        for &i in order.iter().flatten() {
            let port = proxies[i].2;
            results[i]
                .rps
                .push(requests_per_second(port, http, 8, Duration::from_secs(3)));
        }
        for &i in order.iter().flatten() {
            let port = proxies[i].2;
            results[i].mbps.push(tunnel_throughput(port, sink, gib));
        }
    }
    for (i, (_, child, port)) in proxies.iter().enumerate() {
        results[i].rss_kib = rss_with_tunnels(*port, echo, tunnels, child.id());
    }

    let mut rows: Vec<Vec<String>> = Vec::new();
    for f in &results {
        rows.push(vec![
            f.name.clone(),
            format!("{:.0}", median(&f.rps)),
            us(added(&f.http, &direct_http, 50.0)),
            us(added(&f.http, &direct_http, 99.0)),
            us(added(&f.connect, &direct_connect, 50.0)),
            us(added(&f.connect, &direct_connect, 99.0)),
            format!("{:.0}", median(&f.mbps)),
            format!("{:.1}", f.rss_kib as f64 / 1024.0),
        ]);
    }
    let header = [
        "proxy",
        "HTTP req/s (8 clients)",
        "HTTP added p50 µs",
        "HTTP added p99 µs",
        "CONNECT+RTT added p50 µs",
        "CONNECT+RTT added p99 µs",
        "tunnel MiB/s",
        &format!("RSS MiB, {tunnels} tunnels"),
    ];
    if markdown {
        println!("| {} |", header.join(" | "));
        println!("|{}", "---|".repeat(header.len()));
        for r in &rows {
            println!("| {} |", r.join(" | "));
        }
    } else {
        println!("{}", header.join("\t"));
        for r in &rows {
            println!("{}", r.join("\t"));
        }
    }
    if let Some(q) = results.iter().find(|f| f.name == "squid") {
        let ratio = |a: f64, b: f64| a / b;
        println!();
        for w in results.iter().filter(|f| f.name != "squid") {
            println!(
                "{} vs squid ({rounds} rounds): req/s {:.2}x, HTTP added p50 {:.2}x, p99 {:.2}x, \
                 CONNECT added p50 {:.2}x, p99 {:.2}x, throughput {:.2}x, RSS {:.2}x",
                w.name,
                ratio(median(&w.rps), median(&q.rps)),
                ratio(
                    added(&w.http, &direct_http, 50.0),
                    added(&q.http, &direct_http, 50.0)
                ),
                ratio(
                    added(&w.http, &direct_http, 99.0),
                    added(&q.http, &direct_http, 99.0)
                ),
                ratio(
                    added(&w.connect, &direct_connect, 50.0),
                    added(&q.connect, &direct_connect, 50.0)
                ),
                ratio(
                    added(&w.connect, &direct_connect, 99.0),
                    added(&q.connect, &direct_connect, 99.0)
                ),
                ratio(median(&w.mbps), median(&q.mbps)),
                w.rss_kib as f64 / q.rss_kib as f64,
            );
        }
        println!("(higher is better for req/s and throughput, lower for latency and RSS)");
    }
    for f in &results {
        println!(
            "per round, {}: req/s {:?}, MiB/s {:?}",
            f.name,
            rounded(&f.rps),
            rounded(&f.mbps)
        );
    }
    for (_, mut child, _) in proxies {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// One proxy's measurements, accumulated over the rounds.
struct Figures {
    name: String,
    http: Vec<Duration>,
    connect: Vec<Duration>,
    rps: Vec<f64>,
    mbps: Vec<f64>,
    rss_kib: u64,
}

impl Figures {
    fn new(name: &str) -> Self {
        Figures {
            name: name.to_string(),
            http: Vec::new(),
            connect: Vec::new(),
            rps: Vec::new(),
            mbps: Vec::new(),
            rss_kib: 0,
        }
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

fn rounded(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.round() as u64).collect()
}

fn us(d: f64) -> String {
    format!("{:.0}", d)
}

/// The p-th percentile of `with` minus that of `without`, in microseconds.
fn added(with: &[Duration], without: &[Duration], p: f64) -> f64 {
    (percentile(with, p).as_secs_f64() - percentile(without, p).as_secs_f64()) * 1e6
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

/// A command that dies with this process (through util-linux's `setpriv --pdeathsig` where
/// it exists), so that an aborted run leaves no proxy behind.
fn with_parent_death(program: &std::path::Path) -> Command {
    if std::path::Path::new("/usr/bin/setpriv").exists() {
        let mut c = Command::new("/usr/bin/setpriv");
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) -> Option<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

// --- proxies ----------------------------------------------------------------------------------

fn serve_warden(args: &[String]) {
    let port: u16 = args[0].parse().unwrap();
    let mut policy = warden_egress::EgressPolicy::new()
        .allow_domain("localhost")
        .unwrap()
        .allow_cidr("127.0.0.0/8")
        .unwrap();
    for p in &args[1..] {
        policy = policy.allow_port(p.parse().unwrap()).unwrap();
    }
    struct Discard;
    impl warden_egress::AuditSink for Discard {
        fn record(&self, _: warden_egress::AuditEvent) {}
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async move {
        let proxy = warden_egress::Proxy::bind(
            format!("127.0.0.1:{port}").parse().unwrap(),
            policy,
            Arc::new(Discard),
            warden_egress::ProxyOptions::new("bench"),
        )
        .await
        .unwrap();
        proxy.serve().await;
    });
}

fn start_squid(work: &std::path::Path, ports: &[u16]) -> Option<(Child, u16)> {
    let squid = ["/usr/sbin/squid", "/usr/bin/squid"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    let port = free_port();
    let port_list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let w = work.display();
    let conf = format!(
        "http_port 127.0.0.1:{port}\n\
         acl allowed dstdomain localhost\n\
         acl ports port 80 443 {ports}\n\
         http_access deny !ports\n\
         http_access allow allowed\n\
         http_access deny all\n\
         cache deny all\n\
         cache_mem 8 MB\n\
         access_log none\n\
         cache_log {w}/cache.log\n\
         pid_filename {w}/squid.pid\n\
         coredump_dir {w}\n\
         shutdown_lifetime 0 seconds\n\
         max_filedescriptors 8192\n\
         workers 1\n",
        ports = port_list.join(" ")
    );
    let path = work.join("squid.conf");
    std::fs::write(&path, conf).ok()?;
    let child = with_parent_death(&squid)
        .args(["-N", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((child, port))
}

// --- upstreams --------------------------------------------------------------------------------

fn spawn_server(handler: fn(TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || handler(conn))
                .unwrap();
        }
    });
    port
}

/// Answers every request on a kept-alive connection with a small body.
fn serve_http(conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        if conn
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
            )
            .is_err()
        {
            return;
        }
    }
}

fn serve_echo(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 16384];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads an 8-byte length, then that many bytes, then answers with the count received (no
/// half-close: not every proxy passes one through a tunnel).
fn serve_sink(mut conn: TcpStream) {
    let mut len = [0u8; 8];
    if conn.read_exact(&mut len).is_err() {
        return;
    }
    let want = u64::from_be_bytes(len);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    while total < want {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    let _ = conn.write_all(&total.to_be_bytes());
}

// --- clients ----------------------------------------------------------------------------------

fn read_response(reader: &mut BufReader<TcpStream>) -> usize {
    let mut line = String::new();
    let mut length = 0usize;
    let mut status_ok = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("connection closed mid-response");
        }
        if line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200") {
            status_ok = true;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    assert!(status_ok, "the proxy did not answer 200");
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    length
}

/// Latency of small GETs on one kept-alive connection, through `proxy` or direct.
fn http_latencies(proxy: Option<u16>, upstream: u16, n: usize) -> Vec<Duration> {
    let port = proxy.unwrap_or(upstream);
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_nodelay(true).unwrap();
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    let target = if proxy.is_some() {
        format!("http://localhost:{upstream}/")
    } else {
        "/".into()
    };
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost:{upstream}\r\n\r\n");
    for _ in 0..100 {
        writer.write_all(request.as_bytes()).unwrap();
        read_response(&mut reader);
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        writer.write_all(request.as_bytes()).unwrap();
        read_response(&mut reader);
        v.push(t.elapsed());
    }
    v
}

/// Opens a tunnel (or a direct connection) and does one 64-byte round trip.
fn open_tunnel(proxy: Option<u16>, upstream: u16) -> TcpStream {
    let port = proxy.unwrap_or(upstream);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_nodelay(true).unwrap();
    if proxy.is_some() {
        conn.write_all(
            format!("CONNECT localhost:{upstream} HTTP/1.1\r\nHost: localhost:{upstream}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            conn.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
    }
    conn
}

fn connect_latencies(proxy: Option<u16>, echo: u16, n: usize) -> Vec<Duration> {
    let payload = [7u8; 64];
    let mut v = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        let mut conn = open_tunnel(proxy, echo);
        conn.write_all(&payload).unwrap();
        let mut back = [0u8; 64];
        conn.read_exact(&mut back).unwrap();
        if i >= 20 {
            v.push(t.elapsed());
        }
    }
    v
}

fn requests_per_second(proxy: u16, upstream: u16, clients: usize, dur: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let conn = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
                conn.set_nodelay(true).unwrap();
                let mut writer = conn.try_clone().unwrap();
                let mut reader = BufReader::new(conn);
                let request = format!("GET http://localhost:{upstream}/ HTTP/1.1\r\nHost: localhost:{upstream}\r\n\r\n");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    writer.write_all(request.as_bytes()).unwrap();
                    read_response(&mut reader);
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / dur.as_secs_f64()
}

/// MiB/s uploading `gib` GiB through a tunnel to the sink.
fn tunnel_throughput(proxy: u16, sink: u16, gib: u64) -> f64 {
    let mut conn = open_tunnel(Some(proxy), sink);
    let chunk = vec![0x5au8; 1 << 20];
    let total = gib << 30;
    let t = Instant::now();
    conn.write_all(&total.to_be_bytes()).unwrap();
    let mut sent = 0u64;
    while sent < total {
        conn.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    let mut count = [0u8; 8];
    conn.read_exact(&mut count).unwrap();
    let elapsed = t.elapsed();
    assert_eq!(u64::from_be_bytes(count), total, "bytes lost in the tunnel");
    total as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
}

/// The proxy's resident memory (KiB) with `n` tunnels open (each used once).
fn rss_with_tunnels(proxy: u16, echo: u16, n: usize, pid: u32) -> u64 {
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = open_tunnel(Some(proxy), echo);
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        open.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss = process_tree_rss(pid);
    drop(open);
    rss
}

/// VmRSS of a process and its children (squid forks its worker), in KiB.
fn process_tree_rss(pid: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}
