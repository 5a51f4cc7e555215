//! The signer's own alert channel, independent of kinko's: every alert is first a file in a
//! durable outbox folder (written atomically and `fsync`ed before the request that raised it is
//! answered), then delivered at least once by one small thread to the configured webhook
//! (`http://` POST of the alert's JSON, e.g. to a relay on the signer's machine) and SMTP relay
//! (plain SMTP to each recipient), with retries.
//!
//! Folders (under `[alerts] outbox`, by default `alerts/` next to the log):
//! - `outbox/*.json` — raised, not yet delivered (with no channel configured they stay here:
//!   the signer warns at start that nobody is notified);
//! - `outbox/sent/` — delivered to every configured channel;
//! - `outbox/failed/` — given up after `attempts_max` failed rounds (by this process).
//!
//! Alert texts name users, withdrawals, codes and reasons; never a secret.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Alerts delivered per round (the rest wait for the next).
pub const DELIVER_PER_ROUND_MAX: usize = 100;
/// Connecting, reading or writing to a channel may take at most this long.
pub const CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest detail text kept in an alert.
pub const DETAIL_LEN_MAX: usize = 2_000;
/// Most recipients.
pub const RECIPIENTS_MAX: usize = 32;

/// What the alert channel is configured to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertsConfig {
    /// The outbox folder.
    pub outbox: PathBuf,
    /// `http://host:port/path`: each alert is POSTed there as JSON.
    pub webhook: Option<Webhook>,
    /// `host:port` of an SMTP relay; each alert is mailed to every recipient.
    pub smtp_relay: Option<String>,
    pub smtp_from: String,
    pub recipients: Vec<String>,
    /// Seconds between delivery rounds for alerts that failed.
    pub retry_s: u64,
    /// Rounds an alert is tried before it is moved to `failed/`.
    pub attempts_max: u32,
}

impl AlertsConfig {
    /// Only the outbox: nobody is notified.
    pub fn outbox_only(outbox: PathBuf) -> AlertsConfig {
        AlertsConfig {
            outbox,
            webhook: None,
            smtp_relay: None,
            smtp_from: "kinko-signer@localhost".into(),
            recipients: Vec::new(),
            retry_s: 30,
            attempts_max: 100,
        }
    }

    /// Whether any channel delivers alerts to someone.
    pub fn notifies(&self) -> bool {
        self.webhook.is_some() || (self.smtp_relay.is_some() && !self.recipients.is_empty())
    }
}

/// A plain-HTTP webhook target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Webhook {
    /// Parses `http://host[:port][/path]` (TLS is left to a relay on the signer's machine).
    pub fn parse(url: &str) -> Option<Webhook> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, 80),
        };
        let clean = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !clean(host) || !clean(path) {
            return None;
        }
        Some(Webhook {
            host: host.into(),
            port,
            path: path.into(),
        })
    }
}

/// One alert as written to the outbox.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub time_ns: u64,
    pub kind: String,
    pub detail: String,
    /// Which signer raised it (network and asset).
    pub signer: String,
    /// Addresses beyond the configured `recipients`: the admins enrolled at the signer when it
    /// was raised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
}

struct Wake {
    flag: Mutex<bool>,
    cv: Condvar,
}

/// The outbox and its delivery thread.
pub struct Alerts {
    config: AlertsConfig,
    signer: String,
    seq: AtomicU64,
    wake: Arc<Wake>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("outbox", &self.config.outbox)
            .finish_non_exhaustive()
    }
}

/// Keeps kind names to `[a-z0-9_]` (they are part of file names).
fn kind_name(kind: &str) -> String {
    let k: String = kind
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    if k.is_empty() {
        "alert".into()
    } else {
        k
    }
}

/// Writes `bytes` to `path` atomically: a temporary file, `fsync`, rename, `fsync` the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("alert");
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

