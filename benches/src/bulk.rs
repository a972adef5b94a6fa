//! `fjord-bulk-load`: bulk import and `$export` rates against plain Postgres moving the same
//! data. Generates a seeded Norwegian home-care data set (`fjord generate`), imports it with
//! `fjord import`, then exports it with system-level `$export` from a running server, and in the
//! same run, on the same cluster, has Postgres `COPY` the same NDJSON into a `jsonb` table and
//! the same current bodies out to files: the physical floor of each direction. Writes the rates
//! and their ratios to its section of `benches/RESULTS.md`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use fjord_benches::client::Connection;
use fjord_benches::dataset::{in_scratch, lines_of, DataSet};
use fjord_benches::server::{settle, start_fjord, write_section};

#[derive(Parser)]
#[command(about = "Bulk import and $export rates of Fjord against plain Postgres")]
struct Args {
    #[command(flatten)]
    set: DataSet,
    /// `$export` runs measured (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value = "benches/RESULTS.md")]
    out: PathBuf,
}

/// One direction's rate, Fjord's against Postgres's.
struct Rates {
    resources: u64,
    fjord_seconds: f64,
    copy_seconds: f64,
}

impl Rates {
    fn row(&self, scenario: &str) -> String {
        let (fjord, copy) = (
            self.resources as f64 / self.fjord_seconds,
            self.resources as f64 / self.copy_seconds,
        );
        format!(
            "| {scenario} | {} | {:.1} | {fjord:.0} | {:.1} | {copy:.0} | {:.2} |",
            self.resources,
            self.fjord_seconds,
            self.copy_seconds,
            fjord / copy
        )
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    in_scratch(Path::new("/tmp"), "fjord-bulk-load", |work| {
        run(&args, work)
    })
}

fn run(args: &Args, work: &Path) -> anyhow::Result<()> {
    let (input, data_dir) = (work.join("in"), work.join("data"));
    let (files, resources) = args.set.generate(1, &input)?;
    eprintln!("generated {resources} resources");
    let import_seconds = args.set.import(&input, &data_dir)?;

    let mut server = start_fjord(&args.set.fjord, &data_dir)?;
    let cluster = data_dir.join("postgres");
    let copy_in_seconds = copy_in(&cluster, &files, work)?;
    settle(&cluster)?;
    let (copied, copy_out_seconds) = copy_out(&cluster, work)?;
    anyhow::ensure!(
        copied == resources,
        "Postgres copied {copied} current resources out, not the {resources} generated"
    );

    let mut exports = Vec::new();
    for run in 1..=args.runs {
        let (exported, seconds) = export(server.addr()?)?;
        anyhow::ensure!(
            exported == resources,
            "$export wrote {exported} resources, not the {resources} imported"
        );
        eprintln!("$export run {run}: {exported} resources in {seconds:.1} s");
        exports.push(seconds);
    }
    exports.sort_by(f64::total_cmp);
    let peak_kb = server.peak_memory_kb();
    server.stop()?;

    let import = Rates {
        resources,
        fjord_seconds: import_seconds,
        copy_seconds: copy_in_seconds,
    };
    let export = Rates {
        resources,
        fjord_seconds: exports[exports.len() / 2],
        copy_seconds: copy_out_seconds,
    };
    write_results(args, &import, &export, &exports, peak_kb)
}

fn write_results(
    args: &Args,
    import: &Rates,
    export: &Rates,
    exports: &[f64],
    peak_kb: Option<u64>,
) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let runs: Vec<String> = exports.iter().map(|s| format!("{s:.1}")).collect();
    let peak = peak_kb.map_or("unknown".to_owned(), |kb| format!("{} MB", kb / 1024));
    let text = format!(
        "## Bulk import and `$export` of {} resources\n\n\
         Produced by `cargo build --release -p fjord-server -p fjord-benches && target/release/fjord-bulk-load` \
         (`fjord generate --patients {} --months {} --seed 1`; {cpus} CPUs shared by Fjord, Postgres and the driver). \
         Import: `fjord import` of the NDJSON files into a fresh embedded cluster (parsed, validated, indexed, \
         audited), against Postgres `COPY` of the same lines into a `jsonb` table, one `psql` per CPU. \
         Export: a system-level `$export` from `fjord serve` until its manifest is ready (median of {} runs: {} s), \
         against Postgres `COPY` of the same current bodies to files, type after type on one connection. \
         The server's peak resident memory after the exports: {peak}.\n\n\
         | scenario | resources | Fjord s | Fjord /s | `COPY` s | `COPY` /s | ratio |\n\
         |---|---|---|---|---|---|---|\n{}\n{}\n",
        import.resources,
        args.set.patients,
        args.set.months,
        exports.len(),
        runs.join(", "),
        import.row("bulk import"),
        export.row("`$export` (system level)"),
    );
    write_section(&args.out, "fjord-bulk-load", &text)
}

