//! `fjord-load`: drives a running Fjord (started here on its embedded default) with concurrent
//! clients, then measures plain Postgres with pgbench on the same cluster in the same run, and
//! writes the ratios to `benches/RESULTS.md`.
//!
//! Scenarios: create of a home blood-pressure Observation (as it is, validated strictly, without
//! the referential-integrity check), read by id, vread; pgbench inserting the same JSON and
//! reading it by primary key is the reference.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use fjord_pg::{Binaries, Cluster, ClusterOptions};

use fjord_benches::client::{closed_loop, contains, Outcome};
use fjord_benches::fixtures::{BLOOD_PRESSURE, REFERENCED};
use fjord_benches::pgbench;

/// Tenant settings with the referential-integrity check off.
const UNCHECKED: &str = r#"{"referentialIntegrity": false}"#;
/// Tenant settings with strict validation (base R4, Norwegian identifiers).
const STRICT: &str = r#"{"validation": "strict"}"#;
use fjord_benches::server::{psql, put_all, start_fjord, write_section};

#[derive(Parser)]
#[command(about = "Load driver: Fjord against plain Postgres (pgbench) on the same machine")]
struct Args {
    /// The fjord binary to start.
    #[arg(long, default_value = "target/release/fjord")]
    fjord: PathBuf,
    /// Concurrent clients of every scenario.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Where the results table goes.
    #[arg(long, default_value = "benches/RESULTS.md")]
    out: PathBuf,
}

