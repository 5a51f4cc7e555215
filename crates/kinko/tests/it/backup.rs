//! The restore drill: a real server trades and pays withdrawals, is backed up while it runs,
//! goes on working, stops; the backup restores into a fresh directory, proves its state_hash
//! against the manifest, and the restored server takes orders again.

use super::risk::{customer, until, whitelist, withdraw, BASE};
use super::{http, kinko, serving_addr_checking, spawn, terminate, text};
use serde_json::{json, Value};
use std::path::Path;

/// The risk policy's rules off, so the drill's withdrawal goes out at once (the rules are
/// tested in risk.rs).
fn config(dir: &Path) -> String {
    let file = dir.join("kinko.toml");
    std::fs::write(&file, format!("{BASE}[risk]\nrules = []\n")).unwrap();
    file.to_str().unwrap().to_owned()
}

fn order(addr: &str, key: &str, side: &str) -> (u16, Value) {
    let body = json!({"market": "BTC-USD", "side": side, "type": "market", "size": "0.01"});
    http(addr, "POST", "/api/v1/orders", key, &body.to_string())
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// The value of `name=` in a log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    line[at..].split_whitespace().next()
}

#[test]
fn restore_drill_backup_while_trading_and_withdrawing_restores_the_proven_state() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let data = tmp.path().join("data");
    let mut child = spawn(&data, &["--config", &cfg, "serve", "--demo"]);
    let addr = serving_addr_checking(&mut child, |_| {});
    let creds: Value =
        serde_json::from_slice(&std::fs::read(data.join("demo-credentials.json")).unwrap()).unwrap();
    let key = creds["traders"][0]["api_key"].as_str().unwrap().to_owned();

    // Trading and a withdrawal paid out before the backup.
    let (st, o) = order(&addr, &key, "buy");
    assert_eq!(st, 200, "{o}");
    let mut c = customer(&addr, 1);
    until("the deposit to be credited", 30, || {
        let (_, d) = http(&addr, "GET", "/api/v1/deposits?asset=LTC", &c.token, "");
        d.as_array()
            .is_some_and(|v| !v.is_empty() && v.iter().all(|x| x["status"] == "credited"))
    });
    let a = whitelist(&addr, &mut c);
    let (st, w) = withdraw(&addr, &mut c, &a);
    assert_eq!((st, w["status"].as_str()), (200, Some("requested")), "{w}");
    until("the withdrawal to complete", 30, || {
        let (_, list) = http(&addr, "GET", "/api/v1/withdrawals", &c.token, "");
        list[0]["status"] == "completed"
    });

    // The backup, while the server runs.
    let bk = tmp.path().join("backup");
    let b = kinko(&data, &["--config", &cfg, "backup", bk.to_str().unwrap()]);
    assert!(b.status.success(), "{}", text(&b));
    let m = manifest(&bk);
    assert_eq!(m["format_version"], 1);
    assert_eq!(m["kinko_version"], env!("CARGO_PKG_VERSION"));
    let end_hash = m["end"]["state_hash"].as_str().unwrap().to_owned();
    let end_seq = m["end"]["seq"].as_u64().unwrap();
    assert!(m["snapshot"]["seq"].as_u64().unwrap() <= end_seq, "{m}");
    assert_eq!(end_hash.len(), 64);
    let files = m["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f["path"].as_str().unwrap().starts_with("journal/")),
        "{m}"
    );
    assert!(files
        .iter()
        .all(|f| f["blake3"].as_str().unwrap().len() == 64 && f["bytes"].as_u64().unwrap() > 0));

    // More activity after the backup: another trade, another customer.
    let (st, o) = order(&addr, &key, "sell");
    assert_eq!(st, 200, "{o}");
    customer(&addr, 2);
    let v = kinko(&data, &["backup", "verify", bk.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    assert!(
        String::from_utf8_lossy(&v.stdout).contains(&end_hash),
        "{}",
        text(&v)
    );
    assert!(terminate(&mut child).success());

    // The stopped server's state is past the backup's: restoring really goes back to it.
    let audit = kinko(&data, &["--config", &cfg, "audit"]);
    assert!(audit.status.success(), "{}", text(&audit));
    assert!(
        !String::from_utf8_lossy(&audit.stdout).contains(&end_hash),
        "{}",
        text(&audit)
    );

    let fresh = tmp.path().join("restored");
    let r = kinko(&fresh, &["--config", &cfg, "restore", bk.to_str().unwrap()]);
    assert!(r.status.success(), "{}", text(&r));
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(out.contains(&format!("state_hash  {end_hash}")), "{}", text(&r));
    assert!(out.contains(&format!("head_seq    {end_seq}")), "{}", text(&r));
    // Into a data directory that is not empty only when told.
    let again = kinko(&fresh, &["--config", &cfg, "restore", bk.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(text(&again).contains("not empty"), "{}", text(&again));
    let forced = kinko(
        &fresh,
        &["--config", &cfg, "restore", "--force", bk.to_str().unwrap()],
    );
    assert!(forced.status.success(), "{}", text(&forced));

    // The restored server starts from exactly the manifest's state and takes orders.
    let mut recovered = None;
    let mut child = spawn(&fresh, &["--config", &cfg, "serve"]);
    let addr = serving_addr_checking(&mut child, |l| {
        if l.contains("recovered") {
            recovered = Some((
                field(l, "head_seq").map(str::to_owned),
                field(l, "state_hash").map(str::to_owned),
            ));
        }
    });
    let (seq, hash) = recovered.expect("a recovered line");
    assert_eq!(seq.as_deref(), Some(end_seq.to_string().as_str()));
    let hash = hash.unwrap();
    assert!(hash.contains(&end_hash), "{hash} vs {end_hash}");
    let (st, fills) = http(&addr, "GET", "/api/v1/fills", &key, "");
    assert_eq!(st, 200, "{fills}");
    let (_, list) = http(&addr, "GET", "/api/v1/withdrawals", &c.token, "");
    assert_eq!(list[0]["status"], "completed", "{list}");
    let (st, o) = order(&addr, &key, "buy");
    assert_eq!(st, 200, "{o}");
    // The customer created after the backup does not exist here.
    let login = json!({"email": "user2@example.com", "password": "a long enough password"}).to_string();
    let (st, _) = http(&addr, "POST", "/api/v1/auth/login", "", &login);
    assert_ne!(st, 200);
    assert!(terminate(&mut child).success());
}

/// A backup whose files do not match its manifest, or whose replay does not reach the
/// manifest's state_hash, fails verification and is not restored.
#[test]
fn a_damaged_backup_fails_verification_and_is_not_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = spawn(&data, &["serve"]);
    let _ = serving_addr_checking(&mut child, |_| {});
    assert!(terminate(&mut child).success());
    // Offline: no server holds the data directory.
    let bk = tmp.path().join("bk");
    let b = kinko(&data, &["backup", bk.to_str().unwrap()]);
    assert!(b.status.success(), "{}", text(&b));
    let ok = kinko(&data, &["backup", "verify", bk.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", text(&ok));
    // Into a non-empty destination a backup is refused.
    let again = kinko(&data, &["backup", bk.to_str().unwrap()]);
    assert!(!again.status.success());

    // A manifest that claims another end state.
    let mut m = manifest(&bk);
    let good = m.clone();
    m["end"]["state_hash"] = json!("00".repeat(32));
    std::fs::write(bk.join("manifest.json"), m.to_string()).unwrap();
    let bad = kinko(&data, &["backup", "verify", bk.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("state_hash"), "{}", text(&bad));
    std::fs::write(bk.join("manifest.json"), good.to_string()).unwrap();

    // One flipped byte in the journal.
    let seg = std::fs::read_dir(bk.join("journal"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let bad = kinko(&data, &["backup", "verify", bk.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("checksum"), "{}", text(&bad));
    let fresh = tmp.path().join("fresh");
    let r = kinko(&fresh, &["restore", bk.to_str().unwrap()]);
    assert!(!r.status.success(), "{}", text(&r));
    assert!(!fresh.join("journal").exists());
}
