//! kinko-chain's Ethereum pieces against a real Anvil node.

use kinko_chain::eth::anvil::{Anvil, CHAIN_ID};
use kinko_chain::eth::{erc20_transfer, EthAddress, TRANSFER_TOPIC};
use std::path::Path;
use std::process::Command;

fn testdata() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata"))
}

/// The committed test-token bytecode (deployment code).
pub fn test_token_bytecode() -> Vec<u8> {
    let text = std::fs::read_to_string(testdata().join("TestUsd.bin")).unwrap();
    hex::decode(text.trim()).unwrap()
}

#[test]
fn anvil_starts_mines_reorganises_and_stops() {
    let anvil = Anvil::start().unwrap();
    let rpc = anvil.rpc();
    assert_eq!(rpc.chain_id().unwrap(), CHAIN_ID);
    assert_eq!(rpc.block_number().unwrap(), 0);
    rpc.mine(3).unwrap();
    assert_eq!(rpc.block_number().unwrap(), 3);
    let b3 = rpc.block_at(3).unwrap().unwrap();
    let b2 = rpc.block_at(2).unwrap().unwrap();
    assert_eq!(b3.parent_hash, b2.hash);

    // A payment mined in block 4, then a reorg of depth 2 takes block 4 away.
    let faucet = anvil.faucet().unwrap();
    let to = EthAddress([0x42; 20]);
    let hash = rpc.send_from_dev(&faucet, Some(&to), 5_000, &[]).unwrap();
    let receipt = anvil.mine_until_mined(&hash, 2).unwrap();
    assert_eq!(receipt.block_number, 4);
    assert_eq!(receipt.status, 1);
    let b4 = rpc.block_at(4).unwrap().unwrap();
    assert_eq!(b4.transactions.len(), 1);
    assert_eq!(b4.transactions[0].to, Some(to));
    assert_eq!(b4.transactions[0].value, 5_000);
    assert_eq!(rpc.balance(&to, "latest").unwrap(), 5_000);

    rpc.reorg(2).unwrap();
    assert_eq!(rpc.block_number().unwrap(), 4);
    let b3_after = rpc.block_at(3).unwrap().unwrap();
    let b4_after = rpc.block_at(4).unwrap().unwrap();
    assert_ne!(b3_after.hash, b3.hash, "block 3 was replaced");
    assert_ne!(b4_after.hash, b4.hash, "block 4 was replaced");
    assert_eq!(b3_after.parent_hash, b2.hash, "below the reorg nothing changed");
    assert!(b4_after.transactions.is_empty());
    assert_eq!(
        rpc.balance(&to, "latest").unwrap(),
        0,
        "the payment left the chain"
    );

    let url = anvil.url();
    anvil.stop();
    let after = kinko_chain::eth::EthRpc::with_timeout(&url, std::time::Duration::from_secs(2));
    assert!(after.chain_id().is_err(), "a stopped node answers nothing");
}

#[test]
fn the_test_token_recompiles_to_the_committed_bytecode() {
    let solc = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/test-deps/solc/node_modules/solc"
    ));
    assert!(
        solc.join("package.json").is_file(),
        "solcjs missing at {}: run scripts/install-test-deps",
        solc.display()
    );
    let out = Command::new("node")
        .arg(testdata().join("compile.js"))
        .arg(solc)
        .output()
        .expect("node runs (scripts/install-test-deps)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let compiled = hex::decode(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(
        compiled,
        test_token_bytecode(),
        "TestUsd.bin is stale: recompile with compile.js"
    );
}

#[test]
fn token_transfers_show_as_logs_and_balances() {
    let anvil = Anvil::start().unwrap();
    let rpc = anvil.rpc();
    let faucet = anvil.faucet().unwrap();
    let deploy = rpc
        .send_from_dev(&faucet, None, 0, &test_token_bytecode())
        .unwrap();
    let receipt = anvil.mine_until_mined(&deploy, 2).unwrap();
    assert_eq!(receipt.status, 1);
    let token = receipt.contract_address.expect("a contract address");
    assert_eq!(
        rpc.token_balance(&token, &faucet, "latest").unwrap(),
        1_000_000_000_000_000_000
    );

    let alice = EthAddress([0xa1; 20]);
    let bob = EthAddress([0xb0; 20]);
    let t1 = rpc
        .send_from_dev(&faucet, Some(&token), 0, &erc20_transfer(&alice, 1_500_000))
        .unwrap();
    let t2 = rpc
        .send_from_dev(&faucet, Some(&token), 0, &erc20_transfer(&bob, 7))
        .unwrap();
    let r1 = anvil.mine_until_mined(&t1, 2).unwrap();
    let r2 = anvil.mine_until_mined(&t2, 2).unwrap();
    assert_eq!(r1.block_number, r2.block_number, "both in one block");
    let head = rpc.block_number().unwrap();

    let to_alice = rpc.logs(&token, &TRANSFER_TOPIC, &[alice], 0, head).unwrap();
    assert_eq!(to_alice.len(), 1);
    assert_eq!(to_alice[0].tx_hash, t1);
    assert_eq!(to_alice[0].data, {
        let mut w = vec![0u8; 16];
        w.extend_from_slice(&1_500_000u128.to_be_bytes());
        w
    });
    let all = rpc.logs(&token, &TRANSFER_TOPIC, &[], 0, head).unwrap();
    assert_eq!(all.len(), 3, "the mint and two transfers");
    let mut indexes: Vec<(u64, u64)> = all.iter().map(|l| (l.block_number, l.log_index)).collect();
    indexes.dedup();
    assert_eq!(indexes.len(), 3, "each log has its own (block, index)");
    assert_eq!(rpc.token_balance(&token, &alice, "latest").unwrap(), 1_500_000);
    assert_eq!(rpc.token_balance(&token, &bob, "latest").unwrap(), 7);
    // The same in JSON-RPC batches (more addresses than one batch takes), ETH and the token.
    let mut many: Vec<EthAddress> = (0..300u32)
        .map(|i| {
            let mut a = [0x55; 20];
            a[16..].copy_from_slice(&i.to_be_bytes());
            EthAddress(a)
        })
        .collect();
    many[7] = alice;
    many[290] = bob;
    many[3] = faucet;
    let tokens = rpc.balances(&many, Some(&token), "latest").unwrap();
    let eth = rpc.balances(&many, None, "latest").unwrap();
    assert_eq!(tokens.len(), 300);
    for (i, a) in many.iter().enumerate() {
        assert_eq!(tokens[i], rpc.token_balance(&token, a, "latest").unwrap(), "{i}");
        assert_eq!(eth[i], rpc.balance(a, "latest").unwrap(), "{i}");
    }
    assert_eq!((tokens[7], tokens[290]), (1_500_000, 7));
    assert!(eth[3] > 0);
}
