//! Measures how a running `keel serve` answers while an online sweep runs:
//! request latency before the sweep (baseline) and during it, and the
//! sweep's own time. Used for the "Admin: sweep" figures in
//! docs/PERFORMANCE.md.
//!
//! ```sh
//! keel sessions populate --db big.redb --count 1000000 --expired 100000
//! keel serve --db big.redb --admin-token-file token --sweep-interval 0 &
//! cargo run --release -p keel-cli --example sweep_latency -- \
//!     http://127.0.0.1:8080 token target/release/keel 1000
//! ```
//!
//! Arguments: server URL, admin token file, the `keel` binary, sweep batch
//! size. Four client threads each increment their own counter
//! (`POST /api/count`, a durable commit) in a closed loop with 5 ms pauses;
//! the baseline lasts 5 s, then `keel sessions sweep --url ...` runs to
//! completion. Only loopback traffic, bounded in time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

const CLIENTS: usize = 4;
const PAUSE: Duration = Duration::from_millis(5);
const BASELINE: Duration = Duration::from_secs(5);
/// Give up on a sweep that runs longer than this.
const LIMIT: Duration = Duration::from_secs(600);

/// (seconds since start, latency, status)
type Sample = (f64, Duration, u16);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, token_file, keel, batch] = &args[..] else {
        eprintln!("usage: sweep_latency URL TOKEN_FILE KEEL_BINARY BATCH");
        std::process::exit(2);
    };
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, stop, samples) = (url.clone(), Arc::clone(&stop), Arc::clone(&samples));
            std::thread::spawn(move || probe(&url, &stop, &samples, started))
        })
        .collect();

    std::thread::sleep(BASELINE);
    let sweep_start = started.elapsed().as_secs_f64();
    let sweep = Command::new(keel)
        .args([
            "sessions", "sweep", "--json", "--batch", batch, "--url", url,
        ])
        .args(["--token-file", token_file])
        .output()
        .unwrap();
    let sweep_end = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().unwrap();
    }
    assert!(sweep.status.success(), "{sweep:?}");
    println!(
        "sweep: {}",
        String::from_utf8_lossy(&sweep.stdout)
            .trim()
            .replace('\n', " ")
    );
    println!("sweep wall time: {:.2} s", sweep_end - sweep_start);

    let samples = samples.lock().unwrap();
    let phase = |from: f64, to: f64| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|(t, _, _)| *t >= from && *t < to)
            .collect()
    };
    report("baseline", &phase(1.0, sweep_start), sweep_start - 1.0);
    report(
        "during sweep",
        &phase(sweep_start, sweep_end),
        sweep_end - sweep_start,
    );
}

fn probe(url: &str, stop: &AtomicBool, samples: &Mutex<Vec<Sample>>, started: Instant) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build(),
    );
    let endpoint = format!("{url}/api/count");
    let first = agent.post(&endpoint).send_empty().unwrap();
    let cookie = first
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned();
    let deadline = started + LIMIT;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let sent = Instant::now();
        let response = agent
            .post(&endpoint)
            .header("Cookie", &cookie)
            .send_empty()
            .unwrap();
        let took = sent.elapsed();
        let at = sent.duration_since(started).as_secs_f64();
        samples
            .lock()
            .unwrap()
            .push((at, took, response.status().as_u16()));
        std::thread::sleep(PAUSE);
    }
}

fn report(name: &str, samples: &[&Sample], seconds: f64) {
    let mut latencies: Vec<Duration> = samples.iter().map(|(_, d, _)| *d).collect();
    latencies.sort();
    let errors = samples.iter().filter(|(_, _, s)| *s != 200).count();
    let pct = |p: usize| {
        latencies
            .get((latencies.len() * p).div_ceil(100).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{name}: {} requests in {seconds:.1} s ({:.0}/s), {errors} not 200; latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        latencies.len(),
        latencies.len() as f64 / seconds.max(0.001),
        pct(50),
        pct(90),
        pct(99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    );
}
