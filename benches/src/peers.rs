//! `fjord-peers`: the standard scenarios against Fjord and, in the same run on the same machine
//! and the same Postgres cluster, against the Helios FHIR Server (`hfs`, built with its
//! `postgres` feature), with the ratios written to `benches/RESULTS.md`.
//!
//! Fjord runs first, on its embedded default under a fresh data directory. Then the cluster is
//! started again with the same settings, listening on `127.0.0.1` too (Helios's connection
//! string cannot name a socket directory), and Helios runs on a database of its own in it.
//! Every scenario is a closed loop of the same clients for the same time, started once the
//! machine is idle (what a server deferred, such as Fjord's buffered AuditEvents, is not
//! charged to the next scenario; how long that took is printed); both servers get the same
//! requests under their own base (`/fhir/default` and `/`).
//!
//! Scenarios: PHG ingest (single create of a blood-pressure Observation; batch of 50 conditional
//! creates by identifier), Pega CRUD (update with `If-Match` of the version it updates), SMART
//! read by id and search by patient (over the Observations the creates stored), and the Synthea
//! data set loaded as its files are (two batch files, then 120 transactions). Last, pgbench runs
//! SQL equivalent to each scenario but the Synthea load on the same cluster: the physical floor.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use fjord_benches::client::{
    closed_loop, contains, count, report, request, Connection, Outcome, Reply,
};
use fjord_benches::fixtures::{measurement_batch, BLOOD_PRESSURE, REFERENCED};
use fjord_benches::pgbench::{self, quoted};
use fjord_benches::server::{psql, quiesce, start_fjord, write_section, Server};
use fjord_benches::synthea;
use fjord_pg::{Binaries, Cluster, ClusterOptions, SUPERUSER};

/// Patients the created Observations are spread over.
const PATIENTS: usize = 1_000;
/// Patients searched for, each with [`SEARCHED_EACH`] Observations stored before the search
/// runs, so that both servers answer the same searches over the same data.
const SEARCHED: usize = 200;
const SEARCHED_EACH: usize = 20;
/// Patients the update scenario cycles through: far more than clients, so no two requests in
/// flight update the same one and each knows the version it replaces.
const UPDATED: usize = 4_096;
/// Entries of a PHG batch.
const BATCH_SIZE: usize = 50;

#[derive(Parser)]
#[command(about = "The standard scenarios against Fjord and the Helios FHIR Server")]
struct Args {
    /// The fjord binary to start.
    #[arg(long, default_value = "target/release/fjord")]
    fjord: PathBuf,
    /// The Helios server (`cargo install helios-hfs --no-default-features --features R4,postgres`).
    #[arg(long, default_value = "hfs")]
    helios: PathBuf,
    /// The R4 search parameters Helios loads (its `search-parameters-r4.json`).
    #[arg(
        long,
        default_value = "../shared/fhir-r4/official/search-parameters.json"
    )]
    search_parameters: PathBuf,
    /// The Synthea bundles (`*.json.bz2`).
    #[arg(long, default_value = "../shared/synthea/blaze-120-patients-bz2")]
    synthea: PathBuf,
    /// Clients posting the Synthea transactions at once.
    #[arg(long, default_value_t = 4)]
    transaction_clients: usize,
    /// Concurrent clients of every other scenario.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    #[arg(long, default_value = "benches/RESULTS.md")]
    out: PathBuf,
}

/// A server under test: where it listens and the base of its FHIR API.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    base: &'static str,
}

impl Target {
    fn request(&self, method: &str, path: &str, headers: &str, body: &str) -> Vec<u8> {
        request(
            self.addr,
            method,
            &format!("{}/{path}", self.base),
            headers,
            body,
        )
    }
}

/// A scenario's `n`th request to a target, `None` when it has no more.
type RequestFn = Box<dyn Fn(&Target, u64) -> Option<Vec<u8>>>;
/// Whether a scenario got the answer it wanted.
type AcceptFn = Box<dyn Fn(&Reply) -> bool>;

/// One scenario's figures on one server.
struct Measured {
    per_second: f64,
    resources_each: usize,
    latency_ms: [f64; 3],
    errors: u64,
}

