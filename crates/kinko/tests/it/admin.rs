//! `kinko admin` against a running `kinko serve`: platform-wide revocation through the operator
//! API, and the operator token required (with `--demo`); the bootstrap of the first admins with
//! `grant-role`, closed once two security admins exist, and unfreezing refused to the operator
//! alone (without `--demo`).

use super::{spawn, text, BIN, TEST_MASTER_KEY};
use std::process::Command;

const OPERATOR_TOKEN: &str = "operator-token-for-tests-only-0123456789abcdef";

fn admin(addr: &str, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.arg("admin")
        .args(args)
        .env_remove("KINKO_CONFIG")
        .env_remove("KINKO_OPERATOR_TOKEN")
        .env("KINKO_MASTER_KEY", TEST_MASTER_KEY)
        .env("KINKO_LISTEN", addr);
    if let Some(t) = token {
        c.env("KINKO_OPERATOR_TOKEN", t);
    }
    c.output().expect("run kinko admin")
}

#[test]
fn admin_revoke_everything_ends_every_session_and_second_factor() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::env::set_var("KINKO_OPERATOR_TOKEN", OPERATOR_TOKEN);
    let mut child = spawn(&data, &["serve", "--demo"]);
    std::env::remove_var("KINKO_OPERATOR_TOKEN");
    let addr = super::serving_addr(&mut child);
    // Without the token, or with a wrong one, nothing happens.
    let none = admin(
        &addr,
        None,
        &["revoke-everything", "--by", "ops", "--reason", "drill"],
    );
    assert!(
        !none.status.success() && text(&none).contains("operator token"),
        "{}",
        text(&none)
    );
    let wrong = admin(
        &addr,
        Some("not-the-operator-token-but-long-enough-1234"),
        &["revoke-everything", "--by", "ops", "--reason", "drill"],
    );
    assert!(
        !wrong.status.success() && text(&wrong).contains("401"),
        "{}",
        text(&wrong)
    );
    // A reason is required.
    let blank = admin(
        &addr,
        Some(OPERATOR_TOKEN),
        &["revoke-everything", "--by", "ops", "--reason", " "],
    );
    assert!(
        !blank.status.success() && text(&blank).contains("REASON_REQUIRED"),
        "{}",
        text(&blank)
    );
    let ok = admin(
        &addr,
        Some(OPERATOR_TOKEN),
        &[
            "revoke-everything",
            "--by",
            "security officer",
            "--reason",
            "suspected session theft",
        ],
    );
    assert!(ok.status.success(), "{}", text(&ok));
    let out = String::from_utf8_lossy(&ok.stdout);
    // The demo's two traders and two console admins had a second factor each.
    assert!(out.contains("\"users\":4"), "{out}");
    let status = super::terminate(&mut child);
    assert!(status.success());
    // The journal holds the revocation with who and why.
    let d = super::kinko(&data, &["journal", "dump"]);
    let dump = String::from_utf8_lossy(&d.stdout);
    assert!(
        dump.contains("RevokeEverything") && dump.contains("suspected session theft"),
        "{}",
        dump.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    // The tamper-evident audit log has the operator's action and the security events, with a
    // signed checkpoint written at shutdown; `kinko audit verify` checks every proof.
    let v = super::kinko(&data, &["audit", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
    let entries = std::fs::read_to_string(data.join("audit").join(kinko_audit::ENTRIES_FILE)).unwrap();
    assert!(entries.contains("operator.revoke_everything"), "{entries}");
    assert!(entries.contains("identity.everything_revoked"), "{entries}");
    // An edited entry is found and named.
    let forged = entries.replacen("suspected session theft", "routine maintenance", 1);
    assert_ne!(forged, entries);
    std::fs::write(data.join("audit").join(kinko_audit::ENTRIES_FILE), forged).unwrap();
    let v = super::kinko(&data, &["audit", "verify"]);
    assert!(!v.status.success(), "{}", text(&v));
    assert!(text(&v).contains("entries.jsonl"), "{}", text(&v));
}

fn register(addr: &str, email: &str) -> u64 {
    let (st, body) = super::http(
        addr,
        "POST",
        "/api/v1/auth/register",
        "",
        &format!(r#"{{"email":"{email}","password":"correct horse battery"}}"#),
    );
    assert_eq!(st, 201, "{body}");
    body["user_id"].as_str().unwrap().parse().unwrap()
}

#[test]
fn admin_grant_role_bootstraps_two_security_admins_then_refuses_and_unfreezing_takes_two() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::env::set_var("KINKO_OPERATOR_TOKEN", OPERATOR_TOKEN);
    let mut child = spawn(&data, &["serve"]);
    std::env::remove_var("KINKO_OPERATOR_TOKEN");
    let addr = super::serving_addr(&mut child);
    let a = register(&addr, "ada@kinko.test");
    let b = register(&addr, "ben@kinko.test");
    let c = register(&addr, "cy@kinko.test");
    let grant = |user: &str, role: &str, token: Option<&str>| {
        admin(
            &addr,
            token,
            &[
                "grant-role",
                user,
                role,
                "--by",
                "founder",
                "--reason",
                "first admins",
            ],
        )
    };
    // The token is needed, the role must exist, the user too.
    let o = grant("ada@kinko.test", "security_admin", None);
    assert!(
        !o.status.success() && text(&o).contains("operator token"),
        "{}",
        text(&o)
    );
    let o = grant("ada@kinko.test", "superuser", Some(OPERATOR_TOKEN));
    assert!(
        !o.status.success() && text(&o).contains("role must be"),
        "{}",
        text(&o)
    );
    let o = grant("nobody@kinko.test", "security_admin", Some(OPERATOR_TOKEN));
    assert!(
        !o.status.success() && text(&o).contains("USER_NOT_FOUND"),
        "{}",
        text(&o)
    );
    // By email and by id; a further role for the same admin is still the bootstrap.
    let o = grant("ada@kinko.test", "security_admin", Some(OPERATOR_TOKEN));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("\"user_id\":\"{a}\"")), "{}", text(&o));
    let o = grant("ada@kinko.test", "risk", Some(OPERATOR_TOKEN));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(r#""roles":["risk","security_admin"]"#),
        "{}",
        text(&o)
    );
    let o = grant(&b.to_string(), "security_admin", Some(OPERATOR_TOKEN));
    assert!(o.status.success(), "{}", text(&o));
    // Two security admins exist: the operator's token grants nothing more.
    let o = grant(&c.to_string(), "viewer", Some(OPERATOR_TOKEN));
    assert!(
        !o.status.success() && text(&o).contains("403") && text(&o).contains("ROLES_BOOTSTRAP_CLOSED"),
        "{}",
        text(&o)
    );
    // Freezing is one person's decision; unfreezing is not the token's.
    let status = |s: &str| {
        admin(
            &addr,
            Some(OPERATOR_TOKEN),
            &[
                "set-status",
                &c.to_string(),
                s,
                "--by",
                "support",
                "--reason",
                "customer call",
            ],
        )
    };
    let o = status("frozen");
    assert!(o.status.success(), "{}", text(&o));
    let o = status("active");
    assert!(
        !o.status.success() && text(&o).contains("403") && text(&o).contains("TWO_ADMINS_REQUIRED"),
        "{}",
        text(&o)
    );
    assert!(super::terminate(&mut child).success());
    // The journal: roles for the first two only, the freeze, no unfreeze.
    let d = super::kinko(&data, &["journal", "dump"]);
    let dump = String::from_utf8_lossy(&d.stdout);
    let roles_set = dump.lines().filter(|l| l.contains("SetRoles")).count();
    assert_eq!(roles_set, 4, "three granted, one refused:\n{dump}");
    let entries = std::fs::read_to_string(data.join("audit").join(kinko_audit::ENTRIES_FILE)).unwrap();
    assert!(entries.contains("operator.grant_role"), "{entries}");
}

