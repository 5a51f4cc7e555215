//! `kinko admin`: operator actions against a running server, through its operator API
//! (`/api/v1/admin/...`, authenticated by the operator token). A small HTTP/1.1 client over a
//! plain TCP connection: the server listens on loopback, with TLS in a proxy in front of it.

use anyhow::{bail, Context};
use clap::Subcommand;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Platform-wide revocation after a breach: ends every session, removes every second factor
    /// (users log in again and re-enrol with a recovery code), revokes every withdraw-scoped API
    /// key, and locks withdrawals for the security-change period.
    RevokeEverything {
        /// Who decided (recorded in the journal).
        #[arg(long)]
        by: String,
        /// Why (recorded in the journal).
        #[arg(long)]
        reason: String,
    },
    /// Sets a user's status after review: active (unfreeze), frozen or disabled.
    SetStatus {
        user: u64,
        /// active, frozen or disabled
        status: String,
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
}

pub fn run(cmd: AdminCmd, config: &crate::config::Config) -> anyhow::Result<()> {
    let token = crate::serve::operator_token(config)?.context(
        "no operator token: set KINKO_OPERATOR_TOKEN (the same as the server's) or identity.operator_token_file",
    )?;
    let addr: SocketAddr = config
        .api
        .listen
        .parse()
        .with_context(|| format!("api.listen {:?}", config.api.listen))?;
    let (path, body) = match cmd {
        AdminCmd::RevokeEverything { by, reason } => (
            "/api/v1/admin/revoke-everything".to_owned(),
            serde_json::json!({"requested_by": by, "reason": reason}),
        ),
        AdminCmd::SetStatus {
            user,
            status,
            by,
            reason,
        } => (
            format!("/api/v1/admin/users/{user}/status"),
            serde_json::json!({"status": status, "requested_by": by, "reason": reason}),
        ),
    };
    let (status, text) = post(addr, &path, &token, &body.to_string())?;
    if !(200..300).contains(&status) {
        bail!("the server answered {status}: {text}");
    }
    println!("{}", if text.is_empty() { "done" } else { text.trim() });
    Ok(())
}

fn post(addr: SocketAddr, path: &str, token: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot reach kinko at {addr}; is `kinko serve` running?"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.take(1 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .context("the server's answer is not HTTP")?;
    Ok((status, rest.to_owned()))
}
