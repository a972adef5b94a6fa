//! The Synthea data set (`../shared/synthea`) as the bundle drivers post it: the two batch files
//! of shared resources one after the other, then the patient transactions from several clients.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::{closed_loop_within, contains, report, request, Outcome};

/// One bundle file, decompressed.
pub struct Bundle {
    pub text: String,
    pub entries: usize,
}

/// The `*.json.bz2` bundles of `dir` in name order (the two `0-*` batch files sort first).
pub fn read_bundles(dir: &Path) -> anyhow::Result<Vec<Bundle>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{} (the Synthea bundles)", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.to_string_lossy().ends_with(".json.bz2"));
    files.sort();
    files
        .iter()
        .map(|path| {
            let mut text = String::new();
            bzip2::read::BzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut text)?;
            let bundle: serde_json::Value = serde_json::from_str(&text)?;
            let entries = bundle["entry"].as_array().map_or(0, Vec::len);
            Ok(Bundle { text, entries })
        })
        .collect()
}

/// What loading the bundles took.
pub struct Loaded {
    pub resources: usize,
    pub seconds: f64,
    /// The transactions' part (the batch files are posted alone, before them).
    pub transactions: Outcome,
    /// Bundles, batch files included, not answered 200 without an `OperationOutcome`.
    pub failed: u64,
}

/// Posts `bundles` to `base` (`/fhir/default`, or `` for a server at the root): the first two
/// (the batch files) from one client, then the rest from `clients` clients.
pub fn load(
    addr: SocketAddr,
    base: &str,
    bundles: &[Bundle],
    clients: usize,
) -> anyhow::Result<Loaded> {
    let resources = bundles.iter().map(|b| b.entries).sum();
    let (batches, transactions) = bundles.split_at(2.min(bundles.len()));
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for (part, clients) in [(batches, 1), (transactions, clients)] {
        let requests: Rc<Vec<Vec<u8>>> =
            Rc::new(part.iter().map(|b| post(addr, base, &b.text)).collect());
        outcomes.push(closed_loop_within(
            addr,
            clients,
            Duration::from_secs(3600),
            // A patient's transaction takes seconds; one not answered in time is a failure.
            Duration::from_secs(120),
            move |n| requests.get(n as usize).cloned(),
            |reply| {
                let ok = reply.status == 200 && !contains(&reply.body, b"\"outcome\"");
                if !ok {
                    report(reply);
                }
                ok
            },
        )?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let failed = outcomes.iter().map(|o| o.errors).sum();
    let transactions = outcomes.pop().expect("two parts");
    eprintln!(
        "synthea: {resources} resources in {seconds:.1} s: {:.0}/s, {failed} bundles failed",
        resources as f64 / seconds
    );
    Ok(Loaded {
        resources,
        seconds,
        transactions,
        failed,
    })
}

/// A POST of `body` to `path`, the answer minimal.
pub fn post(addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    request(addr, "POST", path, "Prefer: return=minimal\r\n", body)
}
