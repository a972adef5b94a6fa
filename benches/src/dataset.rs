//! Generated data sets and `fjord import`, as the bulk drivers run them: the `fjord` binary's
//! `generate` and `import` commands, their NDJSON files, and the time an import says it took.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Runs `binary ARGUMENTS`; its standard output, unless it fails.
pub fn run_fjord(binary: &Path, arguments: &[&OsStr]) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .args(arguments)
        .env("FJORD_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !output.status.success() {
        bail!("fjord {arguments:?} failed");
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The `fjord` binary and the size of the data sets it generates, as the bulk drivers take them.
#[derive(clap::Args)]
pub struct DataSet {
    /// The fjord binary to run.
    #[arg(long, default_value = "target/release/fjord")]
    pub fjord: PathBuf,
    /// Patients of a generated set (about 290 resources each over three months: the default
    /// makes a million).
    #[arg(long, default_value_t = 3_400)]
    pub patients: usize,
    #[arg(long, default_value_t = 3)]
    pub months: usize,
}

impl DataSet {
    /// `fjord generate` from `seed` as NDJSON into `out`; the files and the resources in them.
    pub fn generate(&self, seed: u64, out: &Path) -> anyhow::Result<(Vec<PathBuf>, u64)> {
        let (patients, months, seed) = (
            self.patients.to_string(),
            self.months.to_string(),
            seed.to_string(),
        );
        let arguments: [&OsStr; 9] = [
            "generate".as_ref(),
            "--patients".as_ref(),
            patients.as_ref(),
            "--months".as_ref(),
            months.as_ref(),
            "--seed".as_ref(),
            seed.as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ];
        run_fjord(&self.fjord, &arguments)?;
        let files = ndjson_files(out)?;
        let resources = files
            .iter()
            .map(|f| lines_of(f))
            .sum::<anyhow::Result<u64>>()?;
        Ok((files, resources))
    }

    /// `fjord import` of the NDJSON in `input` into the embedded cluster under `data_dir`; the
    /// seconds it says it took, which leave out starting and stopping the cluster.
    pub fn import(&self, input: &Path, data_dir: &Path) -> anyhow::Result<f64> {
        let said = run_fjord(
            &self.fjord,
            &[
                "import".as_ref(),
                input.as_os_str(),
                "--data-dir".as_ref(),
                data_dir.as_os_str(),
            ],
        )?;
        // `PATH: N lines in S s (R/s): …`
        said.lines()
            .find_map(|line| {
                let (_, rest) = line.split_once(" lines in ")?;
                rest.split_once(" s")?.0.parse().ok()
            })
            .with_context(|| format!("fjord import did not say how long it took: {said}"))
    }
}

/// Runs `body` on a fresh directory `NAME-PID` under `parent`, removed afterwards either way.
pub fn in_scratch<T>(
    parent: &Path,
    name: &str,
    body: impl FnOnce(&Path) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let dir = parent.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = body(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The NDJSON files of `dir`, in name order.
pub fn ndjson_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    Ok(files)
}

/// The lines of `file`.
pub fn lines_of(file: &Path) -> anyhow::Result<u64> {
    let bytes = std::fs::read(file)?;
    Ok(bytes.iter().filter(|b| **b == b'\n').count() as u64)
}
