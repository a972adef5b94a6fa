//! `fjord-search-load`: search latency on a large data set. Loads home measurements through the
//! REST API into a fresh embedded Fjord (by default 10,000 patients with 100 Observations each,
//! spread over three tenants), then runs the typical queries of the home-care apps from
//! concurrent clients and writes p50/p95/p99 to its section of `benches/RESULTS.md`, beside the
//! latency of a read by id measured in the same run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use fjord_benches::client::{closed_loop, Outcome, Reply};
use fjord_benches::server::{settle, start_fjord, write_section};

#[derive(Parser)]
#[command(about = "Search latency of Fjord on a large data set")]
struct Args {
    /// The fjord binary to start.
    #[arg(long, default_value = "target/release/fjord")]
    fjord: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    patients: usize,
    #[arg(long, default_value_t = 100)]
    observations_per_patient: usize,
    /// Clients while loading.
    #[arg(long, default_value_t = 16)]
    load_clients: usize,
    /// Concurrent clients of every query.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds each query runs.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    #[arg(long, default_value = "benches/RESULTS.md")]
    out: PathBuf,
    /// Keep the data here, and load nothing when it holds data already (for repeated runs
    /// against the same data set); by default a fresh directory, removed afterwards.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run only the queries whose name contains this (and the baseline).
    #[arg(long)]
    only: Option<String>,
}

/// The tenants; patient `i` belongs to `TENANTS[i % TENANTS.len()]`. Queries run in the first.
const TENANTS: [&str; 3] = ["default", "hf-nord", "hf-vest"];
const FNR: &str = "urn:oid:2.16.578.1.12.4.1.4.1";
const LOINC: &str = "http://loinc.org";
/// (LOINC code, category, UCUM unit, typical value) of the home measurements.
const MEASUREMENTS: [(&str, &str, &str, f64); 6] = [
    ("8867-4", "vital-signs", "/min", 68.0),
    ("59408-5", "vital-signs", "%", 96.0),
    ("29463-7", "vital-signs", "kg", 81.0),
    ("8310-5", "vital-signs", "Cel", 36.8),
    ("8480-6", "vital-signs", "mm[Hg]", 128.0),
    ("15074-8", "laboratory", "mmol/L", 6.1),
];

/// How long each query runs before it is measured.
const WARM_UP: Duration = Duration::from_secs(3);

/// The p95 every query must stay under.
const TARGET_P95_MS: f64 = 20.0;

/// The query string of a query for the patient with this index.
type QueryOf = Box<dyn Fn(usize) -> String>;

