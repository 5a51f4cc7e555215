//! Security messages from committed events: new-device logins, credential and factor changes,
//! new withdrawal addresses, withdrawals requested and sent, API keys created, freezes.
//!
//! Each committed command's events are turned into [`Notice`]s (with the user's address and
//! anti-phishing code as they are right after that command) and sent at least once, also
//! across crashes, restarts and a slow or failing relay:
//!
//! - The read side's [`Notifier`] hands each batch's notices, with the range of sequence numbers
//!   the batch covers, to one mail thread through a bounded queue. A full queue drops the batch
//!   from memory only: it never holds up the replica, and nothing is lost, because ...
//! - ... the mail thread keeps a durable cursor, `<data_dir>/mail/cursor`: every notice of every
//!   command up to it has been delivered. It is written atomically (temporary file, fsync,
//!   rename, fsync of the folder) after each delivered batch with notices (and at most once a
//!   second otherwise). A batch that starts past the cursor + 1 (after a restart, or after the
//!   queue dropped batches) makes the thread derive the missing notices again from the journal
//!   ([`ReadSide::replay`]) before it goes on.
//! - A message the relay does not take is tried again, with growing pauses, until it is taken:
//!   the cursor does not move past it. Only a message that can never be sent (an invalid
//!   address, a permanent refusal) is logged and passed over.
//!
//! A message's `Message-ID` is derived from the command's sequence number and the notice's
//! place among that command's notices (with a key derived from the master key, so two
//! installations never share ids) and its `Date` is the command's timestamp: a message sent
//! again after a crash is the same message, which the receiver can drop as a duplicate.
//!
//! Every message carries a freeze link: a MAC'd token naming the user, valid for 30 days,
//! checked in constant time.

use crate::mail::{MailError, Mailer, Message, MessageKind};
use crate::vault::Vault;
use crate::AppState;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kinko_core::engine::Event;
use kinko_core::identity::{IdentityEvent, Language, User, UserStatus};
use kinko_core::keys::KeyEvent;
use kinko_core::wallet::{WalletEvent, WithdrawalStatus};
use kinko_core::UserId;
use kinko_engine::replica::{Observer, ReadModel, ReadSide};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Batches of notices queued for the mail thread; beyond it a batch is dropped from memory and
/// derived again from the journal.
pub const NOTICE_BATCHES_QUEUED_MAX: usize = 1_024;
/// Longest pause between two tries of a message the relay did not take.
pub const RETRY_PAUSE_MAX: Duration = Duration::from_secs(30);
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How often the cursor is written when only commands without notices passed.
const CURSOR_WRITE_INTERVAL: Duration = Duration::from_secs(1);
const FREEZE_LINK_TTL_S: u64 = 30 * 24 * 3600;

/// One message for one user.
#[derive(Clone, Debug)]
pub struct Notice {
    pub user: UserId,
    pub message: Message,
    /// The command it reports (0: a message sent now, whose content is in no event).
    pub seq: u64,
    /// Its place among that command's notices.
    pub index: u32,
}

/// What the mail thread receives.
#[derive(Debug)]
pub enum Item {
    /// The notices of the committed commands `from..=to` (possibly none).
    Committed {
        from: u64,
        to: u64,
        notices: Vec<Notice>,
    },
    /// A message whose content is in no event (a reset link): sent once, not after a crash.
    Now(Box<Notice>),
}

/// A freeze-link token for `user`, valid for 30 days from `now_s`.
pub fn freeze_token(vault: &Vault, user: UserId, now_s: u64) -> String {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&user.0.to_be_bytes());
    b[8..16].copy_from_slice(&(now_s + FREEZE_LINK_TTL_S).to_be_bytes());
    let mac = blake3::keyed_hash(&vault.subkey("freeze link"), &b[..16]);
    b[16..].copy_from_slice(&mac.as_bytes()[..16]);
    URL_SAFE_NO_PAD.encode(b)
}

/// The user a freeze token names, if it is genuine and unexpired.
pub fn freeze_token_user(vault: &Vault, token: &str, now_s: u64) -> Option<UserId> {
    if token.len() > 64 {
        return None;
    }
    let b = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    if b.len() != 32 {
        return None;
    }
    let mac = blake3::keyed_hash(&vault.subkey("freeze link"), &b[..16]);
    if !bool::from(mac.as_bytes()[..16].ct_eq(&b[16..])) {
        return None;
    }
    let user = u64::from_be_bytes(b[..8].try_into().ok()?);
    let exp = u64::from_be_bytes(b[8..16].try_into().ok()?);
    (now_s <= exp).then_some(UserId(user))
}