struct Measure {
    name: &'static str,
    per_second: f64,
    errors: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data_dir = PathBuf::from(format!("/tmp/fjord-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut server = start_fjord(&args.fjord, &data_dir)?;
    let duration = Duration::from_secs(args.seconds);

    let addr: SocketAddr = server
        .origin
        .trim_start_matches("http://")
        .parse()
        .context("fjord's listen address")?;
    put_all(addr, "/fhir/default", &REFERENCED)?;

    let ids = Rc::new(RefCell::new(Vec::new()));
    let create = create_observations(&args, addr, duration, "fjord create", &ids)?;
    // The same creates validated strictly (the blood pressure is valid: all are stored).
    put_all(addr, "/admin/tenants/default", &[("settings", STRICT)])?;
    let strict = create_observations(
        &args,
        addr,
        duration,
        "fjord create, strict validation",
        &ids,
    )?;
    // The same creates without the referential-integrity check (a tenant setting, on by default).
    put_all(addr, "/admin/tenants/default", &[("settings", UNCHECKED)])?;
    let unchecked = create_observations(
        &args,
        addr,
        duration,
        "fjord create, referential integrity off",
        &ids,
    )?;
    let ids: Rc<Vec<String>> = Rc::new(ids.borrow().clone());
    if ids.is_empty() {
        bail!("no create succeeded");
    }
    let read = by_id(&args, addr, duration, "fjord read", &ids, "")?;
    let vread = by_id(&args, addr, duration, "fjord vread", &ids, "/_history/1")?;
    // A graceful stop: Fjord stops its embedded cluster cleanly before pgbench starts it again.
    server.stop()?;

    let reference = pgbench_reference(&args, &data_dir.join("postgres"), ids.len())?;
    write_results(&args, &[create, strict, unchecked, read, vread], &reference)?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

/// Creates of the blood-pressure Observation by every client for `duration`; the first 100,000
/// ids created go to `ids`.
fn create_observations(
    args: &Args,
    addr: SocketAddr,
    duration: Duration,
    name: &'static str,
    ids: &Rc<RefCell<Vec<String>>>,
) -> anyhow::Result<Measure> {
    let path = "/fhir/default/Observation";
    let create_request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/fhir+json\r\n\
         Prefer: return=minimal\r\nContent-Length: {}\r\n\r\n{BLOOD_PRESSURE}",
        BLOOD_PRESSURE.len()
    )
    .into_bytes();
    let created = {
        let ids = ids.clone();
        closed_loop(
            addr,
            args.clients,
            duration,
            move |_| Some(create_request.clone()),
            move |reply| match reply.created_id("Observation") {
                Some(id) => {
                    let mut ids = ids.borrow_mut();
                    if ids.len() < 100_000 {
                        ids.push(id.to_owned());
                    }
                    true
                }
                _ => false,
            },
        )?
    };
    Ok(measure(name, created))
}

fn by_id(
    args: &Args,
    addr: SocketAddr,
    duration: Duration,
    name: &'static str,
    ids: &Rc<Vec<String>>,
    suffix: &'static str,
) -> anyhow::Result<Measure> {
    let ids = ids.clone();
    let outcome = closed_loop(
        addr,
        args.clients,
        duration,
        move |n| {
            // A stride prime to any id count spreads reads over all ids, not a hot few.
            let id = &ids[(n as usize).wrapping_mul(7919) % ids.len()];
            Some(
                format!(
                    "GET /fhir/default/Observation/{id}{suffix} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
                )
                .into_bytes(),
            )
        },
        |reply| reply.status == 200 && contains(&reply.body, b"\"85354-9\""),
    )?;
    Ok(measure(name, outcome))
}

fn measure(name: &'static str, outcome: Outcome) -> Measure {
    eprintln!(
        "{name}: {:.0}/s, {} errors",
        outcome.per_second, outcome.errors
    );
    Measure {
        name,
        per_second: outcome.per_second,
        errors: outcome.errors,
    }
}

/// pgbench against the same cluster, started again through `fjord-pg` (as the account that owns
/// it) after Fjord stopped it.
fn pgbench_reference(args: &Args, cluster_dir: &Path, rows: usize) -> anyhow::Result<Vec<Measure>> {
    let binaries = Binaries::locate()?;
    let mut cluster = Cluster::start(&binaries, cluster_dir, &ClusterOptions::default())?;
    let socket_dir = cluster.socket_dir().to_owned();
    let psql = |sql: &str| psql(&socket_dir, "postgres", sql);
    psql("DROP TABLE IF EXISTS bench_insert, bench_read")?;
    psql("CREATE TABLE bench_insert (id text PRIMARY KEY, body text NOT NULL)")?;
    psql("CREATE TABLE bench_read (id bigint PRIMARY KEY, body text NOT NULL)")?;
    let literal = pgbench::quoted(BLOOD_PRESSURE);
    psql(&format!(
        "INSERT INTO bench_read SELECT g, '{literal}' FROM generate_series(1, {rows}) g"
    ))?;
    psql("VACUUM ANALYZE bench_read")?;
    let insert =
        format!("INSERT INTO bench_insert VALUES (gen_random_uuid()::text, '{literal}');\n");
    let read = format!("\\set id random(1, {rows})\nSELECT body FROM bench_read WHERE id = :id;\n");
    let mut measures = Vec::new();
    for (name, script) in [
        ("pgbench insert", &insert),
        ("pgbench read by primary key", &read),
    ] {
        let per_second = pgbench::tps(
            &binaries,
            &socket_dir,
            "postgres",
            args.clients,
            args.seconds,
            script,
        )?;
        eprintln!("{name}: {per_second:.0}/s");
        measures.push(Measure {
            name,
            per_second,
            errors: 0,
        });
    }
    cluster.stop();
    Ok(measures)
}

fn write_results(args: &Args, fjord: &[Measure], reference: &[Measure]) -> anyhow::Result<()> {
    let (insert, read) = (reference[0].per_second, reference[1].per_second);
    let row = |m: &Measure, base: f64, target: f64| {
        let ratio = m.per_second / base;
        let verdict = if ratio >= target { "met" } else { "missed" };
        format!(
            "| {} | {:.0} | {} | {:.1}% | ≥ {:.1}% ({verdict}) |\n",
            m.name,
            m.per_second,
            m.errors,
            ratio * 100.0,
            target * 100.0
        )
    };
    let mut table = String::new();
    // A create also indexes every search parameter of the type; the search issue allows it half
    // of the unindexed figure (31.0 % of pgbench's insert rate), so 15.5 %.
    table += &row(&fjord[0], insert, 0.155);
    table += &row(&fjord[1], insert, 0.155);
    table += &row(&fjord[2], insert, 0.155);
    table += &row(&fjord[3], read, 0.30);
    table += &row(&fjord[4], read, 0.30);
    // The validation issue allows strict validation a quarter of the create rate.
    let validated = fjord[1].per_second / fjord[0].per_second;
    let verdict = if validated >= 0.75 { "met" } else { "missed" };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let text = format!(
        "## Throughput: create, read, vread\n\n\
         Produced by `cargo build --release -p fjord-server -p fjord-benches && target/release/fjord-load` \
         ({} clients, {} s per scenario, {cpus} CPUs; Fjord, Postgres and the load driver share the machine). \
         Fjord runs on its embedded default (durable commits); pgbench runs in the same run against the same cluster. \
         A Fjord create writes, in one transaction, the version with the search index of the resource and its AuditEvent (also indexed), and with referential integrity on (the default) checks that the Patient and Device it refers to exist; every read and vread records an AuditEvent too, buffered and written in batches (a request waits when 20,000 are waiting); pgbench's insert writes the JSON only.\n\n\
         | reference (pgbench, prepared) | per second |\n|---|---|\n| insert of the same JSON | {insert:.0} |\n| read by primary key | {read:.0} |\n\n\
         | Fjord scenario | per second | errors | of pgbench | target |\n|---|---|---|---|---|\n{table}\n         Strict validation keeps {:.1}% of the create rate (target ≥ 75%: {verdict}).\n",
        args.clients, args.seconds, validated * 100.0
    );
    write_section(&args.out, "fjord-load", &text)
}
