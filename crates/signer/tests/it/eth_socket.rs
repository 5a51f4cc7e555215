//! Ethereum through the signer's socket: `sign_eth_withdrawal` runs a withdrawal's proof,
//! address, review and limit checks and then the signer's own reading of the transaction, so
//! every row of the attack table keeps its code here too, and a withdrawal without a valid
//! approval is refused; sweeps and gas top-ups are signed and logged; what is signed is mined
//! by a real Anvil node and survives a restart in the nonce book.

use super::eth::{eth_tx, token_tx, ETH, GWEI};
use super::harness::*;
use kinko_chain::eth::anvil::{Anvil, CHAIN_ID};
use kinko_chain::eth::{erc20_approve, erc20_transfer, Branch, Eip1559, EthAddress};
use kinko_core::identity::Action;
use kinko_core::{AssetId, UserId};
use kinko_signer::eth::{recover_sender, EthKeys};
use kinko_signer_proto::protocol::{Request, Response, Withdrawal};

/// The token's asset id at the signer (ETH is the harness's `ASSET`).
const TOKEN_ASSET: u32 = 2;
/// The token's own limits (its minor unit).
const TOKEN_PER_TX_MAX: u64 = 100_000_000;
/// A token address record is the ETH one's plus this.
const TOKEN_ADDRESS_OFFSET: u64 = 1_000;
/// An ETH withdrawal's amount: within the harness's per-transaction limit, read as wei.
const AMOUNT_WEI: u64 = 400_000;

/// A started Ethereum signer for `token`: `[eth]` with Anvil's chain id and the token.
fn eth_env(token: EthAddress, start_nonce: u64) -> Env {
    Env::edited(move |t| {
        format!(
            "{}\n[eth]\nchain_id = {CHAIN_ID}\nstart_nonce = {start_nonce}\n\
             [[eth.tokens]]\nasset_id = {TOKEN_ASSET}\ncontract = \"{}\"\n\
             per_tx_max = {TOKEN_PER_TX_MAX}\nwindow_max = {}\n",
            t.replace("asset = \"LTC\"", "asset = \"ETH\""),
            token.checksummed(),
            2 * TOKEN_PER_TX_MAX
        )
    })
}

fn hot_of(env: &Env) -> EthAddress {
    EthKeys::new(&env.keys().master())
        .unwrap()
        .address(Branch::Hot, 0)
        .unwrap()
}

/// A customer whose whitelisted address is `dest` (for ETH and for the token).
fn customer(user: u64, dest: EthAddress) -> Customer {
    let mut c = Customer::new(user);
    c.address = dest.checksummed();
    c
}

/// Registers the customer's factors and address for ETH and the token, and lets them mature.
fn onboard(env: &Env, c: &Customer) {
    env.ok(&c.register_passkey());
    env.ok(&c.register_totp());
    env.ok(&c.register_address());
    let action = Action::AddWithdrawalAddress {
        user: UserId(c.user),
        asset: AssetId(TOKEN_ASSET),
        address: c.address.clone(),
        label: "mine".into(),
    };
    env.ok(&Request::RegisterAddress {
        user: c.user,
        address_id: c.address_id + TOKEN_ADDRESS_OFFSET,
        asset: TOKEN_ASSET,
        destination: c.address.clone(),
        label: "mine".into(),
        approval: Some(c.passkey_proof(&action, 0)),
    });
    env.advance_s(FIRST_MATURITY_S + 1);
}

/// An ETH withdrawal approved with the customer's passkey now.
fn eth_withdrawal(env: &Env, c: &Customer, id: u64, amount: u64) -> Withdrawal {
    c.with_passkey(c.withdrawal(id, amount), env.now())
}

/// A token withdrawal approved with the customer's passkey now.
fn token_withdrawal(env: &Env, c: &Customer, id: u64, amount: u64) -> Withdrawal {
    let mut w = c.withdrawal(id, amount);
    w.asset = TOKEN_ASSET;
    w.address_id = c.address_id + TOKEN_ADDRESS_OFFSET;
    c.with_passkey(w, env.now())
}

fn sign(env: &Env, w: &Withdrawal, tx: &Eip1559) -> Response {
    sign_raw(env, w, tx.encode_unsigned())
}

fn sign_raw(env: &Env, w: &Withdrawal, raw_unsigned: Vec<u8>) -> Response {
    env.call(&Request::SignEthWithdrawal {
        withdrawal: Box::new(w.clone()),
        raw_unsigned,
        journal: None,
    })
}

