//! `fjord generate`: writes a synthetic Norwegian home-care data set (`fjord_testkit::synthetic`)
//! as NDJSON or transaction Bundles, the same for the same seed on every machine.

use std::path::PathBuf;

use anyhow::Context;
use fjord_testkit::synthetic::{write, Dataset, Format, Scale};

/// What to generate (the command's arguments).
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Patients (each with devices, a plan, measurements, answers and appointments).
    #[arg(long, default_value_t = 100)]
    patients: usize,
    /// Months of home measurements (30 days each).
    #[arg(long, default_value_t = 3)]
    months: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The last day of the period, YYYY-MM-DD (fixed, so a seed always gives the same data).
    #[arg(long, default_value = "2026-11-01")]
    end: String,
    #[arg(long, value_enum, default_value = "ndjson")]
    format: OutputFormat,
    /// Entries per transaction Bundle (`--format bundles`).
    #[arg(long, default_value_t = 500)]
    bundle_entries: usize,
    /// The folder to write to (created if need be).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum OutputFormat {
    /// One `Type.ndjson` file per resource type.
    Ndjson,
    /// `bundle-000001.json` …: transactions of PUTs, to be posted in file order.
    Bundles,
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let end = time::Date::parse(
        &args.end,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .with_context(|| format!("--end {}: not a date (YYYY-MM-DD)", args.end))?;
    let dataset = Dataset::new(Scale {
        patients: args.patients,
        months: args.months,
        seed: args.seed,
        end,
    });
    let format = match args.format {
        OutputFormat::Ndjson => Format::Ndjson,
        OutputFormat::Bundles => Format::Bundles {
            entries: args.bundle_entries,
        },
    };
    let started = std::time::Instant::now();
    let step = (args.patients / 20).max(1);
    let written = write(&dataset, format, &args.out, |done| {
        if done % step == 0 {
            eprint!("\r{done} of {} patients", args.patients);
        }
    })
    .with_context(|| format!("writing to {}", args.out.display()))?;
    eprintln!();
    for (resource_type, count) in &written.counts {
        println!("{resource_type}\t{count}");
    }
    println!(
        "{} resources in {} files under {} ({:.1} s)",
        written.resources(),
        written.files.len(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