impl Alerts {
    /// Creates the outbox folders and starts delivery if a channel is configured. `signer`
    /// names this signer in every alert.
    pub fn open(config: AlertsConfig, signer: &str) -> io::Result<Alerts> {
        for d in ["", "sent", "failed"] {
            std::fs::create_dir_all(config.outbox.join(d))?;
        }
        let wake = Arc::new(Wake {
            flag: Mutex::new(true),
            cv: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = if config.notifies() {
            let (c, w, s) = (config.clone(), wake.clone(), stop.clone());
            Some(
                std::thread::Builder::new()
                    .name("signer-alerts".into())
                    .spawn(move || deliver_loop(&c, &w, &s))?,
            )
        } else {
            None
        };
        Ok(Alerts {
            config,
            signer: signer.into(),
            seq: AtomicU64::new(0),
            wake,
            stop,
            thread,
        })
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.config
    }

    /// Raises an alert: durable in the outbox when this returns, delivered soon after.
    pub fn raise(&self, time_ns: u64, kind: &str, detail: &str) -> io::Result<PathBuf> {
        self.raise_to(time_ns, kind, detail, &[])
    }

    /// [`Alerts::raise`], also to `to` (the enrolled admins' addresses) by SMTP.
    pub fn raise_to(&self, time_ns: u64, kind: &str, detail: &str, to: &[String]) -> io::Result<PathBuf> {
        let kind = kind_name(kind);
        let detail: String = detail
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(DETAIL_LEN_MAX)
            .collect();
        let alert = Alert {
            time_ns,
            kind: kind.clone(),
            detail,
            signer: self.signer.clone(),
            to: to.iter().take(RECIPIENTS_MAX).cloned().collect(),
        };
        let bytes = serde_json::to_vec(&alert).map_err(io::Error::other)?;
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let name = format!("{time_ns:020}-{}-{seq:06}-{kind}.json", std::process::id());
        let path = self.config.outbox.join(name);
        write_atomic(&path, &bytes)?;
        let mut f = self.wake.flag.lock().unwrap_or_else(|p| p.into_inner());
        *f = true;
        self.wake.cv.notify_all();
        Ok(path)
    }
}

impl Drop for Alerts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        {
            let mut f = self.wake.flag.lock().unwrap_or_else(|p| p.into_inner());
            *f = true;
            self.wake.cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Alerts waiting in `outbox` (oldest first).
pub fn pending(outbox: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(outbox)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "json")
                        && p.file_name()
                            .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn deliver_loop(c: &AlertsConfig, wake: &Wake, stop: &AtomicBool) {
    let mut attempts: BTreeMap<PathBuf, u32> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        {
            let mut f = wake.flag.lock().unwrap_or_else(|p| p.into_inner());
            if !*f {
                f = wake
                    .cv
                    .wait_timeout(f, Duration::from_secs(c.retry_s.max(1)))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            *f = false;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        for path in pending(&c.outbox).into_iter().take(DELIVER_PER_ROUND_MAX) {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let Some(name) = path.file_name().map(|n| n.to_owned()) else {
                continue;
            };
            let delivered = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Alert>(&b).ok())
                .map(|a| deliver(c, &a));
            let to = match delivered {
                Some(Ok(())) => Some("sent"),
                // An unreadable file cannot be delivered: keep it as failed, for a human.
                None => Some("failed"),
                Some(Err(e)) => {
                    let n = attempts.entry(path.clone()).or_insert(0);
                    *n += 1;
                    eprintln!(
                        "kinko-signer: alert {} not delivered (try {n}): {e}",
                        path.display()
                    );
                    (*n >= c.attempts_max).then_some("failed")
                }
            };
            if let Some(to) = to {
                attempts.remove(&path);
                let _ = std::fs::rename(&path, c.outbox.join(to).join(name));
            }
        }
    }
}

fn deliver(c: &AlertsConfig, a: &Alert) -> io::Result<()> {
    if let Some(w) = &c.webhook {
        post(w, &serde_json::to_vec(a).map_err(io::Error::other)?)?;
    }
    if let Some(relay) = &c.smtp_relay {
        let mut to = c.recipients.clone();
        for t in &a.to {
            if !to.contains(t) {
                to.push(t.clone());
            }
        }
        if !to.is_empty() {
            mail(relay, &c.smtp_from, &to, a)?;
        }
    }
    Ok(())
}

fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CHANNEL_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(CHANNEL_TIMEOUT))?;
                s.set_write_timeout(Some(CHANNEL_TIMEOUT))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn post(w: &Webhook, body: &[u8]) -> io::Result<()> {
    let mut s = connect(&w.host, w.port)?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        w.path,
        w.host,
        w.port,
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut status = String::new();
    BufReader::new((&mut s).take(1024)).read_line(&mut status)?;
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code.len() == 3 && code.starts_with('2') {
        Ok(())
    } else {
        Err(io::Error::other(format!("webhook answered {:?}", status.trim())))
    }
}

/// Reads one SMTP reply (all its lines) and checks its code starts with `want`.
fn reply(r: &mut impl BufRead, want: char) -> io::Result<()> {
    for _ in 0..64 {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::other("the SMTP relay closed the connection"));
        }
        if line.len() < 4 || !line.starts_with(want) {
            return Err(io::Error::other(format!("SMTP relay answered {:?}", line.trim())));
        }
        if line.as_bytes()[3] == b' ' {
            return Ok(());
        }
    }
    Err(io::Error::other("SMTP reply too long"))
}