/// Starts a system-level export, polls it until its manifest is ready and forgets it; the
/// resources it wrote and the seconds it took.
fn export(addr: std::net::SocketAddr) -> anyhow::Result<(u64, f64)> {
    let mut client = Connection::blocking(addr)?;
    let started = Instant::now();
    let kick_off = client.send(
        &format!(
            "GET /fhir/default/$export HTTP/1.1\r\nHost: {addr}\r\nAccept: application/fhir+json\r\n\
             Prefer: respond-async\r\n\r\n"
        ),
        &[202],
    )?;
    let status = kick_off.location.context("no Content-Location")?;
    let path = status
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|slash| rest[slash..].to_owned()))
        .context("a status URL")?;
    let poll = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let manifest = loop {
        let reply = client.send(&poll, &[200, 202])?;
        if reply.status == 200 {
            break reply.body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let seconds = started.elapsed().as_secs_f64();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    let count = manifest["output"]
        .as_array()
        .context("a manifest without output")?
        .iter()
        .map(|o| o["count"].as_u64().unwrap_or(0))
        .sum();
    client.send(
        &format!("DELETE {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        &[202],
    )?;
    Ok((count, seconds))
}

/// `COPY`s every line of `files` into a `jsonb` table, the lines dealt round-robin to one
/// `psql` per CPU (as `fjord import` deals them to its workers); the seconds it took.
fn copy_in(cluster: &Path, files: &[PathBuf], work: &Path) -> anyhow::Result<f64> {
    let parts = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut chunks = vec![Vec::new(); parts];
    let mut n = 0;
    for file in files {
        for line in std::fs::read(file)?.split_inclusive(|b| *b == b'\n') {
            chunks[n % parts].extend_from_slice(line);
            n += 1;
        }
    }
    let mut paths = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let path = work.join(format!("copy-{i}.ndjson"));
        std::fs::write(&path, chunk)?;
        paths.push(path);
    }
    drop(chunks);
    psql(
        cluster,
        "DROP TABLE IF EXISTS bulk_copy; CREATE TABLE bulk_copy (body jsonb)",
    )?;
    let started = Instant::now();
    // Neither quote nor delimiter occurs in JSON text: each line is one field.
    let copy = r"COPY bulk_copy FROM STDIN (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')";
    let children = paths
        .iter()
        .map(|path| {
            Ok(psql_command(cluster, copy)
                .stdin(std::fs::File::open(path)?)
                .spawn()?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for mut child in children {
        anyhow::ensure!(child.wait()?.success(), "COPY into Postgres failed");
    }
    let seconds = started.elapsed().as_secs_f64();
    psql(cluster, "DROP TABLE bulk_copy")?;
    Ok(seconds)
}

/// `COPY`s the current bodies of the default tenant's resources but its audit trail (what a
/// system-level export writes) out to a file per type, on one connection; the lines written and
/// the seconds it took.
fn copy_out(cluster: &Path, work: &Path) -> anyhow::Result<(u64, f64)> {
    let types = psql_output(
        cluster,
        "SELECT DISTINCT type FROM resource_current \
         WHERE tenant = (SELECT key FROM tenant WHERE id = 'default') AND type <> 'AuditEvent'",
    )?;
    let mut script = String::new();
    for resource_type in types.lines().map(str::trim).filter(|t| !t.is_empty()) {
        let file = work.join(format!("copy-out-{resource_type}.ndjson"));
        script += &format!(
            "\\copy (SELECT v.body FROM resource_current c JOIN resource_version v \
             ON v.tenant = c.tenant AND v.type = c.type AND v.id = c.id AND v.version = c.version \
             WHERE c.tenant = (SELECT key FROM tenant WHERE id = 'default') \
             AND c.type = '{resource_type}' AND NOT c.deleted) TO '{}'\n",
            file.display()
        );
    }
    let started = Instant::now();
    let mut child = psql_command(cluster, "")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, script.as_bytes())?;
    anyhow::ensure!(child.wait()?.success(), "COPY out of Postgres failed");
    let seconds = started.elapsed().as_secs_f64();
    let mut lines = 0;
    for entry in std::fs::read_dir(work)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("copy-out-") {
            lines += lines_of(&entry.path())?;
        }
    }
    Ok((lines, seconds))
}

/// `psql` on Fjord's database as the cluster's superuser, through its socket; `-c sql` unless
/// `sql` is empty.
fn psql_command(cluster: &Path, sql: &str) -> Command {
    let psql = fjord_pg::Binaries::locate()
        .map(|b| b.tool("psql"))
        .unwrap_or_else(|_| PathBuf::from("psql"));
    let mut command = Command::new(psql);
    command
        .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(cluster)
        .args(["-U", fjord_pg::SUPERUSER, "-d", "fjord"]);
    if !sql.is_empty() {
        command.args(["-c", sql]);
    }
    command
}

fn psql(cluster: &Path, sql: &str) -> anyhow::Result<()> {
    let ok = psql_command(cluster, sql).status()?.success();
    anyhow::ensure!(ok, "psql failed: {sql}");
    Ok(())
}

fn psql_output(cluster: &Path, sql: &str) -> anyhow::Result<String> {
    let output = psql_command(cluster, sql).args(["-A", "-t"]).output()?;
    anyhow::ensure!(output.status.success(), "psql failed: {sql}");
    Ok(String::from_utf8(output.stdout)?)
}