impl Measured {
    fn of(outcome: &Outcome, resources_each: usize) -> Measured {
        Measured {
            per_second: outcome.per_second,
            resources_each,
            latency_ms: [0.5, 0.95, 0.99].map(|q| outcome.percentile_ms(q)),
            errors: outcome.errors,
        }
    }
}

/// The scenarios, in the order they run, with the throughput ratio each must reach.
const SCENARIOS: [(&str, f64); 6] = [
    ("PHG ingest: single create of an Observation", 3.0),
    ("PHG ingest: batch of 50 conditional creates", 3.0),
    ("Pega CRUD: update with If-Match", 3.0),
    ("SMART read: Observation by id", 2.0),
    (
        "SMART search: Observation?subject=Patient/X&_count=50 (20 matches)",
        3.0,
    ),
    (
        "Synthea load: 2 batch files, then 120 transactions (per second: resources)",
        3.0,
    ),
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let work = PathBuf::from(format!("/tmp/fjord-peers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let result = run(&args, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run(args: &Args, work: &Path) -> anyhow::Result<()> {
    let bundles = synthea::read_bundles(&args.synthea)?;
    let data_dir = work.join("data");
    let mut fjord = start_fjord(&args.fjord, &data_dir)?;
    let target = Target {
        addr: fjord.addr()?,
        base: "/fhir/default",
    };
    let fjord_rows = scenarios(args, &target, "Fjord", &bundles)?;
    let fjord_memory = fjord.peak_memory_kb();
    fjord.stop()?;

    let binaries = Binaries::locate()?;
    let cluster_dir = data_dir.join("postgres");
    // The settings of Fjord's embedded cluster, and a TCP listener for Helios.
    let mut options = ClusterOptions::embedded(fjord_pg::default_shared_buffers_mb());
    options
        .settings
        .push(("listen_addresses".into(), "127.0.0.1".into()));
    let cluster = Cluster::start(&binaries, &cluster_dir, &options)?;
    psql(&cluster_dir, "postgres", "CREATE DATABASE helios")?;
    let mut helios = start_helios(args, work)?;
    let target = Target {
        addr: helios.addr()?,
        base: "",
    };
    let helios_rows = scenarios(args, &target, "Helios", &bundles)?;
    let helios_memory = helios.peak_memory_kb();
    helios.stop()?;
    quiesce(Duration::from_secs(300));
    let postgres = postgres_reference(args, &binaries, cluster.socket_dir())?;
    drop(cluster);

    write_results(
        args,
        [&fjord_rows, &helios_rows],
        &postgres,
        [fjord_memory, helios_memory],
    )
}

/// Plain Postgres doing in SQL what each scenario asks of a server, on the same cluster, by
/// pgbench with the same clients for the same time: resources a second. A table of JSON bodies
/// with the columns the scenarios look up by (identifier, subject), seeded like the servers.
/// None for the Synthea load, whose transactions have no one SQL equivalent.
fn postgres_reference(
    args: &Args,
    binaries: &Binaries,
    socket_dir: &Path,
) -> anyhow::Result<Vec<Option<f64>>> {
    psql(socket_dir, "postgres", "CREATE DATABASE reference")?;
    let sql = |text: &str| psql(socket_dir, "reference", text);
    sql(
        "CREATE TABLE observation (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
         identifier text UNIQUE, subject text NOT NULL, body jsonb NOT NULL)",
    )?;
    sql("CREATE INDEX ON observation (subject)")?;
    sql("CREATE TABLE patient (id text PRIMARY KEY, version int NOT NULL, body jsonb NOT NULL)")?;
    let observation = quoted(BLOOD_PRESSURE);
    let updated = quoted(&patient("upd", 1));
    let seeded = SEARCHED * SEARCHED_EACH;
    sql(&format!(
        "INSERT INTO patient SELECT 'upd-' || g, 1, '{updated}' FROM generate_series(0, {}) g",
        UPDATED - 1
    ))?;
    sql(&format!(
        "INSERT INTO observation (subject, body) SELECT 'Patient/srch-' || (g % {SEARCHED}), \
         '{observation}' FROM generate_series(0, {}) g",
        seeded - 1
    ))?;
    sql("VACUUM ANALYZE")?;
    let scripts = [
        format!(
            "\\set k random(0, {})\nINSERT INTO observation (subject, body) \
             VALUES ('Patient/peer-' || :k, '{observation}');\n",
            PATIENTS - 1
        ),
        format!(
            "\\set b random(1, 1000000000000)\nINSERT INTO observation (identifier, subject, body) \
             SELECT :b || '-' || g, 'Patient/peer-1', '{observation}' \
             FROM generate_series(1, {BATCH_SIZE}) g ON CONFLICT (identifier) DO NOTHING;\n"
        ),
        format!(
            "\\set k random(0, {})\nUPDATE patient SET version = version + 1, body = '{updated}' \
             WHERE id = 'upd-' || :k;\n",
            UPDATED - 1
        ),
        format!("\\set n random(1, {seeded})\nSELECT body FROM observation WHERE seq = :n;\n"),
        format!(
            "\\set k random(0, {})\nSELECT body FROM observation \
             WHERE subject = 'Patient/srch-' || :k ORDER BY seq LIMIT 50;\n",
            SEARCHED - 1
        ),
    ];
    let mut rates = Vec::new();
    for (script, resources_each) in scripts.iter().zip([1, BATCH_SIZE, 1, 1, 1]) {
        quiesce(Duration::from_secs(300));
        let tps = pgbench::tps(
            binaries,
            socket_dir,
            "reference",
            args.clients,
            args.seconds,
            script,
        )?;
        eprintln!("Postgres: {:.0}/s", tps * resources_each as f64);
        rates.push(Some(tps * resources_each as f64));
    }
    rates.push(None);
    Ok(rates)
}

/// Starts Helios on the `helios` database of the running cluster; ready once `/metadata`
/// answers.
fn start_helios(args: &Args, work: &Path) -> anyhow::Result<Server> {
    let data = work.join("helios");
    std::fs::create_dir_all(&data)?;
    std::fs::copy(
        &args.search_parameters,
        data.join("search-parameters-r4.json"),
    )
    .with_context(|| format!("copying {}", args.search_parameters.display()))?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let origin = format!("http://127.0.0.1:{port}");
    let child = Command::new(&args.helios)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--database-url",
            &format!(
                "postgresql://{SUPERUSER}@127.0.0.1:{}/helios",
                fjord_pg::SOCKET_PORT
            ),
        ])
        .arg("--data-dir")
        .arg(&data)
        .env("HFS_STORAGE_BACKEND", "postgres")
        .env("HFS_BASE_URL", &origin)
        .env("HFS_LOG_LEVEL", "warn")
        .env("HFS_UI_ENABLED", "false")
        .current_dir(&data)
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", args.helios.display()))?;
    let server = Server::new(child, origin);
    let helios = Target {
        addr: server.addr()?,
        base: "",
    };
    let metadata = helios.request("GET", "metadata", "", "");
    let started = Instant::now();
    loop {
        let ready = Connection::blocking(helios.addr)
            .ok()
            .and_then(|mut c| c.send(std::str::from_utf8(&metadata).ok()?, &[200]).ok());
        if ready.is_some() {
            return Ok(server);
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("helios did not answer /metadata within 120 s");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Seeds a server and runs every scenario on it.
fn scenarios(
    args: &Args,
    target: &Target,
    name: &str,
    bundles: &[synthea::Bundle],
) -> anyhow::Result<Vec<Measured>> {
    let duration = Duration::from_secs(args.seconds);
    each(target, REFERENCED.len(), |k| {
        let (path, body) = REFERENCED[k];
        ("PUT", path.to_owned(), body.to_owned())
    })?;
    for (prefix, patients) in [("peer", PATIENTS), ("upd", UPDATED), ("srch", SEARCHED)] {
        each(target, patients, move |k| {
            let id = format!("{prefix}-{k}");
            ("PUT", format!("Patient/{id}"), patient(&id, 0))
        })?;
    }
    each(target, SEARCHED * SEARCHED_EACH, |n| {
        let subject = format!("Patient/srch-{}", n % SEARCHED);
        let body = BLOOD_PRESSURE.replace("Patient/pasient-1", &subject);
        ("POST", "Observation".to_owned(), body)
    })?;
    let clients = args.clients;
    let measure = |request: RequestFn, accept: AcceptFn| -> anyhow::Result<Outcome> {
        let waited = quiesce(Duration::from_secs(300));
        eprintln!("{name}: idle after {:.1} s", waited.as_secs_f64());
        let sender = target.clone();
        Ok(closed_loop(
            target.addr,
            clients,
            duration,
            move |n| request(&sender, n),
            move |reply| accept(reply) || unexpected(reply),
        )?)
    };
    let mut rows = Vec::new();

    let ids = Rc::new(RefCell::new(Vec::new()));
    let collected = ids.clone();
    let create = measure(
        Box::new(|target, n| {
            let subject = format!("Patient/peer-{}", n as usize % PATIENTS);
            let body = BLOOD_PRESSURE.replace("Patient/pasient-1", &subject);
            Some(target.request("POST", "Observation", "", &body))
        }),
        Box::new(move |reply| {
            let Some(id) = reply.created_id("Observation") else {
                return false;
            };
            let mut ids = collected.borrow_mut();
            if ids.len() < 100_000 {
                ids.push(id.to_owned());
            }
            true
        }),
    )?;
    rows.push(Measured::of(&create, 1));

    let run = std::process::id();
    let batch = measure(
        Box::new(move |target, n| {
            let body = measurement_batch(&format!("{run}-{n}"), BATCH_SIZE);
            Some(target.request("POST", "", "", &body))
        }),
        Box::new(|reply| {
            reply.status == 200 && count(&reply.body, b"\"status\":\"201") == BATCH_SIZE
        }),
    )?;
    rows.push(Measured::of(&batch, BATCH_SIZE));

    let update = measure(
        Box::new(|target, n| {
            let (k, round) = (n as usize % UPDATED, n as usize / UPDATED);
            let id = format!("upd-{k}");
            let headers = format!("If-Match: W/\"{}\"\r\n", round + 1);
            let body = patient(&id, round + 1);
            Some(target.request("PUT", &format!("Patient/{id}"), &headers, &body))
        }),
        Box::new(|reply| reply.status == 200),
    )?;
    rows.push(Measured::of(&update, 1));

    let ids = Rc::new(ids.take());
    anyhow::ensure!(!ids.is_empty(), "{name} created no Observation to read");
    let read = measure(
        Box::new(move |target, n| {
            // A stride prime to any id count spreads reads over all ids, not a hot few.
            let id = &ids[(n as usize).wrapping_mul(7919) % ids.len()];
            Some(target.request("GET", &format!("Observation/{id}"), "", ""))
        }),
        Box::new(|reply| reply.status == 200 && contains(&reply.body, b"85354-9")),
    )?;
    rows.push(Measured::of(&read, 1));

    let search = measure(
        Box::new(|target, n| {
            let k = (n as usize).wrapping_mul(7919) % SEARCHED;
            let path = format!("Observation?subject=Patient/srch-{k}&_count=50");
            Some(target.request("GET", &path, "", ""))
        }),
        Box::new(|reply| reply.status == 200 && count(&reply.body, b"85354-9") == SEARCHED_EACH),
    )?;
    rows.push(Measured::of(&search, 1));

    quiesce(Duration::from_secs(300));
    let base = format!("{}/", target.base);
    let loaded = synthea::load(target.addr, &base, bundles, args.transaction_clients)?;
    rows.push(Measured {
        per_second: loaded.resources as f64 / loaded.seconds,
        errors: loaded.failed,
        ..Measured::of(&loaded.transactions, 1)
    });

    for ((scenario, _), row) in SCENARIOS.iter().zip(&rows) {
        eprintln!(
            "{name}: {scenario}: {:.0}/s, p99 {:.1} ms, {} errors",
            row.per_second, row.latency_ms[2], row.errors
        );
    }
    Ok(rows)
}

/// Sends `count` requests built by `request(k)` from one client; fails unless each succeeds.
fn each(
    target: &Target,
    count: usize,
    request: impl Fn(usize) -> (&'static str, String, String) + 'static,
) -> anyhow::Result<()> {
    let sender = target.clone();
    let outcome = closed_loop(
        target.addr,
        4,
        Duration::from_secs(600),
        move |n| {
            let (method, path, body) = request(n.try_into().ok().filter(|n| *n < count)?);
            Some(sender.request(method, &path, "", &body))
        },
        |reply| matches!(reply.status, 200 | 201) || unexpected(reply),
    )?;
    anyhow::ensure!(outcome.errors == 0, "seeding failed");
    Ok(())
}

fn patient(id: &str, revision: usize) -> String {
    format!(
        r#"{{"resourceType":"Patient","id":"{id}","name":[{{"family":"Nordmann","given":["Kari","{revision}"]}}],"gender":"female","birthDate":"1950-01-01"}}"#
    )
}

/// Reports an answer a scenario did not expect (the first few); false.
fn unexpected(reply: &Reply) -> bool {
    thread_local!(static REPORTED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
    if REPORTED.get() < 3 {
        REPORTED.set(REPORTED.get() + 1);
        report(reply);
    }
    false
}

fn write_results(
    args: &Args,
    [fjord, helios]: [&[Measured]; 2],
    postgres: &[Option<f64>],
    memory_kb: [Option<u64>; 2],
) -> anyhow::Result<()> {
    let mut text = format!(
        "## Fjord against the Helios FHIR Server and plain Postgres (same machine, same Postgres cluster)\n\n\
         Produced by `cargo build --release -p fjord-server -p fjord-benches && \
         target/release/fjord-peers --helios PATH/TO/hfs` ({} clients, {} s per scenario, \
         2 CPUs shared by the server, Postgres and the driver). Fjord on its embedded default \
         (every create and read also writes an AuditEvent; references checked); Helios \
         (`helios-hfs` 0.2.7, `--no-default-features --features R4,postgres`) on a database of \
         the same cluster, started again with the same settings; then, as the physical reference, \
         pgbench running SQL that does what each scenario asks (insert a JSON body; insert 50 in \
         one statement, skipping identifiers present; update by primary key; read by primary key; \
         the first 50 rows of a subject by an index) on a database of the same cluster. \
         Each scenario starts once the machine is idle. Per second: requests (a batch \
         counts its 50 resources); latency per request.\n\n\
         | scenario | Fjord /s | p50 / p95 / p99 ms | Helios /s | p50 / p95 / p99 ms | \
         throughput ratio | p99 ratio | errors (Fjord, Helios) | target | Postgres /s | Fjord of Postgres |\n\
         |---|---:|---|---:|---|---:|---:|---|---|---:|---:|\n",
        args.clients, args.seconds
    );
    let rows = SCENARIOS.iter().zip(fjord).zip(helios).zip(postgres);
    for ((((scenario, wanted), fjord), helios), postgres) in rows {
        let rate = |m: &Measured| m.per_second * m.resources_each as f64;
        let latency = |m: &Measured| {
            let [p50, p95, p99] = m.latency_ms;
            format!("{p50:.1} / {p95:.1} / {p99:.1}")
        };
        let ratio = rate(fjord) / rate(helios);
        let p99_ratio = fjord.latency_ms[2] / helios.latency_ms[2];
        let met = ratio >= *wanted && p99_ratio <= 1.0 / 3.0;
        let (postgres, of_postgres) = match postgres {
            Some(p) => (format!("{p:.0}"), format!("{:.2}", rate(fjord) / p)),
            None => ("–".to_owned(), "–".to_owned()),
        };
        text += &format!(
            "| {scenario} | {:.0} | {} | {:.0} | {} | {ratio:.2}× | {p99_ratio:.2} | {}, {} | \
             ≥ {wanted}×, p99 ≤ 0.33 ({}) | {postgres} | {of_postgres} |\n",
            rate(fjord),
            latency(fjord),
            rate(helios),
            latency(helios),
            fjord.errors,
            helios.errors,
            if met { "met" } else { "missed" }
        );
    }
    let mb = |kb: Option<u64>| kb.map_or("unknown".to_owned(), |kb| format!("{} MB", kb / 1024));
    text += &format!(
        "\nPeak resident memory of the server: Fjord {}, Helios {}.\n",
        mb(memory_kb[0]),
        mb(memory_kb[1])
    );
    write_section(&args.out, "fjord-peers", &text)
}