/// `serve --demo` writes two console admins into its credentials file: each signs in with the
/// password and a code from the TOTP secret (the console's sign-in, over its API) and reaches
/// the operators' endpoints, sees the traders' wallets whitelisted by the two of them, and is
/// told to add a passkey before acting.
#[test]
fn the_demo_has_two_admins_who_sign_in_to_the_console_with_their_second_factor() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = spawn(&data, &["serve", "--demo"]);
    let addr = super::serving_addr(&mut child);
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("demo-credentials.json")).unwrap()).unwrap();
    let admins = creds["admins"].as_array().expect("admins in the credentials");
    assert_eq!(admins.len(), 2, "{creds}");
    for a in admins {
        assert!(
            a["roles"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("security_admin")),
            "{a}"
        );
        let body = serde_json::json!({"email": a["email"], "password": a["password"], "device": "console"});
        let (st, s) = super::http(&addr, "POST", "/api/v1/auth/login", "", &body.to_string());
        assert_eq!((st, s["level"].as_str()), (200, Some("password")), "{s}");
        let token = s["token"].as_str().unwrap();
        let secret = kinko_api::totp::base32_decode(a["totp_secret"].as_str().unwrap()).unwrap();
        let step = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 30;
        let code = format!("{:06}", kinko_api::totp::code_at(&secret, step));
        let body = serde_json::json!({"step_up": {"totp": code}}).to_string();
        let (st, full) = super::http(&addr, "POST", "/api/v1/auth/login/second-factor", token, &body);
        assert_eq!((st, full["level"].as_str()), (200, Some("full")), "{full}");
        let session = full["token"].as_str().unwrap();
        let (st, p) = super::http(&addr, "GET", "/api/v1/ops/proposals", session, "");
        assert_eq!(st, 200, "{p}");
        // The traders' wallets (two traders, three chain assets) were made usable at once the
        // only way there is: a whitelist_address proposal of one admin that the other approved.
        let whitelisted: Vec<&serde_json::Value> = p
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["kind"] == "whitelist_address" && x["status"] == "executed")
            .collect();
        assert_eq!(whitelisted.len(), 6, "{p}");
        assert!(whitelisted.iter().all(|x| x["proposer"] != x["approver"]), "{p}");
        // The admin signed in with TOTP, but acts only with a passkey, which the demo left to them.
        let body = serde_json::json!({"asset": "BTC", "reason": "drill"}).to_string();
        let (st, r) = super::http(&addr, "POST", "/api/v1/ops/halt", session, &body);
        assert_eq!(
            (st, r["code"].as_str()),
            (403, Some("ADMIN_PASSKEY_REQUIRED")),
            "{r}"
        );
    }
    assert!(super::terminate(&mut child).success());
}