/// The Message-ID of the `index`th notice of command `seq`: the same every time it is sent.
pub fn message_id(vault: &Vault, seq: u64, index: u32, domain: &str) -> String {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&seq.to_be_bytes());
    b[8..].copy_from_slice(&index.to_be_bytes());
    let mac = blake3::keyed_hash(&vault.subkey("message id"), &b);
    let tag: String = mac.as_bytes()[..8].iter().map(|x| format!("{x:02x}")).collect();
    format!("<kinko.{seq}.{index}.{tag}@{domain}>")
}

/// The host of a URL (`https://ex.example:8443/x` → `ex.example`), or `kinko.localhost`.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
    {
        "kinko.localhost".into()
    } else {
        host.to_ascii_lowercase()
    }
}

/// The mail thread's durable position: every notice of every command up to it was delivered.
struct Cursor {
    /// `<data_dir>/mail` (none: memory only).
    dir: Option<PathBuf>,
    seq: u64,
    written: u64,
    written_at: Instant,
}

const CURSOR_FILE: &str = "cursor";

impl Cursor {
    /// The stored cursor, or (none stored yet: a new installation, or one from before cursors)
    /// `start`, written at once.
    fn open(dir: Option<PathBuf>, start: u64) -> Cursor {
        let stored = dir.as_ref().and_then(|d| {
            let path = d.join(CURSOR_FILE);
            match std::fs::read_to_string(&path) {
                Ok(t) => match t.trim().parse::<u64>() {
                    Ok(v) => Some(v),
                    Err(_) => {
                        tracing::error!(path = %path.display(), "mail cursor unreadable: messages from the current position on");
                        None
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "mail cursor unreadable: messages from the current position on");
                    None
                }
            }
        });
        let (seq, write) = match stored {
            Some(s) if s <= start => (s, false),
            Some(s) => {
                // Past the journal's end: another journal's cursor.
                tracing::error!(
                    cursor = s,
                    head = start,
                    "mail cursor past the journal's end; messages from the current position on"
                );
                (start, true)
            }
            None => (start, true),
        };
        let mut c = Cursor {
            dir,
            seq,
            // (Not yet on disk: retried until it is.)
            written: if write { u64::MAX } else { seq },
            written_at: Instant::now(),
        };
        if write {
            c.write();
        }
        c
    }

    fn write(&mut self) {
        if let Some(dir) = &self.dir {
            match crate::mail::write_atomic(dir, CURSOR_FILE, format!("{}\n", self.seq).as_bytes()) {
                Ok(()) => self.written = self.seq,
                Err(e) => {
                    tracing::error!(error = %e, "the mail cursor could not be written; messages since the last write will be sent again after a restart")
                }
            }
        }
        self.written_at = Instant::now();
    }

    /// Moves to `seq`; written now if `now`, else at most once per interval.
    fn advance(&mut self, seq: u64, now: bool) {
        self.seq = self.seq.max(seq);
        if self.seq != self.written && (now || self.written_at.elapsed() >= CURSOR_WRITE_INTERVAL) {
            self.write();
        }
    }
}

/// The mail thread's state.
struct MailThread {
    mailer: Arc<dyn Mailer>,
    vault: Vault,
    public_url: Arc<dyn Fn() -> String + Send + Sync>,
    read: ReadSide,
    cursor: Cursor,
}

impl MailThread {
    fn run(mut self, rx: crossbeam_channel::Receiver<Item>) {
        loop {
            match rx.recv_timeout(CURSOR_WRITE_INTERVAL) {
                Ok(Item::Now(n)) => self.deliver(&n),
                Ok(Item::Committed { from, to, notices }) => {
                    let next = self.cursor.seq + 1;
                    if to < next {
                        continue; // already delivered (derived again from the journal)
                    }
                    if from > next && !self.catch_up(from - 1) {
                        continue; // the journal could not be read: the next batch tries again
                    }
                    let any = !notices.is_empty();
                    for n in notices.iter().filter(|n| n.seq > self.cursor.seq) {
                        self.deliver(n);
                    }
                    self.cursor.advance(to, any);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    // Batches dropped from a full queue with nothing queued after them.
                    let applied = self.read.applied_seq();
                    if applied > self.cursor.seq && rx.is_empty() {
                        self.catch_up(applied);
                    }
                    self.cursor.advance(self.cursor.seq, true);
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    self.cursor.advance(self.cursor.seq, true);
                    return;
                }
            }
        }
    }

