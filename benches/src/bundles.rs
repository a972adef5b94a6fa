//! `fjord-bundle-load`: bundle throughput on Fjord's embedded default, written to
//! `benches/RESULTS.md`.
//!
//! Scenarios: the Synthea data set of `../shared/synthea` loaded as its files are (the two batch
//! files of shared resources, then the 120 patient transactions from several clients), and PHG
//! batches of 50 blood-pressure Observations, each a conditional create by identifier, first
//! new and then posted again as a producer's retry (every entry finds its match). The baseline,
//! measured in the same run, is the single create of the same Observation.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;

use fjord_benches::client::{closed_loop, count, report, Outcome, Reply};
use fjord_benches::fixtures::{measurement_batch, BLOOD_PRESSURE, REFERENCED};
use fjord_benches::server::{put_all, settle, start_fjord, write_section};
use fjord_benches::synthea::{self, post};

/// Entries of a PHG batch.
const BATCH_SIZE: usize = 50;

#[derive(Parser)]
#[command(about = "Load driver: transaction and batch bundle throughput")]
struct Args {
    /// The fjord binary to start.
    #[arg(long, default_value = "target/release/fjord")]
    fjord: PathBuf,
    /// The Synthea bundles (`*.json.bz2`).
    #[arg(long, default_value = "../shared/synthea/blaze-120-patients-bz2")]
    synthea: PathBuf,
    /// Clients posting the Synthea transactions at once.
    #[arg(long, default_value_t = 4)]
    transaction_clients: usize,
    /// Concurrent clients of the single-create and PHG scenarios.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds the single-create and PHG scenarios run.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Where the results table goes.
    #[arg(long, default_value = "benches/RESULTS.md")]
    out: PathBuf,
}

/// One scenario's figures.
struct Row {
    name: String,
    bundles_per_second: Option<f64>,
    resources_per_second: f64,
    latency_ms: [f64; 3],
    errors: u64,
    target: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bundles = synthea::read_bundles(&args.synthea)?;
    let data_dir = PathBuf::from(format!("/tmp/fjord-bundle-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut server = start_fjord(&args.fjord, &data_dir)?;
    let addr = server.addr()?;
    let duration = Duration::from_secs(args.seconds);
    put_all(addr, "/fhir/default", &REFERENCED)?;

    let single = closed_loop(
        addr,
        args.clients,
        duration,
        move |_| Some(post(addr, "/fhir/default/Observation", BLOOD_PRESSURE)),
        |reply| reply.status == 201,
    )?;
    let baseline = row(
        "single create of the Observation (baseline)",
        None,
        single,
        1,
    );

    let loaded = synthea::load(addr, "/fhir/default", &bundles, args.transaction_clients)?;
    if loaded.failed > 0 {
        bail!("{} Synthea bundles failed", loaded.failed);
    }
    let latency = |q| loaded.transactions.percentile_ms(q);
    let synthea = Row {
        name: format!(
            "Synthea load: {} bundles, {} resources, transactions from {} clients",
            bundles.len(),
            loaded.resources,
            args.transaction_clients
        ),
        bundles_per_second: Some(bundles.len() as f64 / loaded.seconds),
        resources_per_second: loaded.resources as f64 / loaded.seconds,
        latency_ms: [latency(0.5), latency(0.95), latency(0.99)],
        errors: 0,
        target: "≥ 2500 resources/s".into(),
    };
    // The PHG batches search by identifier among what the load stored: with the statistics
    // autovacuum would gather in time, not the empty tables' of before the load.
    settle(&data_dir.join("postgres"))?;

    let run = std::process::id();
    let new = closed_loop(
        addr,
        args.clients,
        duration,
        move |n| {
            let batch = measurement_batch(&format!("{run}-{n}"), BATCH_SIZE);
            Some(post(addr, "/fhir/default", &batch))
        },
        |reply| answered(reply, "201 Created"),
    )?;
    if new.errors > 0 {
        bail!("{} PHG batches failed", new.errors);
    }
    let posted = new.latencies.len() as u64;
    let new = row(
        "PHG batch of 50, conditional creates, new",
        Some(BATCH_SIZE),
        new,
        BATCH_SIZE,
    );
    let again = closed_loop(
        addr,
        args.clients,
        duration,
        move |n| {
            let batch = measurement_batch(&format!("{run}-{}", n % posted), BATCH_SIZE);
            Some(post(addr, "/fhir/default", &batch))
        },
        |reply| answered(reply, "200 OK"),
    )?;
    let again = row(
        "the same PHG batches again (each entry finds its match)",
        Some(BATCH_SIZE),
        again,
        BATCH_SIZE,
    );

    server.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);
    write_results(&args, baseline, synthea, new, again)
}

/// A batch response whose every entry has `status`.
fn answered(reply: &Reply, status: &str) -> bool {
    let needle = format!("\"status\":\"{status}\"");
    let ok = reply.status == 200 && count(&reply.body, needle.as_bytes()) == BATCH_SIZE;
    if !ok {
        report(reply);
    }
    ok
}

fn row(name: &str, batch: Option<usize>, outcome: Outcome, resources_each: usize) -> Row {
    eprintln!(
        "{name}: {:.0}/s, {} errors",
        outcome.per_second, outcome.errors
    );
    Row {
        name: name.to_owned(),
        bundles_per_second: batch.map(|_| outcome.per_second),
        resources_per_second: outcome.per_second * resources_each as f64,
        latency_ms: [
            outcome.percentile_ms(0.5),
            outcome.percentile_ms(0.95),
            outcome.percentile_ms(0.99),
        ],
        errors: outcome.errors,
        target: String::new(),
    }
}

fn write_results(
    args: &Args,
    baseline: Row,
    synthea: Row,
    new: Row,
    again: Row,
) -> anyhow::Result<()> {
    let base = baseline.resources_per_second;
    let mut table = String::new();
    for row in [&baseline, &synthea, &new, &again] {
        let [p50, p95, p99] = row.latency_ms;
        let verdict = match row.target.as_str() {
            "" => String::new(),
            target if row.resources_per_second >= 2500.0 => format!("{target} (met)"),
            target => format!("{target} (missed)"),
        };
        table += &format!(
            "| {} | {} | {:.0} | {:.2}× | {p50:.1} | {p95:.1} | {p99:.1} | {} | {verdict} |\n",
            row.name,
            row.bundles_per_second
                .map_or("–".to_owned(), |b| format!("{b:.1}")),
            row.resources_per_second,
            row.resources_per_second / base,
            row.errors,
        );
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let text = format!(
        "## Bundles: Synthea transactions, PHG batches\n\n\
         Produced by `cargo build --release -p fjord-server -p fjord-benches && target/release/fjord-bundle-load` \
         ({cpus} CPUs shared by Fjord, its embedded Postgres (durable commits) and the driver; a fresh data directory). \
         The Synthea load is the whole of `../shared/synthea` through the REST API, one run: the two batch files \
         (conditional creates) one after the other, then the 120 transactions (urn:uuid and conditional references); \
         then the database is vacuumed and analysed, as autovacuum would in time. \
         The single-create and PHG scenarios run {} clients for {} s each; latencies are per request (per bundle).\n\n\
         | scenario | bundles/s | resources/s | of single create | p50 ms | p95 ms | p99 ms | errors | target |\n\
         |---|---|---|---|---|---|---|---|---|\n{table}",
        args.clients, args.seconds
    );
    write_section(&args.out, "fjord-bundle-load", &text)
}
