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
    /// Freezes or disables a user (one person may: it protects). Loosening (active again, or
    /// frozen after disabled) is refused with TWO_ADMINS_REQUIRED: one admin proposes it in the
    /// console, a second approves it, each with their own second factor.
    SetStatus {
        /// The user's id.
        user: u64,
        /// frozen or disabled
        status: String,
        /// Who decided (recorded in the journal and the audit log).
        #[arg(long)]
        by: String,
        /// Why (recorded in the journal and the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Bootstrap of a new installation: gives USER (an id or an email address) an admin ROLE
    /// (viewer, support, risk, treasury or security_admin). Refused with ROLES_BOOTSTRAP_CLOSED
    /// once two security admins exist; from then on roles change only by a proposal in the
    /// console that a second admin approves.
    GrantRole {
        /// The user: an id or an email address.
        user: String,
        /// viewer, support, risk, treasury or security_admin
        role: String,
        /// Who decided (recorded in the journal and the audit log).
        #[arg(long)]
        by: String,
        /// Why (recorded in the journal and the audit log).
        #[arg(long)]
        reason: String,
    },
}

/// Hot and cold custody of a real chain (`[[custody]]`), through the operator API.
#[derive(Subcommand, Debug)]
pub enum CustodyCmd {
    /// The node's hot and cold balances next to the ledger's custody accounts, company funds
    /// (fee revenue, treasury) and the withdrawal fee.
    Status {
        /// The asset's code, e.g. LTC.
        asset: String,
    },
    /// The company's own deposit address of ASSET: coins sent there are credited to the
    /// company treasury once confirmed, and pay miner fees that withdrawal fees do not cover.
    CompanyAddress {
        /// The asset's code, e.g. LTC.
        asset: String,
    },
    /// Writes an unsigned PSBT moving AMOUNT from cold to hot, for the cold keyholders to sign
    /// offline (`kinko-signer offline-sign FILE`), each on their own machine.
    Refill {
        /// The asset's code, e.g. LTC.
        asset: String,
        /// Decimal, in whole units of the asset.
        amount: String,
        /// Where to write the PSBT (base64).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Broadcasts a refill PSBT signed by enough keyholders and records the move.
    Submit {
        /// The asset's code, e.g. LTC.
        asset: String,
        /// The PSBT (base64) signed by enough keyholders.
        file: std::path::PathBuf,
    },
}

/// The simulated chain of a demo (`kinko serve --demo`, or `[sim] enabled = true`).
#[derive(Subcommand, Debug)]
pub enum SimCmd {
    /// "Sends" AMOUNT to a deposit address: seen at once, credited a second later. Needs the
    /// address owner's API key or session token (`--token`, or KINKO_TOKEN), or else the
    /// operator token (KINKO_OPERATOR_TOKEN or `identity.operator_token_file`).
    Deposit {
        /// A deposit address of the simulated chain (`POST /api/v1/deposit-addresses`).
        address: String,
        /// Decimal, in whole units of the address's asset.
        amount: String,
        /// The address owner's API key (`<key id>.<secret>`) or session token.
        #[arg(long, env = "KINKO_TOKEN", value_name = "TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// The server's address from `--server` / `api.listen`: `HOST:PORT`, or a URL such as
/// `http://127.0.0.1:8080/` (as `demo-credentials.json` writes it).
fn server_addr(config: &crate::config::Config) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let given = config.api.listen.trim();
    let hostport = given
        .strip_prefix("http://")
        .unwrap_or(given)
        .trim_end_matches('/');
    if given.starts_with("https://") {
        bail!("the server address {given:?}: kinko speaks plain HTTP to the gateway (HOST:PORT or http://HOST:PORT)");
    }
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("the server address {given:?} is not HOST:PORT or http://HOST:PORT"))
}

fn token(config: &crate::config::Config) -> anyhow::Result<String> {
    crate::serve::operator_token(config)?.context(
        "no operator token: set KINKO_OPERATOR_TOKEN (the same as the server's) or identity.operator_token_file",
    )
}

fn answer(status: u16, text: &str) -> anyhow::Result<serde_json::Value> {
    if !(200..300).contains(&status) {
        bail!("the server answered {status}: {}", text.trim());
    }
    Ok(serde_json::from_str(text).unwrap_or(serde_json::Value::Null))
}

pub fn custody(cmd: CustodyCmd, config: &crate::config::Config) -> anyhow::Result<()> {
    let (addr, token) = (server_addr(config)?, token(config)?);
    match cmd {
        CustodyCmd::Status { asset } => {
            let (st, text) = request(
                addr,
                "GET",
                &format!("/api/v1/admin/custody/{asset}"),
                Some(&token),
                "",
            )?;
            println!("{}", serde_json::to_string_pretty(&answer(st, &text)?)?);
        }
        CustodyCmd::CompanyAddress { asset } => {
            let (st, text) = request(
                addr,
                "GET",
                &format!("/api/v1/admin/custody/{asset}"),
                Some(&token),
                "",
            )?;
            let v = answer(st, &text)?;
            let a = v["company_address"]
                .as_str()
                .context("the server's answer has no company address")?;
            println!("{a}");
        }
        CustodyCmd::Refill { asset, amount, out } => {
            let body = serde_json::json!({ "amount": amount }).to_string();
            let (st, text) = post(
                addr,
                &format!("/api/v1/admin/custody/{asset}/refill"),
                &token,
                &body,
            )?;
            let v = answer(st, &text)?;
            let psbt = v["psbt"].as_str().context("the server's answer has no psbt")?;
            std::fs::write(&out, format!("{psbt}\n"))
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "wrote {}: have each cold keyholder run `kinko-signer offline-sign {}` with their keystore, then `kinko custody submit {asset} {}`",
                out.display(),
                out.display(),
                out.display()
            );
        }
        CustodyCmd::Submit { asset, file } => {
            let psbt =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let body = serde_json::json!({ "psbt": psbt.trim() }).to_string();
            let (st, text) = post(
                addr,
                &format!("/api/v1/admin/custody/{asset}/submit"),
                &token,
                &body,
            )?;
            let v = answer(st, &text)?;
            println!(
                "broadcast {} moving {} {asset} to hot (miner fee {})",
                v["txid"], v["amount"], v["network_fee"]
            );
        }
    }
    Ok(())
}

