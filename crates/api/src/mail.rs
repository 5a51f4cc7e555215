//! Security messages to users: new-device logins, credential changes, withdrawals, freezes.
//!
//! A [`Message`] is rendered by [`render`] — the user's anti-phishing code first, so a user can
//! tell a real message from a forged one at a glance, and a "Not you?" freeze link — and handed
//! to a [`Mailer`]:
//!
//! - [`Outbox`], the development default, writes each message as an `.eml` file into a folder;
//! - [`Smtp`] speaks plain SMTP to a relay (a local MTA that does the onward delivery).
//!
//! Both refuse a message whose recipient or subject could smuggle extra headers in (CR, LF or
//! other control characters) with [`MailError::Invalid`], before anything is written or sent.
//!
//! Every message carries a `Date` (RFC 5322; the time of the event it reports when it has one)
//! and a `Message-ID`. The notifier derives both from the committed event, so a message sent
//! again after a crash is the same message to its receiver, who can drop the duplicate.

use kinko_core::identity::Language;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    NewDeviceLogin,
    PasswordChanged,
    SecondFactorChanged,
    WithdrawalAddressAdded,
    WithdrawalRequested,
    WithdrawalSent,
    ApiKeyCreated,
    AccountFrozen,
    PasswordReset,
    EmailChanged,
    AntiPhishingChanged,
    AccountRevoked,
    /// To security admins: an incident was opened (theft detected, a shortfall, a risk halt).
    SecurityIncident,
    /// To a customer: a restitution plan paid them what an incident cost them.
    Restitution,
}

impl MessageKind {
    pub const ALL: [MessageKind; 14] = [
        MessageKind::NewDeviceLogin,
        MessageKind::PasswordChanged,
        MessageKind::SecondFactorChanged,
        MessageKind::WithdrawalAddressAdded,
        MessageKind::WithdrawalRequested,
        MessageKind::WithdrawalSent,
        MessageKind::ApiKeyCreated,
        MessageKind::AccountFrozen,
        MessageKind::PasswordReset,
        MessageKind::EmailChanged,
        MessageKind::AntiPhishingChanged,
        MessageKind::AccountRevoked,
        MessageKind::SecurityIncident,
        MessageKind::Restitution,
    ];

    /// A stable name: used in file names and logs; never change one.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::NewDeviceLogin => "new_device_login",
            MessageKind::PasswordChanged => "password_changed",
            MessageKind::SecondFactorChanged => "second_factor_changed",
            MessageKind::WithdrawalAddressAdded => "withdrawal_address_added",
            MessageKind::WithdrawalRequested => "withdrawal_requested",
            MessageKind::WithdrawalSent => "withdrawal_sent",
            MessageKind::ApiKeyCreated => "api_key_created",
            MessageKind::AccountFrozen => "account_frozen",
            MessageKind::PasswordReset => "password_reset",
            MessageKind::EmailChanged => "email_changed",
            MessageKind::AntiPhishingChanged => "anti_phishing_changed",
            MessageKind::AccountRevoked => "account_revoked",
            MessageKind::SecurityIncident => "security_incident",
            MessageKind::Restitution => "restitution",
        }
    }
}

/// One message to one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The recipient's address.
    pub to: String,
    pub subject: String,
    /// Plain text; `render` adds the anti-phishing line and the freeze link.
    pub body: String,
    /// The code the user chose to recognise kinko's messages by.
    pub anti_phishing: Option<String>,
    pub kind: MessageKind,
    /// `<left@right>`; the mailer makes one up when absent.
    pub message_id: Option<String>,
    /// The `Date`, in nanoseconds since the epoch; the sending time when absent.
    pub date_ns: Option<u64>,
    /// The recipient's language: the subject and body are written in it, and `render` writes
    /// the anti-phishing line and the freeze link in it.
    pub lang: Language,
}

