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

/// `testdata/<name>.sol` compiled by solcjs (`compile.js`), as hex.
fn compiled(name: &str) -> String {
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
        .arg(name)
        .output()
        .expect("node runs (scripts/install-test-deps)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_test_token_recompiles_to_the_committed_bytecode() {
    assert_eq!(
        hex::decode(compiled("TestUsd")).unwrap(),
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

#[test]
fn the_cold_multisig_recompiles_to_the_committed_bytecode() {
    assert_eq!(
        compiled("ColdMultisig"),
        kinko_chain::eth::cold::COLD_MULTISIG_BIN.trim(),
        "ColdMultisig.bin is stale: recompile with `node compile.js SOLC ColdMultisig`"
    );
}

mod cold {
    use super::*;
    use kinko_chain::eth::cold::{digest, execute_calldata, read_state, recover, ColdState};
    use secp256k1::{Message, Secp256k1, SecretKey};

    struct Owner {
        key: SecretKey,
        address: EthAddress,
    }

    fn owner(tag: u8) -> Owner {
        let key = SecretKey::from_slice(&[tag; 32]).unwrap();
        let address = EthAddress::from_pubkey(&key.public_key(&Secp256k1::new()));
        Owner { key, address }
    }

    fn sign(o: &Owner, d: &[u8; 32]) -> [u8; 65] {
        let (id, compact) = Secp256k1::new()
            .sign_ecdsa_recoverable(&Message::from_digest(*d), &o.key)
            .serialize_compact();
        let mut sig = [0u8; 65];
        sig[..64].copy_from_slice(&compact);
        sig[64] = 27 + id.to_i32() as u8;
        sig
    }

    /// Every refusal the contract itself makes: the keys, their order, their count, the digest
    /// (nonce, chain, contract), and a good execute moves ETH and the token once.
    #[test]
    fn the_contract_moves_funds_only_with_threshold_sorted_owner_signatures_over_its_digest() {
        let anvil = Anvil::start().unwrap();
        let rpc = anvil.rpc();
        let faucet = anvil.faucet().unwrap();
        let mut owners: Vec<Owner> = (1..=3).map(owner).collect();
        owners.sort_by_key(|o| o.address);
        let addrs: Vec<EthAddress> = owners.iter().map(|o| o.address).collect();
        let cold = anvil.deploy_cold_multisig(&addrs, 2).unwrap();
        assert_eq!(
            read_state(&rpc, &cold, "latest").unwrap(),
            ColdState {
                owners: addrs.clone(),
                threshold: 2,
                nonce: 0
            }
        );
        let token = anvil.deploy_test_token().unwrap();
        let fund = rpc.send_from_dev(&faucet, Some(&cold), 10_000, &[]).unwrap();
        anvil.mine_until_mined(&fund, 2).unwrap();
        let t = rpc
            .send_from_dev(&faucet, Some(&token), 0, &erc20_transfer(&cold, 500))
            .unwrap();
        anvil.mine_until_mined(&t, 2).unwrap();
        assert_eq!(rpc.balance(&cold, "latest").unwrap(), 10_000);

        let to = EthAddress([0x77; 20]);
        let d = digest(CHAIN_ID, &cold, 0, &to, 4_000, &[]);
        let s: Vec<[u8; 65]> = owners.iter().map(|o| sign(o, &d)).collect();
        assert_eq!(recover(&d, &s[0]), Some(owners[0].address));
        let other = owner(9);
        let wrong_digest = digest(CHAIN_ID, &cold, 1, &to, 4_000, &[]);
        let other_chain = digest(CHAIN_ID + 1, &cold, 0, &to, 4_000, &[]);
        let other_contract = digest(CHAIN_ID, &token, 0, &to, 4_000, &[]);
        let refused: Vec<(&str, Vec<[u8; 65]>)> = vec![
            ("one signature", vec![s[0]]),
            ("unsorted", vec![s[1], s[0]]),
            ("the same owner twice", vec![s[0], s[0]]),
            ("a non-owner", vec![s[0], sign(&other, &d)]),
            ("over another nonce", vec![s[0], sign(&owners[1], &wrong_digest)]),
            (
                "over another chain",
                vec![sign(&owners[0], &other_chain), sign(&owners[1], &other_chain)],
            ),
            (
                "for another contract",
                vec![
                    sign(&owners[0], &other_contract),
                    sign(&owners[1], &other_contract),
                ],
            ),
            ("three of a 2-of-3", s.clone()),
        ];
        for (name, sigs) in refused {
            let call = execute_calldata(&to, 4_000, &[], &sigs);
            let moved = rpc
                .send_from_dev(&faucet, Some(&cold), 0, &call)
                .ok()
                .and_then(|h| anvil.mine_until_mined(&h, 2).ok())
                .is_some_and(|r| r.status == 1);
            assert!(!moved, "{name}: the contract must refuse");
        }
        assert_eq!(rpc.balance(&to, "latest").unwrap(), 0);

        // Owners 1 and 3 (sorted), as the ceremony sends them.
        let call = execute_calldata(&to, 4_000, &[], &[s[0], s[2]]);
        let h = rpc.send_from_dev(&faucet, Some(&cold), 0, &call).unwrap();
        assert_eq!(anvil.mine_until_mined(&h, 2).unwrap().status, 1);
        assert_eq!(rpc.balance(&to, "latest").unwrap(), 4_000);
        assert_eq!(read_state(&rpc, &cold, "latest").unwrap().nonce, 1);
        // The same signatures again: the nonce moved on.
        let again = rpc
            .send_from_dev(&faucet, Some(&cold), 0, &call)
            .ok()
            .and_then(|h| anvil.mine_until_mined(&h, 2).ok())
            .is_some_and(|r| r.status == 1);
        assert!(!again, "a replay is refused");

        // The token: execute(token, 0, transfer(to, 200)) at nonce 1.
        let data = erc20_transfer(&to, 200);
        let d = digest(CHAIN_ID, &cold, 1, &token, 0, &data);
        let call = execute_calldata(&token, 0, &data, &[sign(&owners[1], &d), sign(&owners[2], &d)]);
        let h = rpc.send_from_dev(&faucet, Some(&cold), 0, &call).unwrap();
        assert_eq!(anvil.mine_until_mined(&h, 2).unwrap().status, 1);
        assert_eq!(rpc.token_balance(&token, &to, "latest").unwrap(), 200);
        assert_eq!(rpc.token_balance(&token, &cold, "latest").unwrap(), 300);
    }
}
