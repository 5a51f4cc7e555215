//! Security messages survive a crash: a `kinko serve` SIGKILLed while its relay has a message
//! but has not yet acknowledged it sends that message again after the restart, with the same
//! `Message-ID` and `Date` (so the receiver can drop the duplicate), then the rest, and nothing
//! acknowledged is sent twice. The relay is a real SMTP server on loopback.

use super::{http, serving_addr, spawn, terminate};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An SMTP relay on loopback. Each message's DATA is recorded; with `hold`, the final answer
/// to DATA is never sent (the sender cannot know the message arrived).
struct Sink {
    port: u16,
    got: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    fn start(hold: bool) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, st) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !st.load(Ordering::Acquire) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (g, st) = (g.clone(), st.clone());
                        std::thread::spawn(move || {
                            let _ = session(s, hold, &g, &st);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Sink { port, got, stop }
    }

    fn messages(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (bounded) until `done` holds for the messages received so far.
    fn wait(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = self.messages();
            if done(&m) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {m:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn session(
    stream: std::net::TcpStream,
    hold: bool,
    got: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    out.write_all(b"220 sink ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => out.write_all(b"250 sink\r\n")?,
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            "DATA" => {
                out.write_all(b"354 go ahead\r\n")?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(&line);
                }
                got.lock().unwrap().push(data);
                if hold {
                    // Never acknowledge: the sender is killed while it waits.
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return Ok(());
                }
                out.write_all(b"250 queued\r\n")?;
            }
            _ => out.write_all(b"250 ok\r\n")?,
        }
    }
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    let head = msg.split("\r\n\r\n").next().unwrap();
    head.split("\r\n")
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} header in {msg}"))
}

fn config(path: &Path, port: u16) {
    std::fs::write(
        path,
        format!(
            "[mail]\nmode = \"smtp\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsmtp_timeout_s = 120\n"
        ),
    )
    .unwrap();
}

fn login(addr: &str, device: &str) {
    let (st, body) = http(
        addr,
        "POST",
        "/api/v1/auth/login",
        "",
        &format!(r#"{{"email":"carol@example.com","password":"correct horse battery","device":"{device}"}}"#),
    );
    assert_eq!(st, 200, "{body}");
}

/// The sequence number a Message-ID names (`<kinko.SEQ.INDEX.TAG@host>`).
fn id_seq(id: &str) -> u64 {
    id.trim_start_matches("<kinko.")
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_security_message_is_sent_again_after_a_crash_with_the_same_message_id() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("kinko.toml");
    let cfg_s = cfg.to_str().unwrap();

    // 1. The relay takes the first message but never acknowledges it.
    let held = Sink::start(true);
    config(&cfg, held.port);
    let mut child = spawn(&data, &["--config", cfg_s, "serve"]);
    let addr = serving_addr(&mut child);
    let (st, body) = http(
        &addr,
        "POST",
        "/api/v1/auth/register",
        "",
        r#"{"email":"carol@example.com","password":"correct horse battery"}"#,
    );
    assert_eq!(st, 201, "{body}");
    login(&addr, "laptop");
    login(&addr, "phone"); // committed; its message waits behind the unacknowledged one
    let first = held.wait("the first message", |m| !m.is_empty()).remove(0);
    let (id, date) = (
        header(&first, "Message-ID").to_owned(),
        header(&first, "Date").to_owned(),
    );
    assert!(id.starts_with("<kinko.") && id.ends_with("@localhost>"), "{id}");
    assert!(date.ends_with("+0000"), "{date}");

    // 2. Crash while the relay holds it.
    child.kill().unwrap();
    child.wait().unwrap();
    drop(held);

    // 3. After the restart the same message arrives again, then the phone login's.
    let relay = Sink::start(false);
    config(&cfg, relay.port);
    let mut child = spawn(&data, &["--config", cfg_s, "serve"]);
    serving_addr(&mut child);
    let got = relay.wait("the messages after the restart", |m| {
        m.iter().any(|x| x.contains("\"phone\""))
    });
    assert_eq!(header(&got[0], "Message-ID"), id, "{got:#?}");
    assert_eq!(header(&got[0], "Date"), date);
    assert_eq!(header(&got[0], "Subject"), header(&first, "Subject"));
    let ids: Vec<String> = got.iter().map(|m| header(m, "Message-ID").to_owned()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "nothing twice after the restart: {ids:?}"
    );
    let phone = got.iter().find(|m| m.contains("\"phone\"")).unwrap();
    assert!(header(phone, "Subject").contains("New sign-in"), "{phone}");

    // 4. What the relay acknowledged is not sent again: once the durable cursor covers it, a
    // restart and a new sign-in bring only the new message.
    let last = ids.iter().map(|i| id_seq(i)).max().unwrap();
    let cursor = data.join("mail").join("cursor");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&cursor)
        .ok()
        .and_then(|c| c.trim().parse::<u64>().ok())
        .is_none_or(|c| c < last)
    {
        assert!(Instant::now() < deadline, "the mail cursor never reached {last}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(terminate(&mut child).success());
    let mut child = spawn(&data, &["--config", cfg_s, "serve"]);
    let addr = serving_addr(&mut child);
    login(&addr, "tablet");
    let after = relay.wait("the tablet sign-in", |m| {
        m.iter().any(|x| x.contains("\"tablet\""))
    });
    assert_eq!(
        &after[..ids.len()],
        &got[..],
        "messages received before the restart"
    );
    let new: Vec<&str> = after[ids.len()..]
        .iter()
        .map(|m| header(m, "Message-ID"))
        .collect();
    assert!(
        new.iter().all(|i| !ids.iter().any(|o| o == i)),
        "sent again: {new:?}"
    );
    assert!(terminate(&mut child).success());
}