#[track_caller]
fn expect_eth_signed(r: Response) -> (Vec<u8>, [u8; 32]) {
    match r {
        Response::EthSigned { raw, hash } => (raw, hash),
        other => panic!("expected eth_signed, got {other:?}"),
    }
}

fn some_token() -> EthAddress {
    EthAddress([0xcc; 20])
}

fn dest() -> EthAddress {
    EthAddress([0xde; 20])
}

/// One forgery: the withdrawal custody presents, the bytes it hands over, the code and
/// whether it halts signing.
struct Row {
    name: &'static str,
    token: bool,
    amount: u64,
    tx: Eip1559,
    code: &'static str,
    halts: bool,
}

#[test]
fn through_the_socket_every_forgery_keeps_its_code_and_nothing_is_signed() {
    let token = some_token();
    let amount_t = 5_000_000u64;
    let transfer = |to: &EthAddress, n: u64| erc20_transfer(to, u128::from(n));
    let mut extra = transfer(&dest(), amount_t);
    extra.extend_from_slice(&[0u8; 32]);
    let rows = vec![
        Row {
            name: "wrong chain id (a replay on mainnet)",
            token: false,
            amount: AMOUNT_WEI,
            tx: Eip1559 {
                chain_id: 1,
                ..eth_tx(0, dest(), AMOUNT_WEI.into())
            },
            code: "CHAIN_ID_WRONG",
            halts: true,
        },
        Row {
            name: "extra calldata after the transfer",
            token: true,
            amount: amount_t,
            tx: token_tx(0, token, extra),
            code: "CALLDATA_FORBIDDEN",
            halts: true,
        },
        Row {
            name: "approve instead of transfer",
            token: true,
            amount: amount_t,
            tx: token_tx(0, token, erc20_approve(&dest(), amount_t.into())),
            code: "CALLDATA_FORBIDDEN",
            halts: true,
        },
        Row {
            name: "another token's contract",
            token: true,
            amount: amount_t,
            tx: token_tx(0, EthAddress([0xee; 20]), transfer(&dest(), amount_t)),
            code: "TOKEN_NOT_ALLOWED",
            halts: true,
        },
        Row {
            name: "ETH to another destination",
            token: false,
            amount: AMOUNT_WEI,
            tx: eth_tx(0, EthAddress([0xba; 20]), AMOUNT_WEI.into()),
            code: "TX_PAYS_OTHER",
            halts: true,
        },
        Row {
            name: "a nonce gap",
            token: false,
            amount: AMOUNT_WEI,
            tx: eth_tx(3, dest(), AMOUNT_WEI.into()),
            code: "NONCE_UNEXPECTED",
            halts: false,
        },
        Row {
            name: "max fee per gas above the cap",
            token: false,
            amount: AMOUNT_WEI,
            tx: Eip1559 {
                max_fee_per_gas: 201 * GWEI,
                ..eth_tx(0, dest(), AMOUNT_WEI.into())
            },
            code: "FEE_TOO_HIGH",
            halts: false,
        },
    ];
    for row in rows {
        let env = eth_env(token, 0);
        let c = customer(1, dest());
        onboard(&env, &c);
        let w = if row.token {
            token_withdrawal(&env, &c, 10, row.amount)
        } else {
            eth_withdrawal(&env, &c, 10, row.amount)
        };
        expect_refused(sign(&env, &w, &row.tx), row.code, row.halts);
        assert!(
            log_entries(&env.log_path(), "eth_signed").is_empty(),
            "{}: nothing signed",
            row.name
        );
        let refused = log_entries(&env.log_path(), "refused");
        assert_eq!(refused.len(), 1, "{}", row.name);
        assert_eq!(
            refused[0]["entry"]["request"], "sign_eth_withdrawal",
            "{}",
            row.name
        );
        if !row.halts {
            // The honest transaction for the same approval is signed afterwards.
            let honest = if row.token {
                token_tx(0, token, transfer(&dest(), row.amount))
            } else {
                eth_tx(0, dest(), row.amount.into())
            };
            expect_eth_signed(sign(&env, &w, &honest));
        }
    }
}