    /// Delivers the notices of the commands after the cursor up to `to`, derived again from
    /// the journal. False if the journal could not be read (nothing skipped).
    fn catch_up(&mut self, to: u64) -> bool {
        let from = self.cursor.seq + 1;
        tracing::info!(from, to, "security messages: deriving from the journal");
        let mut notices = Vec::new();
        let read = self.read.clone();
        let r = read.replay(from, to, |m, seq, ts, events| {
            notices.clear();
            notices_of(m, seq, ts, events, &mut notices);
            let any = !notices.is_empty();
            for n in &notices {
                self.deliver(n);
            }
            self.cursor.advance(seq, any);
        });
        match r {
            Ok(()) => true,
            Err(kinko_engine::replica::ReplayError::NoJournal) => {
                tracing::warn!(
                    from,
                    to,
                    "security messages: no journal to derive them from; skipped"
                );
                self.cursor.advance(to, true);
                true
            }
            Err(e) => {
                tracing::error!(from, to, error = %e, "security messages: the journal could not be read; trying again");
                std::thread::sleep(FIRST_RETRY_PAUSE);
                false
            }
        }
    }

    /// Sends one message, trying again until the relay takes it (or it can never be sent).
    fn deliver(&self, n: &Notice) {
        let mut pause = FIRST_RETRY_PAUSE;
        let mut m = n.message.clone();
        if n.seq > 0 {
            m.message_id = Some(message_id(
                &self.vault,
                n.seq,
                n.index,
                &url_host(&(self.public_url)()),
            ));
        }
        loop {
            let now_s = crate::auth::now_ns() / 1_000_000_000;
            let url = format!(
                "{}/freeze?t={}",
                (self.public_url)(),
                freeze_token(&self.vault, n.user, now_s)
            );
            match self.mailer.send(&m, Some(&url)) {
                Ok(()) => {
                    tracing::info!(
                        kind = m.kind.name(),
                        user = n.user.0,
                        seq = n.seq,
                        "security message sent"
                    );
                    return;
                }
                Err(e @ (MailError::Invalid(_) | MailError::Refused(_))) => {
                    tracing::error!(kind = m.kind.name(), user = n.user.0, seq = n.seq, error = %e, "a security message can never be sent; passed over");
                    return;
                }
                Err(e) => {
                    debug_assert!(e.is_transient());
                    tracing::warn!(kind = m.kind.name(), user = n.user.0, seq = n.seq, error = %e, retry_ms = pause.as_millis() as u64, "a security message could not be sent; trying again");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                }
            }
        }
    }
}

/// Starts the mail thread from the durable cursor in `<data_dir>/mail` (the read side's data
/// directory; memory only without one); returns the queue's sender.
pub fn start(
    mailer: Arc<dyn Mailer>,
    vault: Vault,
    public_url: Arc<dyn Fn() -> String + Send + Sync>,
    read: ReadSide,
) -> crossbeam_channel::Sender<Item> {
    let (tx, rx) = crossbeam_channel::bounded::<Item>(NOTICE_BATCHES_QUEUED_MAX);
    let dir = read.data_dir().map(|d| d.join("mail"));
    let cursor = Cursor::open(dir, read.applied_seq());
    let t = MailThread {
        mailer,
        vault,
        public_url,
        read,
        cursor,
    };
    std::thread::Builder::new()
        .name("kinko-mail".into())
        .spawn(move || t.run(rx))
        .expect("cannot start the mail thread");
    tx
}

/// The replica's observer: collects each command's messages under the replica's lock, queues
/// them for the mail thread once the batch is applied.
pub struct Notifier {
    tx: crossbeam_channel::Sender<Item>,
    from: u64,
    to: u64,
    pending: Vec<Notice>,
    /// Batches left to the journal because the queue was full.
    dropped: u64,
}