/// The lines `render` adds, in the message's language.
fn frame(lang: Language) -> (&'static str, &'static str) {
    match lang {
        Language::En => ("Your anti-phishing code: ", "Not you? Freeze your account: "),
        Language::Ja => (
            "お客様のフィッシング対策コード: ",
            "お心当たりがない場合は、アカウントを凍結してください: ",
        ),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The message cannot be sent as it is (bad address, control characters in a header, ...).
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("writing the message: {0}")]
    Io(#[from] std::io::Error),
    /// The relay could not be reached or refused for now: worth trying again.
    #[error("smtp: {0}")]
    Smtp(String),
    /// The relay refused the message for good (a permanent 5xx answer).
    #[error("smtp refused: {0}")]
    Refused(String),
}

impl MailError {
    /// Whether sending the same message again can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, MailError::Io(_) | MailError::Smtp(_))
    }
}

/// Renders the subject and the plain-text body.
///
/// With an anti-phishing code, the subject starts with `[CODE] ` and the body's first line is
/// `Your anti-phishing code: CODE`. With `freeze_url`, every kind but `AccountFrozen` ends with
/// `Not you? Freeze your account: URL`. Both lines in the message's language. Lines end in `\n`.
pub fn render(m: &Message, freeze_url: Option<&str>) -> (String, String) {
    let code = m.anti_phishing.as_deref().filter(|c| !c.is_empty());
    let subject = match code {
        Some(code) => format!("[{code}] {}", m.subject),
        None => m.subject.clone(),
    };
    let (code_line, freeze_line) = frame(m.lang);
    let mut body = String::with_capacity(m.body.len() + 128);
    if let Some(code) = code {
        body.push_str(code_line);
        body.push_str(code);
        body.push_str("\n\n");
    }
    body.push_str(m.body.trim_end_matches(['\r', '\n']));
    body.push('\n');
    if let Some(url) = freeze_url {
        if m.kind != MessageKind::AccountFrozen {
            body.push('\n');
            body.push_str(freeze_line);
            body.push_str(url);
            body.push('\n');
        }
    }
    (subject, body)
}

/// Refuses what could inject headers or is not an address at all. Deliberately minimal: the
/// relay is the judge of deliverability.
pub fn validate(m: &Message, freeze_url: Option<&str>) -> Result<(), MailError> {
    validate_address("recipient", &m.to)?;
    no_controls("subject", &m.subject)?;
    if let Some(code) = &m.anti_phishing {
        no_controls("anti-phishing code", code)?;
    }
    if let Some(url) = freeze_url {
        no_controls("freeze url", url)?;
    }
    if let Some(id) = &m.message_id {
        validate_message_id(id)?;
    }
    Ok(())
}

/// `<left@right>` with neither part empty and nothing that could end the header.
fn validate_message_id(id: &str) -> Result<(), MailError> {
    let bad = || MailError::Invalid("message id must look like <left@right>".into());
    let inner = id
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .ok_or_else(bad)?;
    let (l, r) = inner.split_once('@').ok_or_else(bad)?;
    if l.is_empty()
        || r.is_empty()
        || !inner
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | '\\' | '(' | ')' | ',' | ';'))
    {
        return Err(bad());
    }
    Ok(())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A Message-ID for a message that has none: random, at `kinko.localhost`.
fn fresh_message_id() -> String {
    let r = crate::vault::random_bytes::<16>();
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@kinko.localhost>")
}

fn validate_address(what: &str, a: &str) -> Result<(), MailError> {
    no_controls(what, a)?;
    let mut parts = a.split('@');
    let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
        (Some(l), Some(d), None) => (l, d),
        _ => return Err(MailError::Invalid(format!("{what} must contain exactly one '@'"))),
    };
    if local.is_empty() || domain.is_empty() {
        return Err(MailError::Invalid(format!(
            "{what} needs a local part and a domain"
        )));
    }
    if a.chars()
        .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';'))
    {
        return Err(MailError::Invalid(format!(
            "{what} contains a character not allowed in an address"
        )));
    }
    Ok(())
}