fn mail(relay: &str, from: &str, to: &[String], a: &Alert) -> io::Result<()> {
    let (host, port) = relay
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| io::Error::other("smtp_relay is not host:port"))?;
    let s = connect(host, port)?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    reply(&mut r, '2')?;
    let cmd = |w: &mut TcpStream, r: &mut BufReader<TcpStream>, line: &str, want: char| {
        w.write_all(line.as_bytes())?;
        w.write_all(b"\r\n")?;
        reply(r, want)
    };
    cmd(&mut w, &mut r, "EHLO kinko-signer", '2')?;
    cmd(&mut w, &mut r, &format!("MAIL FROM:<{from}>"), '2')?;
    for t in to {
        cmd(&mut w, &mut r, &format!("RCPT TO:<{t}>"), '2')?;
    }
    cmd(&mut w, &mut r, "DATA", '3')?;
    let mut body = format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: [kinko-signer] {} ({})\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n\r\nkind: {}\r\ntime_ns: {}\r\nsigner: {}\r\n",
        to.iter().map(|t| format!("<{t}>")).collect::<Vec<_>>().join(", "),
        a.kind,
        a.signer,
        a.detail,
        a.kind,
        a.time_ns,
        a.signer
    );
    // Dot-stuffing.
    body = body.replace("\r\n.", "\r\n..");
    w.write_all(body.as_bytes())?;
    cmd(&mut w, &mut r, ".", '2')?;
    let _ = cmd(&mut w, &mut r, "QUIT", '2');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        assert_eq!(
            Webhook::parse("http://127.0.0.1:9000/hook"),
            Some(Webhook {
                host: "127.0.0.1".into(),
                port: 9000,
                path: "/hook".into()
            })
        );
        assert_eq!(
            Webhook::parse("http://relay").map(|w| (w.port, w.path)),
            Some((80, "/".into()))
        );
        assert!(Webhook::parse("https://relay/x").is_none());
        assert!(Webhook::parse("http://:80/").is_none());
        assert!(Webhook::parse("http://a b/").is_none());
    }

    #[test]
    fn raised_alerts_are_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = Alerts::open(
            AlertsConfig::outbox_only(dir.path().join("out")),
            "litecoin-regtest LTC",
        )
        .unwrap();
        let p = a.raise(5, "registration refused!", "user 3\nno proof").unwrap();
        assert_eq!(pending(&dir.path().join("out")), vec![p.clone()]);
        let got: Alert = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(got.kind, "registration_refused_");
        assert_eq!(got.detail, "user 3 no proof");
    }
}