impl Notifier {
    pub fn new(tx: crossbeam_channel::Sender<Item>) -> Notifier {
        Notifier {
            tx,
            from: 0,
            to: 0,
            pending: Vec::new(),
            dropped: 0,
        }
    }
}

impl Observer for Notifier {
    fn on_command(&mut self, model: &ReadModel, events: &[Event]) {
        let seq = model.engine.last_seq();
        if self.from == 0 {
            self.from = seq;
        }
        self.to = seq;
        notices_of(
            model,
            seq,
            model.engine.last_timestamp_ns(),
            events,
            &mut self.pending,
        );
    }
    fn on_batch(&mut self) {
        if self.from == 0 {
            return;
        }
        let item = Item::Committed {
            from: self.from,
            to: self.to,
            notices: std::mem::take(&mut self.pending),
        };
        self.from = 0;
        if self.tx.try_send(item).is_err() {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = self.dropped,
                    "mail queue full: security messages will be derived from the journal"
                );
            }
        }
    }
}

/// The notices of one command, numbered in order.
fn notices_of(m: &ReadModel, seq: u64, timestamp_ns: u64, events: &[Event], out: &mut Vec<Notice>) {
    let first = out.len();
    collect(m, events, out);
    for (i, n) in out[first..].iter_mut().enumerate() {
        n.seq = seq;
        n.index = u32::try_from(i).unwrap_or(u32::MAX);
        n.message.date_ns = Some(timestamp_ns);
    }
}

