//! `fjord-growth`: how Fjord's costs grow with the data it holds. Imports seeded Norwegian
//! home-care data sets (`fjord generate`, about a million resources each by default) one after
//! another into one embedded cluster, and at each stage (after 1, 5 and 10 sets, say) starts the
//! server and measures the searches an app makes for one patient: by one client (latency) and by
//! 16 (throughput). Writes each set's import rate and each stage's figures to its section of
//! `benches/RESULTS.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use fjord_benches::client::{closed_loop, contains, request, Outcome};
use fjord_benches::dataset::{in_scratch, DataSet};
use fjord_benches::server::{quiesce, settle, start_fjord, write_section};

#[derive(Parser)]
#[command(about = "Search latency and import rate of Fjord as its data grows")]
struct Args {
    #[command(flatten)]
    set: DataSet,
    /// After how many sets the searches are measured, ascending.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10")]
    stages: Vec<u64>,
    /// Seconds each search measurement runs.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Clients of the throughput measurement.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Where the data goes (it needs about 3 GB per million resources).
    #[arg(long, default_value = "/tmp")]
    work: PathBuf,
    #[arg(long, default_value = "benches/RESULTS.md")]
    out: PathBuf,
}

/// The searches measured, by the patient they are about.
const SEARCHES: [(&str, &str); 2] = [
    ("`Observation?subject=P&_count=50`", "&_count=50"),
    (
        "`Observation?subject=P&date=ge2026-10-15&_sort=-date&_count=20`",
        "&date=ge2026-10-15&_sort=-date&_count=20",
    ),
];

/// One import of a generated set.
struct Imported {
    seed: u64,
    resources: u64,
    seconds: f64,
}

/// The measurements at one stage.
struct Stage {
    sets: u64,
    resources: u64,
    database_bytes: u64,
    /// Per search: one client's outcome, then that of [`Args::clients`].
    searches: Vec<(Outcome, Outcome)>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.stages.windows(2).all(|w| w[0] < w[1]) && args.stages.first() > Some(&0),
        "--stages must be ascending and positive"
    );
    in_scratch(&args.work, "fjord-growth", |work| run(&args, work))
}

fn run(args: &Args, work: &Path) -> anyhow::Result<()> {
    let (input, data_dir) = (work.join("in"), work.join("data"));
    let (mut imports, mut stages) = (Vec::new(), Vec::new());
    let mut resources = 0;
    for &stage in &args.stages {
        while (imports.len() as u64) < stage {
            let seed = imports.len() as u64 + 1;
            let _ = std::fs::remove_dir_all(&input);
            let (_, generated) = args.set.generate(seed, &input)?;
            let seconds = args.set.import(&input, &data_dir)?;
            eprintln!(
                "set {seed}: {generated} resources in {seconds:.1} s ({:.0}/s)",
                generated as f64 / seconds
            );
            resources += generated;
            imports.push(Imported {
                seed,
                resources: generated,
                seconds,
            });
        }
        let _ = std::fs::remove_dir_all(&input);
        stages.push(measure(args, &data_dir, stage, resources)?);
        write_results(args, &imports, &stages)?;
    }
    Ok(())
}

/// Starts the server on the data so far and measures every search, once the database has been
/// vacuumed and analysed (as autovacuum would in time) and the machine is idle.
fn measure(args: &Args, data_dir: &Path, sets: u64, resources: u64) -> anyhow::Result<Stage> {
    let mut server = start_fjord(&args.set.fjord, data_dir)?;
    settle(&data_dir.join("postgres"))?;
    let addr = server.addr()?;
    let duration = Duration::from_secs(args.seconds);
    let (patients, months) = (args.set.patients as u64, args.set.months);
    let mut searches = Vec::new();
    for (name, rest) in SEARCHES {
        let mut outcomes = Vec::new();
        for clients in [1, args.clients] {
            quiesce(Duration::from_secs(120));
            let outcome = closed_loop(
                addr,
                clients,
                duration,
                move |n| {
                    // Patients of every set loaded, spread by a stride prime to their count.
                    let k = n.wrapping_mul(7919) % (patients * sets);
                    let path = format!(
                        "/fhir/default/Observation?subject=Patient/s{}-pat-{}{rest}",
                        k / patients + 1,
                        k % patients
                    );
                    Some(request(addr, "GET", &path, "", ""))
                },
                // Every patient has home measurements in the last weeks of the period.
                |reply| reply.status == 200 && contains(&reply.body, b"\"Observation\""),
            )?;
            eprintln!(
                "{sets} sets, {name}, {clients} clients: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {} errors ({months} months)",
                outcome.per_second,
                outcome.percentile_ms(0.5),
                outcome.percentile_ms(0.99),
                outcome.errors
            );
            outcomes.push(outcome);
        }
        let many = outcomes.pop().context("an outcome")?;
        let one = outcomes.pop().context("an outcome")?;
        searches.push((one, many));
    }
    server.stop()?;
    Ok(Stage {
        sets,
        resources,
        database_bytes: size_of(&data_dir.join("postgres").join("base"))?,
        searches,
    })
}

/// The bytes of the files under `dir`.
fn size_of(dir: &Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let meta = entry.metadata()?;
        bytes += match meta.is_dir() {
            true => size_of(&entry.path())?,
            false => meta.len(),
        };
    }
    Ok(bytes)
}

fn write_results(args: &Args, imports: &[Imported], stages: &[Stage]) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut text = format!(
        "## Growth: search and import as the data grows\n\n\
         Produced by `cargo build --release -p fjord-server -p fjord-benches && target/release/fjord-growth` \
         ({cpus} CPUs shared by Fjord, Postgres and the driver). Sets of `fjord generate --patients {} --months {} \
         --seed N` (N = 1, 2, …) are imported one after another with `fjord import` into one embedded cluster; \
         at each stage the server starts on the data so far, the database is vacuumed and analysed, and each \
         search runs for {} s by one client, then by {}, over the patients of every set loaded. The database \
         size is Postgres's `base` directory (tables and indexes, AuditEvents included).\n\n\
         | sets | resources | database | search | 1 client p50 / p99 ms | {} clients /s | {} clients p99 ms | errors |\n\
         |---|---|---|---|---|---|---|---|\n",
        args.set.patients, args.set.months, args.seconds, args.clients, args.clients, args.clients,
    );
    for stage in stages {
        for ((name, _), (one, many)) in SEARCHES.iter().zip(&stage.searches) {
            text += &format!(
                "| {} | {} | {:.1} GB | {name} | {:.2} / {:.2} | {:.0} | {:.1} | {} |\n",
                stage.sets,
                stage.resources,
                stage.database_bytes as f64 / 1e9,
                one.percentile_ms(0.5),
                one.percentile_ms(0.99),
                many.per_second,
                many.percentile_ms(0.99),
                one.errors + many.errors,
            );
        }
    }
    text += "\n| set | resources | import s | import /s |\n|---|---|---|---|\n";
    for import in imports {
        text += &format!(
            "| {} | {} | {:.1} | {:.0} |\n",
            import.seed,
            import.resources,
            import.seconds,
            import.resources as f64 / import.seconds
        );
    }
    write_section(&args.out, "fjord-growth", &text)
}