#[test]
fn a_replacement_must_keep_the_payment_and_a_retry_or_fee_bump_is_signed_again() {
    let env = eth_env(some_token(), 0);
    let c = customer(1, dest());
    let thief = customer(2, EthAddress([0xba; 20]));
    onboard(&env, &c);
    onboard(&env, &thief);
    let w = eth_withdrawal(&env, &c, 10, AMOUNT_WEI);
    let first = eth_tx(0, dest(), AMOUNT_WEI.into());
    let (raw, hash) = expect_eth_signed(sign(&env, &w, &first));
    assert_eq!(recover_sender(&raw), Some(hot_of(&env)));

    // A retry of the same bytes after a lost answer: the same signature, logged once.
    let again = expect_eth_signed(sign(&env, &w, &first));
    assert_eq!(again, (raw, hash));
    assert_eq!(log_entries(&env.log_path(), "eth_signed").len(), 1);

    // The fee bump of the same withdrawal: signed, without counting its amount again.
    let bumped = Eip1559 {
        max_fee_per_gas: 100 * GWEI,
        max_priority_fee_per_gas: 2 * GWEI,
        ..first.clone()
    };
    let (_, bumped_hash) = expect_eth_signed(sign(&env, &w, &bumped));
    assert_ne!(bumped_hash, hash);
    let signed = log_entries(&env.log_path(), "signed");
    assert_eq!(signed.len(), 3);
    assert_eq!(
        signed[2]["entry"]["resign"], true,
        "a fee bump re-signs the withdrawal"
    );

    // Another approved withdrawal may not take nonce 0 to another destination.
    let other = eth_withdrawal(&env, &thief, 11, AMOUNT_WEI);
    let redirect = Eip1559 {
        max_fee_per_gas: 150 * GWEI,
        max_priority_fee_per_gas: 3 * GWEI,
        ..eth_tx(0, EthAddress([0xba; 20]), AMOUNT_WEI.into())
    };
    expect_refused(sign(&env, &other, &redirect), "REPLACEMENT_INVALID", true);
    assert_eq!(log_entries(&env.log_path(), "eth_signed").len(), 2);
}

#[test]
fn an_approval_without_a_valid_proof_is_refused_before_the_transaction_is_read() {
    let env = eth_env(some_token(), 0);
    let c = customer(1, dest());
    onboard(&env, &c);
    let tx = eth_tx(0, dest(), AMOUNT_WEI.into());

    let unproved = c.withdrawal(10, AMOUNT_WEI);
    expect_refused(sign(&env, &unproved, &tx), "PROOF_MISSING", false);

    // A proof of a smaller amount presented with this one.
    let mut other_amount = eth_withdrawal(&env, &c, 11, AMOUNT_WEI - 1);
    other_amount.amount = AMOUNT_WEI.into();
    expect_refused(sign(&env, &other_amount, &tx), "PROOF_MISMATCH", true);
    assert!(log_entries(&env.log_path(), "eth_signed").is_empty());

    // A forged passkey signature (another environment: the halt above sticks).
    let env = eth_env(some_token(), 0);
    onboard(&env, &c);
    let mut forged = eth_withdrawal(&env, &c, 12, AMOUNT_WEI);
    if let Some(p) = forged.proof.as_mut() {
        if let kinko_signer_proto::protocol::ProofFactor::Passkey { signature, .. } = &mut p.factor {
            let last = signature.len() - 3;
            signature[last] ^= 0x01;
        }
    }
    let r = sign(&env, &forged, &tx);
    expect_refused(r, "PROOF_INVALID", true);

    // An address the signer never registered, and a stale proof.
    let env = eth_env(some_token(), 0);
    onboard(&env, &c);
    let mut w = c.withdrawal(13, AMOUNT_WEI);
    w.address = EthAddress([0x99; 20]).checksummed();
    w.address_id = 999;
    let w = c.with_passkey(w, env.now());
    expect_refused(
        sign(&env, &w, &eth_tx(0, EthAddress([0x99; 20]), AMOUNT_WEI.into())),
        "ADDRESS_UNKNOWN",
        false,
    );
    let stale = eth_withdrawal(&env, &c, 14, AMOUNT_WEI);
    env.advance_s(PROOF_MAX_AGE_S + 1);
    expect_refused(sign(&env, &stale, &tx), "PROOF_STALE", false);
    assert!(log_entries(&env.log_path(), "eth_signed").is_empty());
}