/// A message's subject and body in English and in Japanese: the user's language picks one.
pub struct Texts<'a> {
    pub en: (&'a str, String),
    pub ja: (&'a str, String),
}

fn notice(u: &User, kind: MessageKind, texts: Texts<'_>) -> Notice {
    let (subject, body) = match u.language {
        Language::En => texts.en,
        Language::Ja => texts.ja,
    };
    Notice {
        user: u.id,
        message: Message {
            to: u.email.clone(),
            subject: subject.to_owned(),
            body,
            anti_phishing: u.anti_phishing.clone(),
            kind,
            message_id: None,
            date_ns: None,
            lang: u.language,
        },
        seq: 0,
        index: 0,
    }
}

/// Queues a message now (for messages whose content is not in any event, like a reset link).
/// A full queue pushes back: the caller answers "unavailable" rather than dropping it.
pub fn send_now(
    g: &AppState,
    u: &User,
    kind: MessageKind,
    texts: Texts<'_>,
) -> Result<(), crate::error::ApiError> {
    if let Some(tx) = g.notices() {
        if tx.try_send(Item::Now(Box::new(notice(u, kind, texts)))).is_err() {
            tracing::warn!(
                kind = kind.name(),
                "mail queue full: a message could not be queued"
            );
            return Err(crate::error::ApiError::unavailable(
                "MAIL_BUSY",
                "messages cannot be sent right now; retry shortly",
            ));
        }
    }
    Ok(())
}

/// The messages one command's events call for, read against the replica right after it.
pub fn collect(m: &ReadModel, events: &[Event], out: &mut Vec<Notice>) {
    for e in events {
        match e {
            Event::Admin(kinko_core::admin::AdminEvent::IncidentOpened(i)) => incident_notices(m, i, out),
            Event::Admin(kinko_core::admin::AdminEvent::RestitutionPaid {
                incident,
                user,
                asset,
                amount,
                ..
            }) => {
                if let Some(u) = m.engine.identity().user(*user) {
                    let amount = amount_text(m, *asset, amount.0);
                    out.push(notice(
                        u,
                        MessageKind::Restitution,
                        Texts {
                            en: (
                                "kinko has credited your account after an incident",
                                format!(
                                    "Your account was credited {amount} to make good what incident {incident} cost you. \
                                     The credit is in your balance now and listed in your account under restitutions."
                                ),
                            ),
                            ja: (
                                "インシデントによる損失を kinko が補填しました",
                                format!(
                                    "インシデント {incident} による損失を補填するため、お客様の口座に {amount} を入金しました。\
                                     入金は残高に反映済みで、アカウントの補填一覧に表示されます。"
                                ),
                            ),
                        },
                    ));
                }
            }
            Event::Identity(IdentityEvent::EverythingRevoked { .. }) => revoked_notices(m, out),
            Event::Identity(
                e @ (IdentityEvent::SessionOpened { .. } | IdentityEvent::StatusChanged { .. }),
            ) => out.extend(account_notice(m, e)),
            Event::Identity(
                e @ (IdentityEvent::PasswordChanged { .. }
                | IdentityEvent::EmailChanged { .. }
                | IdentityEvent::AntiPhishingSet { .. }),
            ) => out.extend(credential_notice(m, e)),
            Event::Identity(
                e @ (IdentityEvent::FactorEnrolled { .. }
                | IdentityEvent::FactorRemoved { .. }
                | IdentityEvent::RecoveryCodesIssued { .. }),
            ) => out.extend(factor_notice(m, e)),
            Event::Wallet(e) => out.extend(wallet_notice(m, e)),
            Event::Key(KeyEvent::Created(k)) => out.extend(key_created_notice(m, k)),
            _ => {}
        }
    }
}

/// An amount as the user reads it: decimal and asset code (minor units if the asset is unknown).
fn amount_text(m: &ReadModel, asset: kinko_core::AssetId, a: u128) -> String {
    m.engine.asset(asset).map_or_else(
        || a.to_string(),
        |x| {
            format!(
                "{} {}",
                kinko_core::Amount(a).to_decimal(x.decimals),
                x.code.as_str()
            )
        },
    )
}

/// An incident goes to every security admin at once.
fn incident_notices(m: &ReadModel, i: &kinko_core::admin::Incident, out: &mut Vec<Notice>) {
    let what = match i.asset {
        Some(a) => amount_text(m, a, i.missing.0),
        None => i.missing.0.to_string(),
    };
    for u in m
        .engine
        .identity()
        .users()
        .iter()
        .filter(|u| u.roles.contains(&kinko_core::identity::AdminRole::SecurityAdmin))
    {
        let txids = if i.txids.is_empty() {
            None
        } else {
            Some(i.txids.join(", "))
        };
        let (en_subject, ja_subject) = (
            format!("CRITICAL: kinko incident {} ({})", i.id, i.kind),
            format!("【重大】kinko インシデント {}（{}）", i.id, i.kind),
        );
        out.push(notice(
            u,
            MessageKind::SecurityIncident,
            Texts {
                en: (&en_subject, format!(
                    "Incident {} was opened by {}: {}\nMissing: {what}. Transactions: {}.\nOpen the operators' console to review it.",
                    i.id, i.opened_by, i.summary, txids.as_deref().unwrap_or("none")
                )),
                ja: (&ja_subject, format!(
                    "インシデント {} が {} により起票されました: {}\n不足額: {what}。トランザクション: {}。\n運用コンソールで確認してください。",
                    i.id, i.opened_by, i.summary, txids.as_deref().unwrap_or("なし")
                )),
            },
        ));
    }
}

/// After platform-wide revocation: every user who must re-enrol.
fn revoked_notices(m: &ReadModel, out: &mut Vec<Notice>) {
    for u in m.engine.identity().users().iter().filter(|u| u.reenrol_required) {
        out.push(notice(
            u,
            MessageKind::AccountRevoked,
            Texts {
                en: (
                    "Sign in again to kinko",
                    "As a precaution every session and every second factor on kinko was revoked. Sign in \
                     again and re-enrol your second factor with one of your recovery codes."
                        .into(),
                ),
                ja: (
                    "kinko に再度ログインしてください",
                    "予防措置として、kinko のすべてのセッションと二要素認証が取り消されました。\
                     再度ログインし、リカバリーコードのいずれかで二要素認証を登録し直してください。"
                        .into(),
                ),
            },
        ));
    }
}

/// Sign-ins from a new device and freezes.
fn account_notice(m: &ReadModel, e: &IdentityEvent) -> Option<Notice> {
    let user = |u: UserId| m.engine.identity().user(u);
    match e {
        IdentityEvent::SessionOpened {
            user: u,
            device,
            ip,
            new_device: true,
            ..
        } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::NewDeviceLogin,
                Texts {
                    en: ("New sign-in to your kinko account", format!("Your account was signed in from a new device: \"{device}\" at {ip}.")),
                    ja: ("kinko アカウントへの新しいログイン", format!("新しい端末からアカウントにログインがありました: 「{device}」（{ip}）。")),
                },
            )
        }),
        IdentityEvent::StatusChanged {
            user: u,
            status: UserStatus::Frozen,
            ..
        } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::AccountFrozen,
                Texts {
                    en: ("Your kinko account is frozen", "Your account is frozen: withdrawals are halted and every session was ended until \
                         our team has reviewed it."
                        .into()),
                    ja: ("kinko アカウントが凍結されました", "アカウントは凍結されました。担当者が確認するまで出金は停止され、すべてのセッションは終了しています。".into()),
                },
            )
        }),
        _ => None,
    }
}