pub fn sim(cmd: SimCmd, config: &crate::config::Config) -> anyhow::Result<()> {
    let addr = server_addr(config)?;
    match cmd {
        SimCmd::Deposit {
            address,
            amount,
            token: user_token,
        } => {
            let token = match user_token {
                Some(t) => t,
                None => crate::serve::operator_token(config)?.context(
                    "simulated deposits need a credential: --token (the address owner's API key or session token, or KINKO_TOKEN), or the operator token (KINKO_OPERATOR_TOKEN)",
                )?,
            };
            let body = serde_json::json!({ "address": address, "amount": amount }).to_string();
            let (st, text) = post(addr, "/api/v1/sim/deposits", &token, &body)?;
            let v = answer(st, &text)?;
            println!(
                "deposit {} sent (simulated txid {}); credited in about a second",
                v["deposit_id"], v["txid"]
            );
        }
    }
    Ok(())
}

pub fn run(cmd: AdminCmd, config: &crate::config::Config) -> anyhow::Result<()> {
    let token = token(config)?;
    let addr = server_addr(config)?;
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
        AdminCmd::GrantRole {
            user,
            role,
            by,
            reason,
        } => (
            "/api/v1/admin/roles".to_owned(),
            serde_json::json!({"user": user, "role": role, "requested_by": by, "reason": reason}),
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
    request(addr, "POST", path, Some(token), body)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot reach kinko at {addr}; is `kinko serve` running?"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\
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

/// The node's hot and cold balances of `asset` as the running server's custody service reads
/// them now (`GET /admin/custody/{asset}`, operator token): `Err` with the server's answer where
/// no custody service holds the asset or the node cannot be read.
pub(crate) fn node_balances(
    config: &crate::config::Config,
    asset: &str,
) -> anyhow::Result<Result<(String, String), String>> {
    let (addr, token) = (server_addr(config)?, token(config)?);
    let (st, text) = request(
        addr,
        "GET",
        &format!("/api/v1/admin/custody/{asset}"),
        Some(&token),
        "",
    )?;
    if !(200..300).contains(&st) {
        return Ok(Err(format!("{st} {}", text.trim())));
    }
    let v: serde_json::Value = serde_json::from_str(&text).context("the custody status is not JSON")?;
    let field = |f: &str| {
        v[f].as_str()
            .map(str::to_owned)
            .with_context(|| format!("the custody status has no {f}"))
    };
    Ok(Ok((field("node_hot")?, field("node_cold")?)))
}