#[test]
fn limits_are_the_assets_own_and_a_litecoin_signer_refuses_ethereum() {
    let env = eth_env(some_token(), 0);
    let c = customer(1, dest());
    onboard(&env, &c);
    // ETH: the policy's limits, in wei.
    let w = eth_withdrawal(&env, &c, 10, PER_TX_MAX + 1);
    expect_refused(
        sign(&env, &w, &eth_tx(0, dest(), (PER_TX_MAX + 1).into())),
        "LIMIT_TX",
        false,
    );
    // The token: its own per-transaction limit, not the ETH one (which it is far above).
    let t = token_withdrawal(&env, &c, 11, TOKEN_PER_TX_MAX);
    let (raw, _) = expect_eth_signed(sign(
        &env,
        &t,
        &token_tx(0, some_token(), erc20_transfer(&dest(), TOKEN_PER_TX_MAX.into())),
    ));
    assert!(!raw.is_empty());
    let t = token_withdrawal(&env, &c, 12, TOKEN_PER_TX_MAX + 1);
    expect_refused(
        sign(
            &env,
            &t,
            &token_tx(
                1,
                some_token(),
                erc20_transfer(&dest(), (TOKEN_PER_TX_MAX + 1).into()),
            ),
        ),
        "LIMIT_TX",
        false,
    );
    // Its window: one more full transfer fits (2 × per-tx), a third does not.
    let t = token_withdrawal(&env, &c, 13, TOKEN_PER_TX_MAX);
    expect_eth_signed(sign(
        &env,
        &t,
        &token_tx(1, some_token(), erc20_transfer(&dest(), TOKEN_PER_TX_MAX.into())),
    ));
    let t = token_withdrawal(&env, &c, 14, 1);
    expect_refused(
        sign(&env, &t, &token_tx(2, some_token(), erc20_transfer(&dest(), 1))),
        "LIMIT_WINDOW",
        false,
    );
    // ETH's own window was not touched by the token.
    let w = eth_withdrawal(&env, &c, 15, PER_TX_MAX);
    expect_eth_signed(sign(&env, &w, &eth_tx(2, dest(), PER_TX_MAX.into())));

    // A Litecoin signer has no Ethereum keys.
    let ltc = Env::new();
    let c = Customer::new(1);
    ltc.onboard(&c);
    let w = c.with_passkey(c.withdrawal(10, AMOUNT_WEI), ltc.now());
    expect_refused(
        sign(&ltc, &w, &eth_tx(0, dest(), AMOUNT_WEI.into())),
        "ASSET_WRONG",
        false,
    );
}