/// Password, email address and anti-phishing code changes.
fn credential_notice(m: &ReadModel, e: &IdentityEvent) -> Option<Notice> {
    let user = |u: UserId| m.engine.identity().user(u);
    match e {
        IdentityEvent::PasswordChanged { user: u, by_reset } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::PasswordChanged,
                Texts {
                    en: ("Your kinko password was changed", format!(
                        "The password of your account was {}. Your other sessions were ended and \
                         withdrawals are locked for a while.",
                        if *by_reset { "reset with an emailed link" } else { "changed" }
                    )),
                    ja: ("kinko のパスワードが変更されました", format!(
                        "アカウントのパスワードが{}。他のセッションは終了し、しばらくの間出金はロックされます。",
                        if *by_reset { "メールのリンクで再設定されました" } else { "変更されました" }
                    )),
                },
            )
        }),
        IdentityEvent::EmailChanged { user: u, old } => user(*u).map(|u| {
            // To the old address: that is where the real owner still reads.
            let mut n = notice(
                u,
                MessageKind::EmailChanged,
                Texts {
                    en: ("The email address of your kinko account was changed", format!(
                        "The email address of your account was changed from {old} to {}.",
                        u.email
                    )),
                    ja: ("kinko アカウントのメールアドレスが変更されました", format!(
                        "アカウントのメールアドレスが {old} から {} に変更されました。",
                        u.email
                    )),
                },
            );
            n.message.to = old.clone();
            n
        }),
        IdentityEvent::AntiPhishingSet { user: u } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::AntiPhishingChanged,
                Texts {
                    en: ("Your kinko anti-phishing code was set", "Your anti-phishing code was set; from now on every message from kinko shows it.".into()),
                    ja: ("kinko のフィッシング対策コードが設定されました", "フィッシング対策コードが設定されました。今後 kinko からのすべてのメッセージにこのコードが表示されます。".into()),
                },
            )
        }),
        _ => None,
    }
}

/// Second factors added or removed, new recovery codes.
fn factor_notice(m: &ReadModel, e: &IdentityEvent) -> Option<Notice> {
    let user = |u: UserId| m.engine.identity().user(u);
    match e {
        IdentityEvent::FactorEnrolled { user: u, factor } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::SecondFactorChanged,
                Texts {
                    en: ("A second factor was added to your kinko account", format!("A new second factor ({factor}) was added to your account.")),
                    ja: ("kinko アカウントに二要素認証が追加されました", format!("アカウントに新しい二要素認証（{factor}）が追加されました。")),
                },
            )
        }),
        IdentityEvent::FactorRemoved { user: u, factor } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::SecondFactorChanged,
                Texts {
                    en: ("A second factor was removed from your kinko account", format!("A second factor ({factor}) was removed from your account; withdrawals are locked for a while.")),
                    ja: ("kinko アカウントから二要素認証が削除されました", format!("アカウントから二要素認証（{factor}）が削除されました。しばらくの間出金はロックされます。")),
                },
            )
        }),
        IdentityEvent::RecoveryCodesIssued { user: u } => user(*u).map(|u| {
            notice(
                u,
                MessageKind::SecondFactorChanged,
                Texts {
                    en: ("New recovery codes for your kinko account", "New recovery codes were made for your account; the old ones no longer work.".into()),
                    ja: ("kinko アカウントの新しいリカバリーコード", "アカウントの新しいリカバリーコードが発行されました。以前のコードは使えません。".into()),
                },
            )
        }),
        _ => None,
    }
}