/// CR and LF would end the header line (injection); other control characters have no business
/// in a header either.
fn no_controls(what: &str, s: &str) -> Result<(), MailError> {
    if s.chars().any(char::is_control) {
        return Err(MailError::Invalid(format!(
            "{what} contains a line break or control character"
        )));
    }
    Ok(())
}

/// How kinko sends a message. Implementations validate before writing or sending anything.
pub trait Mailer: Send + Sync {
    fn send(&self, m: &Message, freeze_url: Option<&str>) -> Result<(), MailError>;
}

/// The sender address the outbox writes into its files.
pub const OUTBOX_FROM: &str = "kinko <security@kinko.localhost>";

/// Development mailer: one `.eml` file per message in `dir`, named
/// `<stamp>-<kind>.eml`, mode 0600, appearing atomically (written aside, then renamed).
#[derive(Debug)]
pub struct Outbox {
    pub dir: PathBuf,
    /// The next stamp `send` uses: starts at the current Unix time in nanoseconds and only
    /// increases, so file names sort in sending order and do not repeat.
    next: AtomicU64,
}

impl Outbox {
    pub fn new(dir: impl Into<PathBuf>) -> Outbox {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Outbox {
            dir: dir.into(),
            next: AtomicU64::new(now),
        }
    }

    /// Writes one message with the given stamp (e.g. Unix nanoseconds) and optional `Date`
    /// header value (else the message's own date, else now); returns the file's path. An
    /// existing file of the same name is replaced.
    pub fn write_at(
        &self,
        m: &Message,
        freeze_url: Option<&str>,
        stamp: u64,
        date: Option<&str>,
    ) -> Result<PathBuf, MailError> {
        validate(m, freeze_url)?;
        if let Some(d) = date {
            no_controls("date", d)?;
        }
        let (subject, body) = render(m, freeze_url);
        let date = date.map_or_else(
            || crate::wire::rfc5322(m.date_ns.unwrap_or_else(now_ns)),
            str::to_owned,
        );
        let id = m.message_id.clone().unwrap_or_else(fresh_message_id);
        let mut eml = String::with_capacity(body.len() + subject.len() + 256);
        eml.push_str(&format!("Date: {date}\r\n"));
        eml.push_str(&format!("Message-ID: {id}\r\n"));
        eml.push_str(&format!("From: {OUTBOX_FROM}\r\n"));
        eml.push_str(&format!("To: {}\r\n", m.to));
        eml.push_str(&format!("Subject: {subject}\r\n"));
        eml.push_str(&format!("X-Kinko-Kind: {}\r\n", m.kind.name()));
        eml.push_str("MIME-Version: 1.0\r\n");
        eml.push_str("Content-Type: text/plain; charset=utf-8\r\n");
        eml.push_str("Content-Transfer-Encoding: 8bit\r\n");
        eml.push_str(&format!("Content-Language: {}\r\n", m.lang.code()));
        eml.push_str("\r\n");
        for line in body.lines() {
            eml.push_str(line);
            eml.push_str("\r\n");
        }
        let name = format!("{stamp:020}-{}.eml", m.kind.name());
        write_atomic(&self.dir, &name, eml.as_bytes())?;
        Ok(self.dir.join(name))
    }
}

impl Mailer for Outbox {
    fn send(&self, m: &Message, freeze_url: Option<&str>) -> Result<(), MailError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        // max(previous + 1, now): strictly increasing even if the clock stalls or steps back.
        let prev = self
            .next
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_add(1).max(now))
            })
            .unwrap_or_else(|p| p);
        let stamp = prev.saturating_add(1).max(now);
        self.write_at(m, freeze_url, stamp, None).map(|_| ())
    }
}

/// Writes `dir/name` so that it appears whole or not at all, and stays after a crash: a
/// temporary file (mode 0600) written and fsynced, renamed, the directory fsynced.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        // A leftover from a crash could carry another mode: start from a fresh file.
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dir.join(name))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Plain SMTP to a relay, no TLS and no authentication: meant for a relay on the same host or
/// a trusted network, which does the onward delivery.
#[derive(Clone, Debug)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    /// The sender, e.g. `kinko <security@example.com>`.
    pub from: String,
    /// Bounds each network operation.
    pub timeout: Duration,
}

