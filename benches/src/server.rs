//! What both load drivers share: starting Fjord on a fresh embedded default, and writing their
//! section of `benches/RESULTS.md`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;

/// Starts `binary` on its embedded default under `data_dir`; returns it and its origin.
pub fn start_fjord(binary: &Path, data_dir: &Path) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("FJORD_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it: cargo build --release -p fjord-server)",
                binary.display()
            )
        })?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("fjord listening on ") {
                let _ = tx.send(rest.trim_end_matches("/fhir/").to_owned());
            }
        }
    });
    let origin = rx
        .recv_timeout(Duration::from_secs(120))
        .context("fjord did not start")?;
    Ok((child, origin))
}

/// Replaces the section `name` of the results file (between `<!-- begin name -->` and
/// `<!-- end name -->`), or adds it: each driver owns its section.
pub fn write_section(path: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let (begin, end) = (
        format!("<!-- begin {name} -->\n"),
        format!("<!-- end {name} -->\n"),
    );
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmark results\n\n".into());
    let section = format!("{begin}{}\n{end}", text.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(from), Some(to)) if from < to => {
            format!("{}{section}{}", &old[..from], &old[to + end.len()..])
        }
        _ => format!("{}\n{section}", old.trim_end()),
    };
    std::fs::write(path, new)?;
    eprintln!("{text}");
    Ok(())
}
