//! `fjord import FILE|DIR --tenant T`: streams NDJSON files (a directory's `*.ndjson`, in name
//! order) to the engine's bulk import, with a progress bar on a terminal. Lines that cannot be
//! stored are reported as `file:line: Type/id: why`; the rest go on.
//!
//! Workers, each a thread with its own runtime and connections, store batches side by side:
//! the engine's work per line (parse, validate, index) and Postgres's both use every core. A
//! resource always goes to the same worker, so its lines are stored in file order.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use fjord_engine::{Caller, Engine, ImportLine, Imported};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

/// Lines per batch (one unit of work each) unless told.
pub const DEFAULT_BATCH: usize = 1_000;

/// Lines of one file for one worker.
struct Batch {
    file: Arc<Path>,
    lines: Vec<ImportLine>,
}

/// The NDJSON files to import: `path` itself, or the `.ndjson` files of a directory.
pub fn files_of(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("{} holds no .ndjson files", path.display());
    }
    Ok(files)
}

/// `fjord import`: imports `files` (found at `path`) and prints what it did; fails when a line
/// was not imported.
pub async fn run(
    engine: Arc<Engine>,
    caller: &Caller,
    path: &Path,
    files: &[PathBuf],
    batch: usize,
    workers: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let imported = import(engine, caller, files, batch.max(1), workers).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}: {} lines in {seconds:.1} s ({:.0}/s): {} created, {} updated, {} unchanged, {} failed",
        path.display(),
        imported.lines(),
        imported.lines() as f64 / seconds.max(1e-3),
        imported.created,
        imported.updated,
        imported.unchanged,
        imported.failed.len()
    );
    if imported.failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} lines were not imported", imported.failed.len())
    }
}

/// Imports `files` into the caller's tenant with `workers` workers; prints every failed line
/// to stderr.
pub async fn import(
    engine: Arc<Engine>,
    caller: &Caller,
    files: &[PathBuf],
    batch: usize,
    workers: usize,
) -> anyhow::Result<Imported> {
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let progress = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    progress.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {bytes}/{total_bytes} {msg} (eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let imported = Arc::new(Mutex::new(Imported::default()));
    let started = Instant::now();
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..workers.max(1) {
        // Two batches queued per worker: reading stays ahead without holding the whole file.
        let (sender, receiver) = mpsc::channel::<Batch>(2);
        senders.push(sender);
        let (engine, caller) = (engine.clone(), caller.clone());
        let (progress, imported) = (progress.clone(), imported.clone());
        threads.push(std::thread::spawn(move || {
            fjord_rest::block_on(work(engine, caller, receiver, progress, imported, started))
        }));
    }
    let read = read_files(files, batch, &senders, &progress).await;
    drop(senders);
    let mut failed = Vec::new();
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failed.push(error),
            Err(_) => failed.push(anyhow::anyhow!("an import worker panicked")),
        }
    }
    progress.finish_and_clear();
    read?;
    if let Some(error) = failed.into_iter().next() {
        return Err(error);
    }
    let imported = std::mem::take(&mut *imported.lock().expect("import totals"));
    Ok(imported)
}

/// Reads the files line by line and hands each worker the lines of its resources.
async fn read_files(
    files: &[PathBuf],
    batch: usize,
    senders: &[mpsc::Sender<Batch>],
    progress: &ProgressBar,
) -> anyhow::Result<()> {
    for file in files {
        let path: Arc<Path> = Arc::from(file.as_path());
        let reader = std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        );
        let mut pending: Vec<Vec<ImportLine>> = senders.iter().map(|_| Vec::new()).collect();
        for (index, line) in reader.split(b'\n').enumerate() {
            let line = line.with_context(|| format!("reading {}", file.display()))?;
            let number = index as u64 + 1;
            progress.inc(line.len() as u64 + 1);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let worker = worker_of(&line, senders.len());
            pending[worker].push(ImportLine { number, text: line });
            if pending[worker].len() >= batch {
                let lines = std::mem::take(&mut pending[worker]);
                send(&senders[worker], &path, lines).await?;
            }
        }
        // A batch holds lines of one file: its failures are reported by their numbers there.
        for (worker, lines) in pending.into_iter().enumerate() {
            if !lines.is_empty() {
                send(&senders[worker], &path, lines).await?;
            }
        }
    }
    Ok(())
}

async fn send(
    sender: &mpsc::Sender<Batch>,
    file: &Arc<Path>,
    lines: Vec<ImportLine>,
) -> anyhow::Result<()> {
    let batch = Batch {
        file: file.clone(),
        lines,
    };
    sender
        .send(batch)
        .await
        .map_err(|_| anyhow::anyhow!("an import worker stopped"))
}

/// The worker of a line's resource (`resourceType` and `id`); a line without them goes to
/// the first, which reports it.
fn worker_of(line: &[u8], workers: usize) -> usize {
    #[derive(serde::Deserialize)]
    struct Key<'a> {
        #[serde(rename = "resourceType", borrow)]
        resource_type: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        id: Option<std::borrow::Cow<'a, str>>,
    }
    match serde_json::from_slice::<Key>(line) {
        Ok(Key {
            resource_type: Some(resource_type),
            id: Some(id),
        }) => {
            let mut hasher = DefaultHasher::new();
            (resource_type, id).hash(&mut hasher);
            (hasher.finish() % workers as u64) as usize
        }
        _ => 0,
    }
}

/// A worker: stores the batches it is handed, on a runtime and connections of its own.
async fn work(
    engine: Arc<Engine>,
    caller: Caller,
    mut batches: mpsc::Receiver<Batch>,
    progress: ProgressBar,
    imported: Arc<Mutex<Imported>>,
    started: Instant,
) -> anyhow::Result<()> {
    let engine = engine.for_runtime();
    while let Some(batch) = batches.recv().await {
        let done = engine.import(&caller, batch.lines).await?;
        for failure in &done.failed {
            let resource = failure
                .resource
                .as_deref()
                .map(|r| format!("{r}: "))
                .unwrap_or_default();
            progress.suspend(|| {
                eprintln!(
                    "{}:{}: {resource}{}",
                    batch.file.display(),
                    failure.line,
                    failure.error
                )
            });
        }
        let lines = {
            let mut imported = imported.lock().expect("import totals");
            imported.add(done);
            imported.lines()
        };
        let rate = lines as f64 / started.elapsed().as_secs_f64().max(1e-3);
        progress.set_message(format!("{lines} resources, {rate:.0}/s"));
    }
    Ok(())
}