impl Mailer for Smtp {
    fn send(&self, m: &Message, freeze_url: Option<&str>) -> Result<(), MailError> {
        use lettre::message::header::ContentType;
        use lettre::Transport;

        validate(m, freeze_url)?;
        no_controls("sender", &self.from)?;
        let (subject, body) = render(m, freeze_url);
        let from: lettre::message::Mailbox = self
            .from
            .parse()
            .map_err(|e| MailError::Invalid(format!("sender: {e}")))?;
        let to: lettre::message::Mailbox =
            m.to.parse()
                .map_err(|e| MailError::Invalid(format!("recipient: {e}")))?;
        let date = UNIX_EPOCH + Duration::from_nanos(m.date_ns.unwrap_or_else(now_ns));
        let email = lettre::Message::builder()
            .from(from)
            .to(to)
            .date(date)
            .message_id(Some(m.message_id.clone().unwrap_or_else(fresh_message_id)))
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Invalid(e.to_string()))?;
        let transport = lettre::SmtpTransport::builder_dangerous(self.host.as_str())
            .port(self.port)
            .timeout(Some(self.timeout))
            .build();
        transport.send(&email).map(|_| ()).map_err(|e| {
            if e.is_permanent() {
                MailError::Refused(e.to_string())
            } else {
                MailError::Smtp(e.to_string())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::time::Instant;

    fn msg(kind: MessageKind) -> Message {
        Message {
            to: "alice@example.com".into(),
            subject: "New login to your account".into(),
            body: "Someone signed in from a new device.".into(),
            anti_phishing: Some("BLUEFOX7".into()),
            kind,
            message_id: Some("<42.0.abc@kinko.example>".into()),
            date_ns: Some(1_700_000_000_000_000_000),
            lang: Language::En,
        }
    }

    const FREEZE: &str = "https://kinko.example/freeze?t=abc123";

    #[test]
    fn mail_render_has_code_and_freeze_link() {
        let (subject, body) = render(&msg(MessageKind::NewDeviceLogin), Some(FREEZE));
        assert_eq!(subject, "[BLUEFOX7] New login to your account");
        assert_eq!(body.lines().next(), Some("Your anti-phishing code: BLUEFOX7"));
        assert!(body.contains("Someone signed in from a new device."));
        assert!(body.contains(&format!("Not you? Freeze your account: {FREEZE}")));
    }

    #[test]
    fn mail_render_in_japanese_has_code_and_freeze_link_in_japanese() {
        let m = Message {
            lang: Language::Ja,
            subject: "新しい端末からのログイン".into(),
            body: "新しい端末からログインがありました。".into(),
            ..msg(MessageKind::NewDeviceLogin)
        };
        let (subject, body) = render(&m, Some(FREEZE));
        assert_eq!(subject, "[BLUEFOX7] 新しい端末からのログイン");
        assert_eq!(
            body.lines().next(),
            Some("お客様のフィッシング対策コード: BLUEFOX7")
        );
        assert!(body.contains(&format!("アカウントを凍結してください: {FREEZE}")));
        assert!(
            !body.contains("anti-phishing") && !body.contains("Not you?"),
            "{body}"
        );
    }

    #[test]
    fn mail_render_without_code_or_url() {
        let mut m = msg(MessageKind::PasswordChanged);
        m.anti_phishing = None;
        let (subject, body) = render(&m, None);
        assert_eq!(subject, "New login to your account");
        assert!(!body.contains("anti-phishing"));
        assert!(!body.contains("Not you?"));
        assert_eq!(body, "Someone signed in from a new device.\n");
    }

    #[test]
    fn mail_freeze_link_on_every_kind_but_account_frozen() {
        for kind in MessageKind::ALL {
            let (_, body) = render(&msg(kind), Some(FREEZE));
            assert_eq!(
                body.contains("Not you? Freeze your account:"),
                kind != MessageKind::AccountFrozen,
                "{}",
                kind.name()
            );
        }
    }

    #[test]
    fn mail_kind_names_are_distinct() {
        let mut names: Vec<_> = MessageKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MessageKind::ALL.len());
        assert_eq!(MessageKind::WithdrawalSent.name(), "withdrawal_sent");
    }

    #[test]
    fn mail_header_injection_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path());
        let smtp = Smtp {
            // Nothing listens here; validation must refuse before any connection is tried.
            host: "127.0.0.1".into(),
            port: 9,
            from: "kinko <security@kinko.example>".into(),
            timeout: Duration::from_secs(1),
        };
        let bad = [
            Message {
                to: "alice@example.com\r\nBcc: eve@evil.example".into(),
                ..msg(MessageKind::PasswordChanged)
            },
            Message {
                to: "alice@example.com\nBcc: eve@evil.example".into(),
                ..msg(MessageKind::PasswordChanged)
            },
            Message {
                subject: "hi\r\nBcc: eve@evil.example".into(),
                ..msg(MessageKind::PasswordChanged)
            },
            Message {
                subject: "hi\rBcc: eve@evil.example".into(),
                ..msg(MessageKind::PasswordChanged)
            },
            Message {
                anti_phishing: Some("X\r\nBcc: eve@evil.example".into()),
                ..msg(MessageKind::PasswordChanged)
            },
            Message {
                to: "alice.example.com".into(),
                ..msg(MessageKind::PasswordChanged)
            },
            Message {
                to: "alice@eve@example.com".into(),
                ..msg(MessageKind::PasswordChanged)
            },
            Message {
                to: "@example.com".into(),
                ..msg(MessageKind::PasswordChanged)
            },
            Message {
                message_id: Some("<1@x>\r\nBcc: eve@evil.example".into()),
                ..msg(MessageKind::PasswordChanged)
            },
            Message {
                message_id: Some("no-brackets@x".into()),
                ..msg(MessageKind::PasswordChanged)
            },
        ];
        for m in &bad {
            assert!(
                matches!(outbox.send(m, Some(FREEZE)), Err(MailError::Invalid(_))),
                "{m:?}"
            );
            assert!(
                matches!(smtp.send(m, Some(FREEZE)), Err(MailError::Invalid(_))),
                "{m:?}"
            );
        }
        assert!(matches!(
            outbox.send(&msg(MessageKind::PasswordChanged), Some("https://x\r\nBcc: e@x")),
            Err(MailError::Invalid(_))
        ));
        // Nothing was written, not even the folder's temporary files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn mail_outbox_writes_readable_file() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("outbox/nested");
        let outbox = Outbox::new(&dir);
        let path = outbox
            .write_at(
                &msg(MessageKind::WithdrawalRequested),
                Some(FREEZE),
                1_700_000_000_000_000_000,
                Some("Tue, 14 Nov 2023 22:13:20 +0000"),
            )
            .unwrap();
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            "01700000000000000000-withdrawal_requested.eml"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let headers: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(headers[0], "Date: Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(headers[1], "Message-ID: <42.0.abc@kinko.example>");
        assert!(headers.contains(&"To: alice@example.com"));
        assert!(headers.contains(&"Subject: [BLUEFOX7] New login to your account"));
        assert!(headers.iter().any(|h| h.starts_with("From: ")));
        assert!(body.starts_with("Your anti-phishing code: BLUEFOX7\r\n"));
        assert!(body.contains(&format!("Not you? Freeze your account: {FREEZE}\r\n")));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // `send` picks increasing stamps: two sends, two files, no temporaries left.
        outbox.send(&msg(MessageKind::ApiKeyCreated), None).unwrap();
        outbox.send(&msg(MessageKind::ApiKeyCreated), None).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().all(|n| n.ends_with(".eml") && !n.starts_with('.')));
        assert_eq!(
            names
                .iter()
                .filter(|n| n.ends_with("-api_key_created.eml"))
                .count(),
            2
        );
    }