struct Latency {
    name: String,
    outcome: Outcome,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (data_dir, keep) = match &args.data_dir {
        Some(dir) => (dir.clone(), true),
        None => {
            let dir = PathBuf::from(format!("/tmp/fjord-search-load-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            (dir, false)
        }
    };
    let loaded = data_dir.join("postgres").exists();
    let mut fjord = start_fjord(&args.fjord, &data_dir)?;
    let addr: SocketAddr = fjord
        .origin
        .trim_start_matches("http://")
        .parse()
        .context("fjord's listen address")?;

    let load_seconds = if loaded {
        eprintln!("reusing the data in {}", data_dir.display());
        0.0
    } else {
        let seconds = load_all(&args, addr)?;
        settle(&data_dir.join("postgres"))?;
        seconds
    };
    let results = measure(&args, addr)?;
    fjord.stop()?;
    write_results(&args, load_seconds, &results)?;
    if !keep {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}

/// Creates the tenants and loads patients and observations; returns the seconds it took.
fn load_all(args: &Args, addr: SocketAddr) -> anyhow::Result<f64> {
    for tenant in &TENANTS[1..] {
        let body = format!(r#"{{"id":"{tenant}","name":"{tenant}"}}"#);
        let outcome = closed_loop(
            addr,
            1,
            Duration::from_secs(10),
            move |n| (n == 0).then(|| post(addr, "/admin/tenants", &body)),
            |reply| reply.status == 201,
        )?;
        if outcome.errors > 0 {
            bail!("creating tenant {tenant} failed");
        }
    }
    let started = Instant::now();
    load(args, addr, "patients", args.patients, move |n| {
        patient(addr, n)
    })?;
    let total = args.patients * args.observations_per_patient;
    let patients = args.patients;
    load(args, addr, "observations", total, move |n| {
        observation(addr, n, patients)
    })?;
    let load_seconds = started.elapsed().as_secs_f64();
    eprintln!("loaded in {load_seconds:.0} s");
    Ok(load_seconds)
}

/// Runs every query; the first is the baseline.
fn measure(args: &Args, addr: SocketAddr) -> anyhow::Result<Vec<Latency>> {
    let duration = Duration::from_secs(args.seconds);
    // Patients of the first tenant, visited with a stride that spreads over all of them.
    let in_first = args.patients / TENANTS.len();
    let pick = move |n: u64| (n as usize).wrapping_mul(7919) % in_first * TENANTS.len();
    let fnr = |i: usize| format!("{FNR}|{}", 10_000_000_000u64 + i as u64);
    let queries: Vec<(String, QueryOf)> = vec![
        (
            "read by id: `Patient/[id]` (baseline)".into(),
            Box::new(|i| format!("Patient/pat-{i}")),
        ),
        (
            "`Observation?patient=X&code=Y&_sort=-date&_count=50`".into(),
            Box::new(|i| {
                format!("Observation?patient=pat-{i}&code={LOINC}%7C8867-4&_sort=-date&_count=50")
            }),
        ),
        (
            "`Observation?subject=X&date=ge2026-06-01&category=vital-signs`".into(),
            Box::new(|i| {
                format!(
                    "Observation?subject=Patient/pat-{i}&date=ge2026-06-01&category=vital-signs"
                )
            }),
        ),
        (
            "`Observation?subject.identifier=S|V` (chained)".into(),
            Box::new(move |i| {
                format!(
                    "Observation?subject.identifier={}",
                    fnr(i).replace('|', "%7C")
                )
            }),
        ),
        (
            "`Patient?identifier=S|V`".into(),
            Box::new(move |i| format!("Patient?identifier={}", fnr(i).replace('|', "%7C"))),
        ),
        (
            "`Patient?identifier=S|V&_revinclude=Observation:subject`".into(),
            Box::new(move |i| {
                format!(
                    "Patient?identifier={}&_revinclude=Observation:subject",
                    fnr(i).replace('|', "%7C")
                )
            }),
        ),
    ];
    let mut results = Vec::new();
    for (index, (name, query)) in queries.into_iter().enumerate() {
        if index > 0
            && args
                .only
                .as_ref()
                .is_some_and(|only| !name.contains(only.as_str()))
        {
            continue;
        }
        let query = std::rc::Rc::new(query);
        let run = |duration| {
            let query = query.clone();
            closed_loop(
                addr,
                args.clients,
                duration,
                move |n| {
                    let target = format!("/fhir/default/{}", query(pick(n)));
                    Some(format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes())
                },
                |reply| reply.status == 200 && found_something(reply),
            )
        };
        // Unmeasured: every connection prepares its statements and warms its caches first.
        run(WARM_UP)?;
        let outcome = run(duration)?;
        eprintln!(
            "{name}: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, {:.0}/s, {} errors",
            outcome.percentile_ms(0.5),
            outcome.percentile_ms(0.95),
            outcome.percentile_ms(0.99),
            outcome.per_second,
            outcome.errors
        );
        results.push(Latency { name, outcome });
    }
    Ok(results)
}

/// A read, or a search that found at least one resource. Only the head of a Bundle is looked
/// at (its entries follow the links), so the driver's cost stays flat as pages grow.
fn found_something(reply: &Reply) -> bool {
    let body = &reply.body;
    if !body.starts_with(br#"{"resourceType":"Bundle""#) {
        return true;
    }
    let head = &body[..body.len().min(4096)];
    let needle = br#""entry":[{"#;
    head.windows(needle.len()).any(|w| w == needle)
}

fn load(
    args: &Args,
    addr: SocketAddr,
    what: &str,
    count: usize,
    request: impl Fn(u64) -> Vec<u8> + 'static,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let outcome = closed_loop(
        addr,
        args.load_clients,
        Duration::from_secs(24 * 3600),
        move |n| ((n as usize) < count).then(|| request(n)),
        |reply| matches!(reply.status, 200 | 201),
    )?;
    eprintln!(
        "{what}: {count} in {:.0} s, {} errors",
        started.elapsed().as_secs_f64(),
        outcome.errors
    );
    if outcome.errors > 0 {
        bail!("{} of {count} {what} failed to load", outcome.errors);
    }
    Ok(())
}

fn post(addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    send("POST", addr, path, body)
}

fn send(method: &str, addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/fhir+json\r\n\
         Prefer: return=minimal\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn patient(addr: SocketAddr, n: u64) -> Vec<u8> {
    let i = n as usize;
    let tenant = TENANTS[i % TENANTS.len()];
    let body = format!(
        r#"{{"resourceType":"Patient","id":"pat-{i}","identifier":[{{"system":"{FNR}","value":"{}"}}],"name":[{{"family":"Pasient{}","given":["Test"]}}],"gender":"{}","birthDate":"19{:02}-0{}-1{}"}}"#,
        10_000_000_000u64 + n,
        i % 997,
        if i.is_multiple_of(2) {
            "female"
        } else {
            "male"
        },
        30 + i % 60,
        1 + i % 9,
        i % 10
    );
    send(
        "PUT",
        addr,
        &format!("/fhir/{tenant}/Patient/pat-{i}"),
        &body,
    )
}

/// Observation `n`: of patient `n % patients`, its `n / patients`-th measurement.
fn observation(addr: SocketAddr, n: u64, patients: usize) -> Vec<u8> {
    let (i, k) = (n as usize % patients, n as usize / patients);
    let tenant = TENANTS[i % TENANTS.len()];
    let (code, category, unit, typical) = MEASUREMENTS[k % MEASUREMENTS.len()];
    let value = typical + (n % 17) as f64 / 10.0;
    let body = format!(
        r#"{{"resourceType":"Observation","status":"final","category":[{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"{category}"}}]}}],"code":{{"coding":[{{"system":"{LOINC}","code":"{code}"}}]}},"subject":{{"reference":"Patient/pat-{i}"}},"effectiveDateTime":"2026-{:02}-{:02}T{:02}:{:02}:00+01:00","valueQuantity":{{"value":{value:.1},"unit":"{unit}","system":"http://unitsofmeasure.org","code":"{unit}"}}}}"#,
        1 + k % 12,
        1 + (k / 12) % 28,
        6 + i % 14,
        k % 60,
    );
    send("POST", addr, &format!("/fhir/{tenant}/Observation"), &body)
}

fn write_results(args: &Args, load_seconds: f64, results: &[Latency]) -> anyhow::Result<()> {
    let baseline = results[0].outcome.percentile_ms(0.95);
    let mut table = String::new();
    for Latency { name, outcome } in results {
        let p95 = outcome.percentile_ms(0.95);
        let verdict = if p95 < TARGET_P95_MS { "met" } else { "missed" };
        table += &format!(
            "| {name} | {:.1} | {p95:.1} | {:.1} | {:.0} | {} | {:.1}× | < {TARGET_P95_MS:.0} ms ({verdict}) |\n",
            outcome.percentile_ms(0.5),
            outcome.percentile_ms(0.99),
            outcome.per_second,
            outcome.errors,
            p95 / baseline,
        );
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let observations = args.patients * args.observations_per_patient;
    let text = format!(
        "## Search latency on {observations} Observations\n\n\
         Produced by `cargo build --release -p fjord-server -p fjord-benches && target/release/fjord-search-load` \
         ({} patients with {} Observations each over {} tenants, loaded through the REST API in {load_seconds:.0} s and vacuumed as autovacuum would in time; \
         then {} clients, {} s per query after {} s of warm-up, on {cpus} CPUs shared by Fjord, Postgres and the driver). \
         Queries run in one tenant (a third of the data) for patients picked across all of its patients; \
         each answer must be a 200 that found something.\n\n\
         | query | p50 ms | p95 ms | p99 ms | per second | errors | p95 of read by id | target p95 |\n\
         |---|---|---|---|---|---|---|---|\n{table}",
        args.patients,
        args.observations_per_patient,
        TENANTS.len(),
        args.clients,
        args.seconds,
        WARM_UP.as_secs(),
    );
    write_section(&args.out, "fjord-search-load", &text)
}
