//! Sandbox start-up benchmark: `warden run` against bubblewrap and gVisor's runsc, side by
//! side in one run. Each iteration runs every contender once, in rotating order, so that
//! drift on the machine (other load, CPU frequency) spreads evenly over all of them.
//!
//! Usage: warden-bench-spawn [--iterations N] [--runsc-every N] [--warden PATH] [--also LABEL=PATH]... [--markdown]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Contender {
    name: String,
    argv: Vec<String>,
    /// Run only every n-th iteration (runsc is two orders of magnitude slower).
    every: usize,
    samples: Vec<Duration>,
    failures: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or(None)
}

fn main() {
    let mut iterations = 500usize;
    let mut runsc_every = 10usize;
    let mut warden = PathBuf::from("target/release/warden");
    let mut markdown = false;
    let mut also: Vec<(String, PathBuf)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iterations" => {
                iterations = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--iterations N")
            }
            "--runsc-every" => {
                runsc_every = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--runsc-every N")
            }
            "--warden" => warden = PathBuf::from(args.next().expect("--warden PATH")),
            "--also" => {
                let spec = args.next().expect("--also LABEL=PATH");
                let (label, path) = spec.split_once('=').expect("--also LABEL=PATH");
                also.push((label.to_string(), PathBuf::from(path)));
            }
            "--markdown" => markdown = true,
            "-h" | "--help" => {
                println!(
                    "usage: warden-bench-spawn [--iterations N] [--runsc-every N] [--warden PATH] [--also LABEL=PATH]... [--markdown]\n  --also adds another warden binary (e.g. a dynamically linked build) in full isolation"
                );
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let warden = std::fs::canonicalize(&warden).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build with cargo build --release)",
            warden.display()
        )
    });
    let work = std::env::temp_dir().join(format!("warden-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("workspace");
    let w = work.display().to_string();
    let wd = warden.display().to_string();
    let python = which("python3").map(|p| p.display().to_string());

    let mut contenders: Vec<Contender> = Vec::new();
    let mut add = |name: &str, argv: Vec<String>, every: usize| {
        contenders.push(Contender {
            name: name.to_string(),
            argv,
            every,
            samples: Vec::new(),
            failures: 0,
        })
    };
    let workloads: Vec<(&str, Vec<String>)> = {
        let mut v = vec![("/bin/true", vec!["/bin/true".to_string()])];
        if let Some(py) = &python {
            // The interpreter the sandbox will find on its PATH.
            let py = if Path::new("/usr/bin/python3").exists() {
                "/usr/bin/python3".to_string()
            } else {
                py.clone()
            };
            v.push(("python3 -c pass", vec![py, "-c".into(), "pass".into()]));
        }
        v
    };
    let bwrap = which("bwrap");
    let runsc = which("runsc");
    for (label, cmd) in &workloads {
        add(&format!("{label}: no sandbox"), cmd.clone(), 1);
        let mut wr = vec![
            wd.clone(),
            "run".into(),
            "--workspace".into(),
            w.clone(),
            "--".into(),
        ];
        wr.extend(cmd.iter().cloned());
        add(&format!("{label}: warden run (full)"), wr, 1);
        for (name, path) in &also {
            let mut wa = vec![
                path.display().to_string(),
                "run".into(),
                "--workspace".into(),
                w.clone(),
                "--".into(),
            ];
            wa.extend(cmd.iter().cloned());
            add(&format!("{label}: warden run (full, {name})"), wa, 1);
        }
        let mut wp = vec![
            wd.clone(),
            "run".into(),
            "--profile".into(),
            "pod".into(),
            "--workspace".into(),
            w.clone(),
            "--".into(),
        ];
        wp.extend(cmd.iter().cloned());
        add(&format!("{label}: warden run (pod)"), wp, 1);
        if let Some(b) = &bwrap {
            let mut bw: Vec<String> = [
                b.display().to_string().as_str(),
                "--unshare-all",
                "--die-with-parent",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--tmpfs",
                "/tmp",
                "--ro-bind",
                "/",
                "/",
                "--bind",
                &w,
                &w,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            bw.extend(cmd.iter().cloned());
            add(&format!("{label}: bwrap"), bw, 1);
        }
        if let Some(r) = &runsc {
            let mut rs = vec![
                r.display().to_string(),
                "--network=none".into(),
                "do".into(),
            ];
            rs.extend(cmd.iter().cloned());
            add(&format!("{label}: runsc do"), rs, runsc_every);
        }
    }

    // Warm the page cache and check every contender works before measuring.
    for c in &mut contenders {
        let ok = Command::new(&c.argv[0])
            .args(&c.argv[1..])
            .current_dir(&work)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(ok, Ok(s) if s.success()) {
            eprintln!(
                "warning: {} does not run here ({ok:?}); its samples will count as failures",
                c.name
            );
        }
    }
    let n = contenders.len();
    for i in 0..iterations {
        for k in 0..n {
            let c = &mut contenders[(i + k) % n];
            if i % c.every != 0 {
                continue;
            }
            let start = Instant::now();
            let status = Command::new(&c.argv[0])
                .args(&c.argv[1..])
                .current_dir(&work)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let took = start.elapsed();
            match status {
                Ok(s) if s.success() => c.samples.push(took),
                _ => c.failures += 1,
            }
        }
        if (i + 1) % 50 == 0 {
            eprintln!("{}/{iterations} iterations", i + 1);
        }
    }
    let _ = std::fs::remove_dir_all(&work);

    let base = |label: &str| {
        contenders
            .iter()
            .find(|c| c.name == format!("{label}: bwrap"))
            .map(|c| {
                let mut s = c.samples.clone();
                s.sort();
                percentile(&s, 50.0)
            })
    };
    if markdown {
        println!("| contender | runs | p50 ms | p90 ms | p99 ms | mean ms | p50 vs bwrap |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
    } else {
        println!(
            "{:<34} {:>5} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "contender", "runs", "p50 ms", "p90 ms", "p99 ms", "mean ms", "vs bwrap"
        );
    }
    for c in &contenders {
        let mut s = c.samples.clone();
        s.sort();
        let mean = if s.is_empty() {
            Duration::ZERO
        } else {
            s.iter().sum::<Duration>() / s.len() as u32
        };
        let label = c.name.split(':').next().unwrap_or("");
        let ratio = base(label)
            .filter(|b| !b.is_zero())
            .map(|b| {
                format!(
                    "{:.2}x",
                    percentile(&s, 50.0).as_secs_f64() / b.as_secs_f64()
                )
            })
            .unwrap_or_else(|| "-".into());
        let runs = if c.failures > 0 {
            format!("{} ({} failed)", s.len(), c.failures)
        } else {
            s.len().to_string()
        };
        if markdown {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                c.name,
                runs,
                ms(percentile(&s, 50.0)),
                ms(percentile(&s, 90.0)),
                ms(percentile(&s, 99.0)),
                ms(mean),
                ratio
            );
        } else {
            println!(
                "{:<34} {:>5} {:>8} {:>8} {:>8} {:>8} {:>10}",
                c.name,
                runs,
                ms(percentile(&s, 50.0)),
                ms(percentile(&s, 90.0)),
                ms(percentile(&s, 99.0)),
                ms(mean),
                ratio
            );
        }
    }
}
