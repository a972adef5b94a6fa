//! `fjord-subscription-load`: what subscriptions cost the PHG ingest, and how fast their
//! notifications arrive, on Fjord's embedded default; written to `benches/RESULTS.md`.
//!
//! Single creates of home measurements for 1,000 patients from 16 clients, in rounds of two
//! runs: with every subscription `off` (the baseline, same process run), and with 1,000 active
//! rest-hook subscriptions (one per patient, `dho-observation-created` filtered by patient)
//! delivering to a receiver in this process. The rounds alternate which run goes first, so
//! the growing database favours neither; the median ratio is the figure. During each loaded
//! run a probe posts a measurement for its own subscribed patient every 20 ms: latency is from
//! the probe's answer (the write committed) to the notification's arrival.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use fjord_benches::client::{closed_loop, Connection, Outcome};
use fjord_benches::fixtures::BLOOD_PRESSURE;
use fjord_benches::server::{start_fjord, write_section};

const TOPIC: &str = "https://fjord.no/fhir/SubscriptionTopic/dho-observation-created";
const FILTER: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria";
const CONTENT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";

#[derive(Parser)]
#[command(about = "Load driver: ingest with and without 1,000 subscriptions, notification latency")]
struct Args {
    #[arg(long, default_value = "target/release/fjord")]
    fjord: PathBuf,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    #[arg(long, default_value_t = 1000)]
    subscriptions: usize,
    /// Rounds of a baseline run and a run with the subscriptions; the median ratio is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = "benches/RESULTS.md")]
    out: PathBuf,
}

/// What the receiver saw: notifications by the Observation id they name, with arrival times.
#[derive(Default)]
struct Received {
    count: AtomicU64,
    arrivals: Mutex<HashMap<String, Instant>>,
}

/// One round: the ingest with every subscription off, and with all of them active.
struct Round {
    baseline: Outcome,
    loaded: Loaded,
}