#[test]
fn withdrawals_sweeps_and_top_ups_signed_through_the_socket_are_mined_and_survive_a_restart() {
    let anvil = Anvil::start().unwrap();
    let rpc = anvil.rpc();
    let token = anvil.deploy_test_token().unwrap();
    let mut env = eth_env(token, 0);
    let hot = hot_of(&env);
    let keys = EthKeys::new(&env.keys().master()).unwrap();
    let deposit = keys.address(Branch::Deposit, 5).unwrap();
    let c = customer(1, dest());
    onboard(&env, &c);
    rpc.set_balance(&hot, 10 * ETH).unwrap();
    let faucet = anvil.faucet().unwrap();
    for (to, data) in [
        (token, erc20_transfer(&hot, 50_000_000)),
        (token, erc20_transfer(&deposit, 9_000_000)),
    ] {
        let h = rpc.send_from_dev(&faucet, Some(&to), 0, &data).unwrap();
        anvil.mine_until_mined(&h, 1).unwrap();
    }
    let send = |raw: &[u8], hash: [u8; 32]| {
        assert_eq!(rpc.send_raw(raw).unwrap(), hash);
        assert_eq!(anvil.mine_until_mined(&hash, 1).unwrap().status, 1);
    };

    // An ETH withdrawal and a token one, from hot.
    let w = eth_withdrawal(&env, &c, 10, AMOUNT_WEI);
    let (raw, hash) = expect_eth_signed(sign(&env, &w, &eth_tx(0, dest(), AMOUNT_WEI.into())));
    send(&raw, hash);
    assert_eq!(rpc.balance(&dest(), "latest").unwrap(), u128::from(AMOUNT_WEI));
    let t = token_withdrawal(&env, &c, 11, 5_000_000);
    let tx = token_tx(1, token, erc20_transfer(&dest(), 5_000_000));
    let (raw, hash) = expect_eth_signed(sign(&env, &t, &tx));
    send(&raw, hash);
    assert_eq!(rpc.token_balance(&token, &dest(), "latest").unwrap(), 5_000_000);

    // A sweep elsewhere is a forgery (and halts); tested on its own signer below.
    // The token sweep: gas from hot to the deposit address, then the deposit pays hot.
    let gas = 80_000 * 50 * GWEI;
    let topup = Request::SignEthGasTopup {
        index: 5,
        raw_unsigned: eth_tx(2, deposit, gas).encode_unsigned(),
        journal: None,
    };
    let (raw, hash) = expect_eth_signed(env.call(&topup));
    assert_eq!(recover_sender(&raw), Some(hot));
    send(&raw, hash);
    let sweep = Request::SignEthSweep {
        index: 5,
        raw_unsigned: token_tx(0, token, erc20_transfer(&hot, 9_000_000)).encode_unsigned(),
        journal: None,
    };
    let (raw, hash) = expect_eth_signed(env.call(&sweep));
    assert_eq!(recover_sender(&raw), Some(deposit));
    send(&raw, hash);
    assert_eq!(rpc.token_balance(&token, &deposit, "latest").unwrap(), 0);
    assert_eq!(
        rpc.token_balance(&token, &hot, "latest").unwrap(),
        50_000_000 - 5_000_000 + 9_000_000
    );
    // Every signature is in the log, the sweep and the top-up too.
    let whats: Vec<String> = log_entries(&env.log_path(), "signed")
        .iter()
        .map(|e| e["entry"]["what"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(whats, ["withdrawal", "withdrawal", "gas_topup", "sweep"]);
    let keys_logged: Vec<String> = log_entries(&env.log_path(), "eth_signed")
        .iter()
        .map(|e| e["entry"]["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        keys_logged,
        [
            hot.checksummed(),
            hot.checksummed(),
            hot.checksummed(),
            deposit.checksummed()
        ]
    );

    // A restart: the nonce book is rebuilt from the log.
    env.restart();
    let w = eth_withdrawal(&env, &c, 12, AMOUNT_WEI);
    expect_refused(
        sign(&env, &w, &eth_tx(2, dest(), AMOUNT_WEI.into())),
        "REPLACEMENT_INVALID",
        true,
    );
}

#[test]
fn a_sweep_or_top_up_that_pays_anyone_else_is_refused_and_halts() {
    let token = some_token();
    let thief = EthAddress([0x7f; 20]);
    let rows: Vec<(&str, Request, &str, bool)> = vec![
        (
            "ETH swept elsewhere",
            Request::SignEthSweep {
                index: 5,
                raw_unsigned: eth_tx(0, thief, ETH).encode_unsigned(),
                journal: None,
            },
            "TX_PAYS_OTHER",
            true,
        ),
        (
            "token swept elsewhere",
            Request::SignEthSweep {
                index: 5,
                raw_unsigned: token_tx(0, token, erc20_transfer(&thief, 9)).encode_unsigned(),
                journal: None,
            },
            "TX_PAYS_OTHER",
            true,
        ),
        (
            "approve from a deposit address",
            Request::SignEthSweep {
                index: 5,
                raw_unsigned: token_tx(0, token, erc20_approve(&thief, 9)).encode_unsigned(),
                journal: None,
            },
            "CALLDATA_FORBIDDEN",
            true,
        ),
        (
            "a top-up to someone else's address",
            Request::SignEthGasTopup {
                index: 5,
                raw_unsigned: eth_tx(0, thief, GWEI).encode_unsigned(),
                journal: None,
            },
            "TX_PAYS_OTHER",
            true,
        ),
        (
            "a top-up above the fee cap",
            Request::SignEthGasTopup {
                index: 5,
                raw_unsigned: eth_tx(0, thief, ETH).encode_unsigned(),
                journal: None,
            },
            "FEE_TOO_HIGH",
            false,
        ),
    ];
    for (name, req, code, halts) in rows {
        let env = eth_env(token, 0);
        expect_refused(env.call(&req), code, halts);
        assert!(
            log_entries(&env.log_path(), "eth_signed").is_empty(),
            "{name}: nothing signed"
        );
        assert_eq!(
            log_entries(&env.log_path(), "refused")[0]["entry"]["request"],
            req.kind(),
            "{name}"
        );
    }
}

#[test]
fn the_start_nonce_is_where_the_hot_key_begins() {
    let env = eth_env(some_token(), 7);
    let c = customer(1, dest());
    onboard(&env, &c);
    let w = eth_withdrawal(&env, &c, 10, AMOUNT_WEI);
    expect_refused(
        sign(&env, &w, &eth_tx(0, dest(), AMOUNT_WEI.into())),
        "NONCE_UNEXPECTED",
        false,
    );
    expect_eth_signed(sign(&env, &w, &eth_tx(7, dest(), AMOUNT_WEI.into())));
}