/// Withdrawal addresses added, withdrawals requested and sent.
fn wallet_notice(m: &ReadModel, e: &WalletEvent) -> Option<Notice> {
    let user = |u: UserId| m.engine.identity().user(u);
    match e {
        WalletEvent::WithdrawalAddressAdded(a) => user(a.user).map(|u| {
            let usable = crate::wire::rfc3339(a.usable_at_ns);
            notice(
                u,
                MessageKind::WithdrawalAddressAdded,
                Texts {
                    en: ("A withdrawal address was added to your kinko account", format!(
                        "The address {} (\"{}\") was whitelisted for withdrawals. It can be used from {usable}.",
                        a.address, a.label
                    )),
                    ja: ("kinko アカウントに出金先アドレスが追加されました", format!(
                        "アドレス {}（「{}」）が出金先に登録されました。{usable} から使えます。",
                        a.address, a.label
                    )),
                },
            )
        }),
        // A new request (whatever the risk check decided, before any review).
        WalletEvent::Withdrawal(w)
            if w.approvals.is_empty()
                && matches!(
                    w.status,
                    WithdrawalStatus::Requested | WithdrawalStatus::Waiting | WithdrawalStatus::Review
                ) =>
        {
            user(w.user).map(|u| {
                let amount = amount_text(m, w.asset, w.amount.0);
                notice(
                    u,
                    MessageKind::WithdrawalRequested,
                    Texts {
                        en: ("Withdrawal requested from your kinko account", format!(
                            "A withdrawal of {amount} to {} was requested (id {}).",
                            w.address, w.id.0
                        )),
                        ja: ("kinko アカウントから出金が申請されました", format!(
                            "{} への {amount} の出金が申請されました（ID {}）。",
                            w.address, w.id.0
                        )),
                    },
                )
            })
        }
        WalletEvent::Withdrawal(w) if w.status == WithdrawalStatus::Broadcast => user(w.user).map(|u| {
            let amount = amount_text(m, w.asset, w.amount.0);
            let txid = w.txid.as_deref().unwrap_or("?");
            notice(
                u,
                MessageKind::WithdrawalSent,
                Texts {
                    en: ("Withdrawal sent from your kinko account", format!(
                        "The withdrawal of {amount} to {} was sent (transaction {txid}).",
                        w.address
                    )),
                    ja: ("kinko アカウントからの出金を送金しました", format!(
                        "{} への {amount} の出金を送金しました（トランザクション {txid}）。",
                        w.address
                    )),
                },
            )
        }),
        _ => None,
    }
}

fn key_created_notice(m: &ReadModel, k: &kinko_core::keys::ApiKey) -> Option<Notice> {
    let u = m.engine.identity().user(k.user)?;
    let scopes: Vec<&str> = [
        (k.permissions.view, "view"),
        (k.permissions.trade, "trade"),
        (k.permissions.withdraw, "withdraw"),
    ]
    .into_iter()
    .filter_map(|(on, n)| on.then_some(n))
    .collect();
    let scopes = scopes.join(", ");
    Some(notice(
        u,
        MessageKind::ApiKeyCreated,
        Texts {
            en: (
                "An API key was created for your kinko account",
                format!(
                    "An API key \"{}\" ({}) with scopes {scopes} was created.",
                    k.label, k.id
                ),
            ),
            ja: (
                "kinko アカウントの API キーが作成されました",
                format!(
                    "API キー「{}」（{}、権限 {scopes}）が作成されました。",
                    k.label, k.id
                ),
            ),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_tokens_name_their_user_and_resist_forgery() {
        let v = Vault::from_key([3; 32]);
        let t = freeze_token(&v, UserId(42), 1_000);
        assert_eq!(freeze_token_user(&v, &t, 1_000), Some(UserId(42)));
        assert_eq!(
            freeze_token_user(&v, &t, 1_000 + FREEZE_LINK_TTL_S),
            Some(UserId(42))
        );
        assert_eq!(
            freeze_token_user(&v, &t, 1_001 + FREEZE_LINK_TTL_S),
            None,
            "expired"
        );
        // Another master key, a changed user, garbage: refused.
        assert_eq!(freeze_token_user(&Vault::from_key([4; 32]), &t, 1_000), None);
        let mut b = URL_SAFE_NO_PAD.decode(&t).unwrap();
        b[7] ^= 1;
        assert_eq!(freeze_token_user(&v, &URL_SAFE_NO_PAD.encode(&b), 1_000), None);
        for bad in ["", "x", "%%%", &"A".repeat(100)] {
            assert_eq!(freeze_token_user(&v, bad, 1_000), None);
        }
    }
}