/// The `kinko admin grant-role` lines of README's "The first admins", run exactly as written
/// (in bash, `kinko` on the PATH, the operator token and the server's address from the
/// environment as the README says) on a new installation without `--demo` where the two users
/// it names have registered: both succeed, and then the bootstrap is closed.
#[test]
fn the_readmes_first_admins_commands_work_as_written() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let start = readme
        .find("## The first admins")
        .expect("a first admins section");
    let section = &readme[start + 3..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let lines: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .map(str::trim)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::env::set_var("KINKO_OPERATOR_TOKEN", OPERATOR_TOKEN);
    let mut child = spawn(&data, &["serve"]);
    std::env::remove_var("KINKO_OPERATOR_TOKEN");
    let addr = super::serving_addr(&mut child);
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("kinko")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut ids = Vec::new();
    for line in &lines {
        let email = line.split_whitespace().nth(3).unwrap();
        ids.push(register(&addr, email));
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!("set -eo pipefail\n{line}"))
            .current_dir(tmp.path())
            .env("PATH", &path)
            .env_remove("KINKO_CONFIG")
            .env("KINKO_MASTER_KEY", TEST_MASTER_KEY)
            .env("KINKO_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("KINKO_LISTEN", &addr)
            .output()
            .unwrap();
        assert!(o.status.success(), "{line}\n{}", text(&o));
        assert!(text(&o).contains("security_admin"), "{line}\n{}", text(&o));
    }
    let carol = register(&addr, "carol@example.com");
    let o = admin(
        &addr,
        Some(OPERATOR_TOKEN),
        &[
            "grant-role",
            &carol.to_string(),
            "security_admin",
            "--by",
            "founder",
            "--reason",
            "a third",
        ],
    );
    assert!(
        !o.status.success() && text(&o).contains("ROLES_BOOTSTRAP_CLOSED"),
        "{}",
        text(&o)
    );
    assert!(super::terminate(&mut child).success());
}
