//! `kinko-verify`: checks a proof of liabilities inclusion proof, on the customer's machine.
//!
//! ```text
//! kinko-verify PROOF.json [--published LIABILITIES.json] [--public-key HEX] [--user ID]
//! ```
//!
//! Exit code 0 only when the proof is valid; 1 with one line naming the failed check when it
//! is not; 2 when the command line or a file cannot be read.
#![forbid(unsafe_code)]

use kinko_verify::{format_units, verify, Expect, InclusionProof, Roots};
use std::process::ExitCode;

const USAGE: &str =
    "usage: kinko-verify PROOF.json [--published LIABILITIES.json] [--public-key HEX] [--user ID]

Checks a kinko proof of liabilities: recomputes the path from your leaf (your user id, salt and
balance) to the root, refusing negative values and sums that overflow, compares the root hash
and total with the signed root, and checks the root's Ed25519 signature.

  --published FILE  the roots the exchange publishes (GET /api/v1/proofs/liabilities): the
                    proof's root must be the published one for its asset
  --public-key HEX  the key the exchange publishes: the root must be signed by it (the
                    signer's witness key when roots are signed by the witness, key
                    \"witness\"; the audit key otherwise)
  --user ID         your user id: the proof must be for your leaf";

struct Args {
    proof: String,
    published: Option<String>,
    public_key: Option<String>,
    user: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut proof = None;
    let mut published = None;
    let mut public_key = None;
    let mut user = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--published" => published = Some(it.next().ok_or("--published needs a file")?),
            "--public-key" => public_key = Some(it.next().ok_or("--public-key needs 64 hex digits")?),
            "--user" => {
                let v = it.next().ok_or("--user needs a user id")?;
                user = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("--user {v:?} is not a user id"))?,
                );
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if proof.is_none() => proof = Some(s.to_owned()),
            s => return Err(format!("unexpected argument {s}")),
        }
    }
    Ok(Args {
        proof: proof.ok_or("name the proof file")?,
        published,
        public_key,
        user,
    })
}

/// Reads at most 64 MiB of JSON.
fn read_json<T: serde::de::DeserializeOwned>(path: &str) -> Result<T, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut bytes = Vec::new();
    f.take(64 << 20)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{path} is not a proof file of this format: {e}"))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if e.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("kinko-verify: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let proof: InclusionProof = match read_json(&args.proof) {
        Ok(p) => p,
        Err(e) => {
            println!("INVALID: FORMAT: {e}");
            return ExitCode::from(1);
        }
    };
    let published: Option<Roots> = match args.published.as_deref().map(read_json).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kinko-verify: {e}");
            return ExitCode::from(2);
        }
    };
    let expect = Expect {
        user: args.user,
        public_key: args.public_key.as_deref(),
        published: published.as_ref(),
    };
    match verify(&proof, &expect) {
        Ok(v) => {
            println!(
                "VALID: user {} holds {} {} in the liabilities of {} at sequence {} ({}): {} customers, total {} {}",
                v.user,
                format_units(v.balance, v.decimals),
                v.asset,
                v.asset,
                v.sequence,
                v.time,
                v.leaves,
                format_units(v.total, v.decimals),
                v.asset
            );
            println!("root signed by the {} key {}", v.key, v.public_key);
            if args.public_key.is_none() {
                println!(
                    "note: the key was not pinned; pass --public-key with the key the exchange publishes"
                );
            }
            if args.published.is_none() {
                println!("note: the root was not compared with the published one; pass --published");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("INVALID: {e}");
            ExitCode::from(1)
        }
    }
}
