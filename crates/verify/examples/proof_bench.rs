//! The proof-of-liabilities build for N accounts (default one million) in one asset: salts and
//! leaves, the tree, the signed root and one verified proof; time of each step and peak memory.
//! The same steps as `kinko bench proof`, without building the whole exchange:
//! `cargo run --release -p kinko-verify --example proof_bench -- 1000000`.

use kinko_verify::tree::{build, salt, sign_root, LeafInput};
use std::time::Instant;

fn main() {
    let accounts: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let secret = [0x5a; 32];
    let key = ed25519_dalek::SigningKey::from_bytes(&[0x11; 32]);
    let t0 = Instant::now();
    let mut leaves = Vec::with_capacity(usize::try_from(accounts).unwrap_or(0));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for user in 1..=accounts {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        leaves.push(LeafInput {
            user,
            salt: salt(&secret, "LTC", 1, user),
            balance: i128::from(x % 18_000_000_000),
        });
    }
    let salted = t0.elapsed();
    let t1 = Instant::now();
    let tree = build(leaves).expect("tree");
    let built = t1.elapsed();
    let t2 = Instant::now();
    let mut root = tree.unsigned_root("LTC", 8, 1, "1970-01-01T00:00:00.000000Z");
    sign_root(&mut root, kinko_verify::KEY_AUDIT, &key).expect("sign");
    let proof = tree.proof(&root, accounts / 2).expect("proof");
    kinko_verify::verify(&proof, &kinko_verify::Expect::default()).expect("verifies");
    let signed = t2.elapsed();
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l[6..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("proof of liabilities: {accounts} accounts, one asset");
    println!("salts + leaves        {:>8.3} s", salted.as_secs_f64());
    println!("tree (sort + hashes)  {:>8.3} s", built.as_secs_f64());
    println!("sign + one proof      {:>8} µs", signed.as_micros());
    println!("total                 {:>8.3} s", t0.elapsed().as_secs_f64());
    println!("peak memory (VmHWM)   {hwm}");
    println!("path length           {} steps", proof.path.len());
}
