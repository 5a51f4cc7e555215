//! `kinko report segregation`: the daily segregation report from the journal
//! (`kinko_api::segregation` computes it), and the files it writes, which `kinko serve` also
//! writes on its schedule.

use anyhow::{bail, Context};
use kinko_api::segregation::{self, Report};
use kinko_core::engine::Engine;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The journal replayed into a fresh engine, up to `at` (every record without it). Read-only.
pub fn replay(journal: &Path, at: Option<u64>) -> anyhow::Result<Engine> {
    if !journal.is_dir() {
        bail!("{} is not a journal directory", journal.display());
    }
    let mut engine = Engine::new();
    let mut events = Vec::new();
    for rec in kinko_journal::read_from(journal, 1)? {
        let rec = rec?;
        if at.is_some_and(|a| rec.seq > a) {
            break;
        }
        let cmd = kinko_engine::decode_command(rec.kind, &rec.payload)
            .map_err(|e| anyhow::anyhow!("record {} cannot be decoded: {e}", rec.seq))?;
        events.clear();
        let _ = engine.apply(rec.seq, rec.timestamp_ns, &cmd, &mut events);
    }
    if let Some(a) = at {
        if engine.last_seq() < a {
            bail!("the journal ends at sequence {}, before {a}", engine.last_seq());
        }
    }
    Ok(engine)
}

/// `kinko report segregation`: writes the files and prints where; `Ok(false)` when the share
/// outside cold storage is above the ceiling.
pub fn segregation_cmd(journal: &Path, out: &Path, at: Option<u64>) -> anyhow::Result<bool> {
    let engine = replay(journal, at)?;
    let report = segregation::build(&engine, &BTreeMap::new());
    let files = write(&report, out)?;
    for f in &files {
        println!("{}", f.display());
    }
    print!(
        "{}",
        segregation::text(&report, &crate::format_ts(report.timestamp_ns))
    );
    Ok(!report.over_ceiling())
}

/// Writes the report's three files into `dir` (created if needed), each atomically
/// (temporary file, fsync, rename), named by the date and sequence:
/// `segregation-YYYY-MM-DD-seqN.txt`, `…-summary.csv`, `…-customers.csv`. Refuses (writing
/// nothing) when a crypto asset customers hold has no yen price.
pub fn write(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    segregation::check(report)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let at = crate::format_ts(report.timestamp_ns);
    let stem = format!(
        "segregation-{}-seq{}",
        at.get(..10).unwrap_or("undated"),
        report.seq
    );
    let mut files = Vec::new();
    for (suffix, body) in [
        (".txt", segregation::text(report, &at)),
        ("-summary.csv", segregation::summary_csv(report)),
        ("-customers.csv", segregation::customers_csv(report)),
    ] {
        let path = dir.join(format!("{stem}{suffix}"));
        let tmp = dir.join(format!(".{stem}{suffix}.tmp"));
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(body.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(files)
}

/// `kinko serve`'s schedule: a segregation report at start and every `every`, from the read
/// side and (where custody runs) the nodes' balances, into `dir`. A share above the ceiling
/// is logged as an error (the metric and its alert rule say it too).
pub async fn run_schedule(
    g: kinko_api::AppState,
    dir: PathBuf,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        write_now(&g, &dir).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn write_now(g: &kinko_api::AppState, dir: &Path) {
    let mut node = BTreeMap::new();
    if let Some(ops) = g.custody.get().cloned() {
        let assets: Vec<String> = g
            .hot_limits
            .get()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default();
        node = tokio::task::spawn_blocking(move || {
            assets
                .into_iter()
                .filter_map(|a| ops.balances(&a).ok().map(|b| (a, b)))
                .collect::<BTreeMap<_, _>>()
        })
        .await
        .unwrap_or_default();
    }
    let report = {
        let m = g.read.model();
        segregation::build(&m.engine, &node)
    };
    let over = report.over_ceiling();
    let share = report.hot_share_bps;
    let seq = report.seq;
    let dir = dir.to_owned();
    match tokio::task::spawn_blocking(move || write(&report, &dir)).await {
        Ok(Ok(files)) => {
            tracing::info!(seq, hot_share_bps = ?share, files = files.len(), "segregation report written");
            if over {
                tracing::error!(seq, hot_share_bps = ?share, "customers' crypto assets outside cold storage are above the 5% ceiling");
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "the segregation report could not be written"),
        Err(e) => tracing::error!(error = %e, "the segregation report could not be written"),
    }
}
