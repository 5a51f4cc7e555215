//! Deposits credited per second from one block with many deposits: N ETH payments and N token
//! transfers, each to a distinct user's deposit address, mined in one Anvil block (its gas
//! limit raised for them), then seen and credited by the ETH and token watchers against the
//! real, durable engine (journal fsync'd). Only the watchers' polls are timed.
//!
//! `cargo run -p kinko-custody --example eth_deposit_bench [-- N]` (N of each, default 1 000:
//! 2 000 deposits). Needs Anvil (`scripts/install-test-deps`, or `KINKO_ANVIL`).

use bitcoin::bip32::Xpriv;
use bitcoin::NetworkKind;
use kinko_chain::eth::anvil::Anvil;
use kinko_chain::eth::erc20_transfer;
use kinko_core::identity::{IdentityCommand, IdentityReply};
use kinko_core::{AssetCode, AssetId, Command, Reply, UserId};
use kinko_custody::eth::{EthAsset, EthDeposits};
use kinko_engine::link::EngineLink;
use kinko_engine::EngineConfig;
use serde_json::json;
use std::time::Instant;

fn define(link: &EngineLink, code: &str, decimals: u8) -> AssetId {
    match link.submit(Command::DefineAsset {
        code: AssetCode::new(code).expect("code"),
        decimals,
    }) {
        Ok(Ok(Reply::AssetDefined { asset, .. })) => asset,
        other => panic!("define {code}: {other:?}"),
    }
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000);
    let anvil = Anvil::start().expect("anvil (run scripts/install-test-deps)");
    let rpc = anvil.rpc();
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = kinko_engine::launch::open(&EngineConfig::new(dir.path().join("data"))).expect("engine");
    let link = EngineLink::new(engine.sequencer.handle(), engine.read.clone());
    let eth = define(&link, "ETH", 18);
    let usdc = define(&link, "USDC", 6);
    let token = anvil.deploy_test_token().expect("token");
    let master = Xpriv::new_master(NetworkKind::Test, &[7u8; 32]).expect("master key");
    let account = kinko_signer::eth::EthKeys::new(&master).expect("keys").xpub();
    let watcher = |asset, kind| {
        let from = rpc.block_number().expect("head") + 1;
        EthDeposits::new(rpc.clone(), link.clone(), asset, kind, account, 1, 2, from)
    };
    let mut we = watcher(eth, EthAsset::Ether);
    let mut wt = watcher(usdc, EthAsset::Token(token));

    // 2N users, each with a deposit address (ETH for the first N, the token for the others).
    let mut users: Vec<(UserId, kinko_chain::eth::EthAddress)> = Vec::new();
    for i in 0..2 * n {
        let r = link
            .submit(Command::Identity(IdentityCommand::Register {
                email: format!("bench{i}@example.com"),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            }))
            .expect("engine");
        let Ok(Reply::Identity(IdentityReply::Registered(user))) = r else {
            panic!("{r:?}")
        };
        let w = if i < n { &we } else { &wt };
        users.push((user, w.assign_address(user).expect("address")));
    }
    // One block holds them all.
    rpc.call(
        "evm_setBlockGasLimit",
        json!([format!("0x{:x}", 1_000_000_000u64)]),
    )
    .expect("block gas limit");
    let faucet = anvil.faucet().expect("faucet");
    for (i, (_, a)) in users.iter().enumerate() {
        if i < n as usize {
            rpc.send_from_dev(&faucet, Some(a), 1_000_000_000_000 + i as u128, &[])
                .expect("pay ETH");
        } else {
            rpc.send_from_dev(&faucet, Some(&token), 0, &erc20_transfer(a, 1_000 + i as u128))
                .expect("pay token");
        }
    }
    rpc.mine(1).expect("mine");
    let head = rpc.block_number().expect("head");
    let txs = rpc
        .block_at(head)
        .expect("block")
        .expect("block")
        .transactions
        .len();
    assert_eq!(txs, 2 * n as usize, "every payment in one block");

    let start = Instant::now();
    let se = we.poll().expect("ETH poll");
    let st = wt.poll().expect("token poll");
    let elapsed = start.elapsed();
    assert_eq!((se.seen, se.credited), (n as usize, n as usize), "{se:?}");
    assert_eq!((st.seen, st.credited), (n as usize, n as usize), "{st:?}");
    let total = 2 * u128::from(n);
    let per_s = total * 1_000_000 / elapsed.as_micros().max(1);
    println!(
        "eth deposits: {total} deposits ({n} ETH, {n} token) of one block seen and credited in {} ms: {per_s} per second",
        elapsed.as_millis()
    );
    link.view(|e| e.check().expect("engine invariants hold"));
}