/// The run with every subscription active.
struct Loaded {
    ingest: Outcome,
    /// Notifications that arrived during the run.
    delivered_in_run: u64,
    /// Notifications the run raised, and how long after it the last one arrived.
    raised: u64,
    drained: Duration,
    /// Latency p50 and p99 of the probes during the run, and their number.
    latency: [f64; 2],
    probes: usize,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.loaded.ingest.per_second / self.baseline.per_second
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data_dir = PathBuf::from(format!(
        "/tmp/fjord-subscription-load-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut server = start_fjord(&args.fjord, &data_dir)?;
    let addr = server.addr()?;
    let patients = args.subscriptions;
    let mut put = Connection::blocking(addr)?;
    for n in 0..patients {
        put.send(
            &request(
                "PUT",
                addr,
                &format!("/fhir/default/Patient/p-{n}"),
                &format!(r#"{{"resourceType":"Patient","id":"p-{n}"}}"#),
            ),
            &[200, 201],
        )?;
    }
    for (path, body) in [
        (
            "/fhir/default/Patient/probe",
            r#"{"resourceType":"Patient","id":"probe"}"#,
        ),
        (
            "/fhir/default/Device/blodtrykksmaler-1",
            r#"{"resourceType":"Device","id":"blodtrykksmaler-1"}"#,
        ),
    ] {
        put.send(&request("PUT", addr, path, body), &[200, 201])?;
    }
    let duration = Duration::from_secs(args.seconds);
    let ingest = |clients: usize| {
        closed_loop(
            addr,
            clients,
            duration,
            move |n| {
                let body = measurement(&format!("p-{}", n as usize % patients));
                Some(request("POST", addr, "/fhir/default/Observation", &body).into_bytes())
            },
            |reply| reply.status == 201,
        )
    };
    let received = Arc::new(Received::default());
    let receiver = start_receiver(received.clone())?;
    let endpoint = format!("http://{receiver}/notify");
    // The subscribers: each patient's, and the probe's.
    let subscribers: Vec<String> = (0..patients)
        .map(|n| format!("p-{n}"))
        .chain(["probe".to_owned()])
        .collect();

    // Rounds alternate which run goes first, so neither always meets the larger database.
    let run_loaded = || {
        loaded_run(
            addr,
            &subscribers,
            &endpoint,
            &received,
            &ingest,
            args.clients,
        )
    };
    let mut rounds = Vec::new();
    for n in 0..args.rounds.max(1) {
        let (baseline, loaded) = if n % 2 == 0 {
            let baseline = ingest(args.clients)?;
            (baseline, run_loaded()?)
        } else {
            let loaded = run_loaded()?;
            (ingest(args.clients)?, loaded)
        };
        rounds.push(Round { baseline, loaded });
    }
    // The probe alone, its subscription active and nothing else going on.
    let before = received.count.load(Ordering::SeqCst);
    set_subscriptions(addr, &subscribers[patients..], &endpoint, "requested")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.count.load(Ordering::SeqCst) == before {
        if Instant::now() > deadline {
            bail!("the probe's subscription was not handshaken again");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let running = Arc::new(AtomicBool::new(true));
    let probe = {
        let running = running.clone();
        std::thread::spawn(move || probe_writes(addr, &running))
    };
    std::thread::sleep(Duration::from_secs(5));
    running.store(false, Ordering::SeqCst);
    let quiet_probes = probe.join().expect("probe")?;
    std::thread::sleep(Duration::from_secs(1));
    let quiet = latency_ms(&received, &quiet_probes);
    server.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);

    let mut ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    let mut table = String::new();
    for (n, round) in rounds.iter().enumerate() {
        table.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} | {:.0} / {:.0} |\n",
            n + 1,
            round.baseline.per_second,
            round.baseline.percentile_ms(0.5),
            round.baseline.percentile_ms(0.99),
            round.loaded.ingest.per_second,
            round.loaded.ingest.percentile_ms(0.5),
            round.loaded.ingest.percentile_ms(0.99),
            round.ratio(),
            round.loaded.delivered_in_run as f64 / args.seconds as f64,
            round.loaded.drained.as_secs_f64(),
            round.loaded.latency[0],
            round.loaded.latency[1],
        ));
    }
    let raised: u64 = rounds.iter().map(|r| r.loaded.raised).sum();
    let probes: usize = rounds.iter().map(|r| r.loaded.probes).sum();
    let text = format!(
        "## Subscriptions ({} rounds of two {} s runs, {} clients, 2-core machine)\n\n\
         `cargo run --release -p fjord-benches --bin fjord-subscription-load` on a fresh embedded default. \
         Single creates of a blood-pressure Observation for {patients} patients, in rounds of two runs: \
         with every subscription `off` (the baseline), and with {patients} active rest-hook subscriptions \
         (`dho-observation-created`, one per patient, `id-only`) delivering to a receiver in the driver; \
         each subscription's notifications are audited, one AuditEvent per 10 s window, as each create \
         is. The rounds alternate which run goes first, so that neither always meets the larger database.\n\n\
         | round | baseline creates/s | p50 ms | p99 ms | with subscriptions creates/s | p50 ms | p99 ms | ratio | delivered/s during the run | drained after (s) | latency p50 / p99 ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         {table}\n\
         **Median ratio {median:.2}** (target: ingest drops at most 10%, ratio ≥ 0.90). All {raised} \
         notifications the loaded runs raised arrived.\n\n\
         Latency is from commit (a probe's 201, every 20 ms, for a subscribed patient of its own) to the \
         receiver, during the loaded run ({probes} probes in all); under it the 2 cores are saturated by \
         the ingest, and the dispatcher's share of them sets the lag. With nothing else running \
         ({} probes): p50 {:.1} ms, p99 {:.1} ms.\n",
        args.rounds.max(1),
        args.seconds,
        args.clients,
        quiet_probes.len(),
        quiet[0],
        quiet[1],
    );
    write_section(&args.out, "subscriptions", &text)?;
    println!("{text}");
    Ok(())
}

/// The ingest with every subscription active, probes posting beside it. The subscriptions are
/// off again when it returns.
fn loaded_run(
    addr: SocketAddr,
    subscribers: &[String],
    endpoint: &str,
    received: &Received,
    ingest: &dyn Fn(usize) -> std::io::Result<Outcome>,
    clients: usize,
) -> anyhow::Result<Loaded> {
    let before = received.count.load(Ordering::SeqCst);
    set_subscriptions(addr, subscribers, endpoint, "requested")?;
    // Every handshake answered: all are active.
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.count.load(Ordering::SeqCst) < before + subscribers.len() as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} handshakes arrived",
                received.count.load(Ordering::SeqCst) - before
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let before = received.count.load(Ordering::SeqCst);
    let running = Arc::new(AtomicBool::new(true));
    let probe = {
        let running = running.clone();
        std::thread::spawn(move || probe_writes(addr, &running))
    };
    let outcome = ingest(clients)?;
    running.store(false, Ordering::SeqCst);
    let answered = probe.join().expect("probe")?;
    let delivered_in_run = received.count.load(Ordering::SeqCst) - before;
    // The backlog the run left, drained.
    let raised = outcome.latencies.len() as u64 + answered.len() as u64;
    let drain_started = Instant::now();
    while received.count.load(Ordering::SeqCst) - before < raised {
        if drain_started.elapsed() > Duration::from_secs(120) {
            bail!(
                "notifications stopped at {} of {raised}; the server counts {} events",
                received.count.load(Ordering::SeqCst) - before,
                raised_events(addr)?
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let drained = drain_started.elapsed();
    let latency = latency_ms(received, &answered);
    set_subscriptions(addr, subscribers, endpoint, "off")?;
    Ok(Loaded {
        ingest: outcome,
        delivered_in_run,
        raised,
        drained,
        latency,
        probes: answered.len(),
    })
}

/// Sets every subscriber's Subscription (id `sub-{subscriber}`) to `status`, creating it the
/// first time.
fn set_subscriptions(
    addr: SocketAddr,
    subscribers: &[String],
    endpoint: &str,
    status: &str,
) -> anyhow::Result<()> {
    let mut put = Connection::blocking(addr)?;
    for subscriber in subscribers {
        put.send(
            &request(
                "PUT",
                addr,
                &format!("/fhir/default/Subscription/sub-{subscriber}"),
                &subscription(subscriber, endpoint, status),
            ),
            &[200, 201],
        )?;
    }
    Ok(())
}

/// Latency percentiles (p50, p99) in ms from each probe's 201 to its notification.
fn latency_ms(received: &Received, answered: &[(String, Instant)]) -> [f64; 2] {
    let arrivals = received.arrivals.lock().unwrap();
    let mut latencies: Vec<f64> = answered
        .iter()
        .filter_map(|(id, at)| {
            let arrived = arrivals.get(id)?;
            Some(arrived.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    if latencies.is_empty() {
        return [f64::NAN; 2];
    }
    latencies.sort_by(f64::total_cmp);
    let rank =
        |q: f64| ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
    [latencies[rank(0.5)], latencies[rank(0.99)]]
}

/// The events the server raised for every subscription (`$status`).
fn raised_events(addr: SocketAddr) -> anyhow::Result<u64> {
    let mut connection = Connection::blocking(addr)?;
    let path = "/fhir/default/Subscription/$status";
    let status = connection.send(&request("GET", addr, path, ""), &[200])?;
    let bundle: serde_json::Value = serde_json::from_slice(&status.body)?;
    let mut total = 0;
    for entry in bundle["entry"].as_array().into_iter().flatten() {
        for parameter in entry["resource"]["parameter"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if parameter["name"] == "events-since-subscription-start" {
                total += parameter["valueString"]
                    .as_str()
                    .unwrap_or("0")
                    .parse::<u64>()?;
            }
        }
    }
    Ok(total)
}

fn measurement(patient: &str) -> String {
    BLOOD_PRESSURE.replace("Patient/pasient-1", &format!("Patient/{patient}"))
}

fn subscription(patient: &str, endpoint: &str, status: &str) -> String {
    serde_json::json!({
        "resourceType": "Subscription", "id": format!("sub-{patient}"), "status": status, "reason": "bench",
        "criteria": TOPIC,
        "_criteria": { "extension": [{ "url": FILTER, "valueString": format!("patient=Patient/{patient}") }] },
        "channel": {
            "type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
            "_payload": { "extension": [{ "url": CONTENT, "valueCode": "id-only" }] },
        },
    })
    .to_string()
}

fn request(method: &str, addr: SocketAddr, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/fhir+json\r\n\
         Prefer: return=minimal\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Posts a measurement of the probe patient every 20 ms until told to stop; each created id
/// with the moment its 201 arrived.
fn probe_writes(addr: SocketAddr, running: &AtomicBool) -> anyhow::Result<Vec<(String, Instant)>> {
    let mut connection = Connection::blocking(addr)?;
    let mut answered = Vec::new();
    while running.load(Ordering::SeqCst) {
        let reply = connection.send(
            &request(
                "POST",
                addr,
                "/fhir/default/Observation",
                &measurement("probe"),
            ),
            &[201],
        )?;
        let at = Instant::now();
        let location = reply.location.context("a 201 names its Location")?;
        let id = location
            .split("/Observation/")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .context("Location")?;
        answered.push((id.to_owned(), at));
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(answered)
}

/// An HTTP endpoint on its own runtime that answers 200 to everything and notes, per request,
/// the Observation ids it names.
fn start_receiver(received: Arc<Received>) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let received = received.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &received).await;
                });
            }
        });
    });
    Ok(addr)
}

/// Requests of one keep-alive connection.
async fn serve(mut stream: tokio::net::TcpStream, received: &Received) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        let (head_length, body_length) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(length)) = parsed.parse(&buffer) {
                let body = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .unwrap_or(0usize);
                break (length, body);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        while buffer.len() < head_length + body_length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        let at = Instant::now();
        let body =
            String::from_utf8_lossy(&buffer[head_length..head_length + body_length]).into_owned();
        buffer.drain(..head_length + body_length);
        {
            let mut arrivals = received.arrivals.lock().unwrap();
            for part in body.split("/Observation/").skip(1) {
                if let Some(id) = part.split('"').next() {
                    arrivals.entry(id.to_owned()).or_insert(at);
                }
            }
        }
        received.count.fetch_add(1, Ordering::SeqCst);
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await?;
    }
}