    /// What the sink saw of one SMTP session.
    #[derive(Debug, Default)]
    struct Received {
        commands: Vec<String>,
        data: String,
    }

    /// A minimal SMTP server for one session; gives up by itself after a few seconds.
    fn smtp_sink() -> (u16, std::thread::JoinHandle<std::io::Result<Received>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || -> std::io::Result<Received> {
            listener.set_nonblocking(true)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no client"));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e),
                }
            };
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.set_write_timeout(Some(Duration::from_secs(5)))?;
            let mut out = stream.try_clone()?;
            let mut reader = BufReader::new(stream);
            let mut got = Received::default();
            out.write_all(b"220 sink.test ESMTP ready\r\n")?;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    break;
                }
                let cmd = line.trim_end().to_owned();
                got.commands.push(cmd.clone());
                let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
                match verb.as_str() {
                    "EHLO" | "HELO" => out.write_all(b"250 sink.test\r\n")?,
                    "DATA" => {
                        out.write_all(b"354 end with <CRLF>.<CRLF>\r\n")?;
                        loop {
                            line.clear();
                            if reader.read_line(&mut line)? == 0 {
                                return Ok(got);
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            got.data.push_str(&line);
                        }
                        out.write_all(b"250 queued\r\n")?;
                    }
                    "QUIT" => {
                        out.write_all(b"221 bye\r\n")?;
                        break;
                    }
                    // MAIL FROM, RCPT TO, RSET, NOOP.
                    _ => out.write_all(b"250 ok\r\n")?,
                }
            }
            Ok(got)
        });
        (port, handle)
    }

    #[test]
    fn mail_smtp_delivers_to_a_real_socket() {
        let (port, sink) = smtp_sink();
        let smtp = Smtp {
            host: "127.0.0.1".into(),
            port,
            from: "kinko <security@kinko.example>".into(),
            timeout: Duration::from_secs(5),
        };
        smtp.send(&msg(MessageKind::NewDeviceLogin), Some(FREEZE))
            .unwrap();
        let got = sink.join().unwrap().unwrap();
        let has = |p: &str| got.commands.iter().any(|c| c.starts_with(p));
        assert!(has("EHLO") || has("HELO"), "{:?}", got.commands);
        assert!(
            got.commands
                .iter()
                .any(|c| c == "MAIL FROM:<security@kinko.example>"),
            "{:?}",
            got.commands
        );
        assert!(
            got.commands.iter().any(|c| c == "RCPT TO:<alice@example.com>"),
            "{:?}",
            got.commands
        );
        assert!(
            got.data
                .contains("Subject: [BLUEFOX7] New login to your account\r\n"),
            "{}",
            got.data
        );
        // The event's own id and time, so a resend is recognisably the same message.
        assert!(
            got.data.contains("Message-ID: <42.0.abc@kinko.example>\r\n"),
            "{}",
            got.data
        );
        assert!(
            got.data.contains("Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"),
            "{}",
            got.data
        );
        assert!(got.data.contains("To: alice@example.com\r\n"), "{}", got.data);
        assert!(
            got.data.contains("Your anti-phishing code: BLUEFOX7\r\n"),
            "{}",
            got.data
        );
        assert!(
            got.data
                .contains(&format!("Not you? Freeze your account: {FREEZE}\r\n")),
            "{}",
            got.data
        );
    }

    #[test]
    fn mail_smtp_unreachable_relay_is_an_error() {
        // Bind then drop: the port is (almost certainly) closed now.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let smtp = Smtp {
            host: "127.0.0.1".into(),
            port,
            from: "security@kinko.example".into(),
            timeout: Duration::from_secs(2),
        };
        assert!(matches!(
            smtp.send(&msg(MessageKind::AccountFrozen), None),
            Err(MailError::Smtp(_))
        ));
    }
}
