//! Hot ↔ cold through the signer's socket (docs/design/ethereum.md, "Cold setup", attack table):
//! root on the exchange host can send the signer anything, yet a hot → cold transfer pays only
//! the cold contract of the signer's own configuration and a refill's `execute` only the
//! signer's own hot address; every forgery keeps its code, halts, and nothing is signed. The
//! honest ones are signed and logged before the answer; a keyholder's offline signature
//! recovers to its owner address.

use super::eth::{eth_tx, token_tx, ETH, GWEI};
use super::harness::*;
use kinko_chain::eth::anvil::CHAIN_ID;
use kinko_chain::eth::cold::{execute_calldata, recover, EthRefill, REFILL_KIND};
use kinko_chain::eth::{erc20_approve, erc20_transfer, Branch, Eip1559, EthAddress};
use kinko_signer::eth::{recover_sender, EthKeys};
use kinko_signer_proto::protocol::{Request, Response};

fn token() -> EthAddress {
    EthAddress([0xcc; 20])
}

fn cold() -> EthAddress {
    EthAddress([0xc0; 20])
}

fn thief() -> EthAddress {
    EthAddress([0xba; 20])
}

/// An Ethereum signer with the token allowlisted and, if `cold` is set, `cold_contract`.
fn env_with(cold: Option<EthAddress>) -> Env {
    Env::edited(move |t| {
        let cold_line = cold.map_or(String::new(), |c| {
            format!("cold_contract = \"{}\"\n", c.checksummed())
        });
        format!(
            "{}\n[eth]\nchain_id = {CHAIN_ID}\ngas_limit_max = 200000\n{cold_line}\
             [[eth.tokens]]\nasset_id = 2\ncontract = \"{}\"\nper_tx_max = 100000000\nwindow_max = 200000000\n",
            t.replace("asset = \"LTC\"", "asset = \"ETH\""),
            token().checksummed(),
        )
    })
}

fn hot_of(env: &Env) -> EthAddress {
    EthKeys::new(&env.keys().master())
        .unwrap()
        .address(Branch::Hot, 0)
        .unwrap()
}

fn cold_sweep(env: &Env, tx: &Eip1559) -> Response {
    env.call(&Request::SignEthColdSweep {
        raw_unsigned: tx.encode_unsigned(),
        journal: None,
    })
}

fn refill(env: &Env, tx: &Eip1559) -> Response {
    env.call(&Request::SignEthRefill {
        raw_unsigned: tx.encode_unsigned(),
        journal: None,
    })
}

/// An `execute` on `to_contract` whose inner call is (`to`, `value`, `data`), from hot at nonce 0.
fn execute_tx(to_contract: EthAddress, to: EthAddress, value: u128, data: &[u8]) -> Eip1559 {
    Eip1559 {
        gas_limit: kinko_chain::eth::cold::EXECUTE_GAS,
        data: execute_calldata(&to, value, data, &[[1u8; 65], [2u8; 65]]),
        ..eth_tx(0, to_contract, 0)
    }
}

#[track_caller]
fn expect_eth_signed(r: Response) -> Vec<u8> {
    match r {
        Response::EthSigned { raw, .. } => raw,
        other => panic!("expected eth_signed, got {other:?}"),
    }
}

enum Kind {
    Sweep,
    Refill,
}

#[test]
fn root_on_the_host_gets_no_cold_transfer_or_refill_that_pays_elsewhere() {
    // `hot` is only known once a signer runs: rows take it as an argument.
    type Build = Box<dyn Fn(EthAddress) -> Eip1559>;
    let rows: Vec<(&str, Kind, Build, &str, bool)> = vec![
        (
            "hot → cold: ETH to another address",
            Kind::Sweep,
            Box::new(|_| eth_tx(0, thief(), ETH)),
            "TX_PAYS_OTHER",
            true,
        ),
        (
            "hot → cold: the token transferred to another address",
            Kind::Sweep,
            Box::new(|_| token_tx(0, token(), erc20_transfer(&thief(), 5))),
            "TX_PAYS_OTHER",
            true,
        ),
        (
            "hot → cold: approve the cold address (or anyone)",
            Kind::Sweep,
            Box::new(|_| token_tx(0, token(), erc20_approve(&cold(), 5))),
            "CALLDATA_FORBIDDEN",
            true,
        ),
        (
            "hot → cold: a call on the cold contract (calldata read as a token's)",
            Kind::Sweep,
            Box::new(|_| Eip1559 {
                data: vec![1, 2, 3, 4],
                ..eth_tx(0, cold(), ETH)
            }),
            "TOKEN_NOT_ALLOWED",
            true,
        ),
        (
            "hot → cold: a token not on the allowlist",
            Kind::Sweep,
            Box::new(|_| token_tx(0, EthAddress([0xee; 20]), erc20_transfer(&cold(), 5))),
            "TOKEN_NOT_ALLOWED",
            true,
        ),
        (
            "hot → cold: another chain",
            Kind::Sweep,
            Box::new(|_| Eip1559 {
                chain_id: 1,
                ..eth_tx(0, cold(), ETH)
            }),
            "CHAIN_ID_WRONG",
            true,
        ),
        (
            "refill: execute paying ETH to another address",
            Kind::Refill,
            Box::new(|_| execute_tx(cold(), thief(), ETH, &[])),
            "TX_PAYS_OTHER",
            true,
        ),
        (
            "refill: execute transferring the token to another address",
            Kind::Refill,
            Box::new(|_| execute_tx(cold(), token(), 0, &erc20_transfer(&thief(), 5))),
            "TX_PAYS_OTHER",
            true,
        ),
        (
            "refill: execute calling the token's approve for hot",
            Kind::Refill,
            Box::new(|hot| execute_tx(cold(), token(), 0, &erc20_approve(&hot, 5))),
            "TX_PAYS_OTHER",
            true,
        ),
        (
            "refill: execute paying hot with calldata (a call on hot)",
            Kind::Refill,
            Box::new(|hot| execute_tx(cold(), hot, ETH, &[0xde, 0xad, 0xbe, 0xef])),
            "TX_PAYS_OTHER",
            true,
        ),
        (
            "refill: the same execute on another contract",
            Kind::Refill,
            Box::new(|hot| execute_tx(EthAddress([0x55; 20]), hot, ETH, &[])),
            "TX_PAYS_OTHER",
            true,
        ),
        (
            "refill: not an execute (a token transfer from hot to itself)",
            Kind::Refill,
            Box::new(|hot| Eip1559 {
                data: erc20_transfer(&hot, 5),
                ..eth_tx(0, cold(), 0)
            }),
            "CALLDATA_FORBIDDEN",
            true,
        ),
        (
            "refill: ETH sent along with the execute",
            Kind::Refill,
            Box::new(|hot| Eip1559 {
                value: 1,
                ..execute_tx(cold(), hot, ETH, &[])
            }),
            "CALLDATA_FORBIDDEN",
            true,
        ),
        (
            "refill: a token not on the allowlist to hot",
            Kind::Refill,
            Box::new(|hot| execute_tx(cold(), EthAddress([0xee; 20]), 0, &erc20_transfer(&hot, 5))),
            "TOKEN_NOT_ALLOWED",
            true,
        ),
        (
            "refill: gas above the cap",
            Kind::Refill,
            Box::new(|hot| Eip1559 {
                max_fee_per_gas: 300 * GWEI,
                ..execute_tx(cold(), hot, ETH, &[])
            }),
            "FEE_TOO_HIGH",
            false,
        ),
    ];
    for (name, kind, build, code, halts) in rows {
        let env = env_with(Some(cold()));
        let tx = build(hot_of(&env));
        let r = match kind {
            Kind::Sweep => cold_sweep(&env, &tx),
            Kind::Refill => refill(&env, &tx),
        };
        match &r {
            Response::Refused { code: c, halted, .. } if c == code && *halted == halts => {}
            other => panic!("{name}: expected {code} (halted {halts}), got {other:?}"),
        }
        assert!(
            log_entries(&env.log_path(), "eth_signed").is_empty(),
            "{name}: nothing signed"
        );
    }

    // Without a cold contract in the signer's own configuration, nothing cold is signed.
    let env = env_with(None);
    expect_refused(
        cold_sweep(&env, &eth_tx(0, cold(), ETH)),
        "SWEEP_UNCONFIGURED",
        false,
    );
    let hot = hot_of(&env);
    expect_refused(
        refill(&env, &execute_tx(cold(), hot, ETH, &[])),
        "SWEEP_UNCONFIGURED",
        false,
    );
}

#[test]
fn honest_cold_transfers_and_refills_are_signed_logged_and_share_the_hot_nonces() {
    let env = env_with(Some(cold()));
    let hot = hot_of(&env);
    let raw = expect_eth_signed(cold_sweep(
        &env,
        &Eip1559 {
            gas_limit: 40_000,
            ..eth_tx(0, cold(), 3 * ETH)
        },
    ));
    assert_eq!(recover_sender(&raw), Some(hot));
    expect_eth_signed(cold_sweep(
        &env,
        &token_tx(1, token(), erc20_transfer(&cold(), 7)),
    ));
    let refill_tx = Eip1559 {
        nonce: 2,
        ..execute_tx(cold(), hot, ETH, &[])
    };
    expect_eth_signed(refill(&env, &refill_tx));
    let token_refill = Eip1559 {
        nonce: 3,
        ..execute_tx(cold(), token(), 0, &erc20_transfer(&hot, 9))
    };
    expect_eth_signed(refill(&env, &token_refill));
    let signed = log_entries(&env.log_path(), "signed");
    let whats: Vec<&str> = signed
        .iter()
        .map(|s| s["entry"]["what"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(whats, ["cold_sweep", "cold_sweep", "refill", "refill"]);
    assert_eq!(log_entries(&env.log_path(), "eth_signed").len(), 4);
    // The nonce book is the hot key's, rebuilt from the log after a restart: a refill at a
    // used nonce to another amount is a replacement that changes the payment.
    let mut env = env;
    env.restart();
    let other = Eip1559 {
        nonce: 2,
        max_fee_per_gas: 60 * GWEI,
        max_priority_fee_per_gas: 2 * GWEI,
        ..execute_tx(cold(), hot, 2 * ETH, &[])
    };
    expect_refused(refill(&env, &other), "REPLACEMENT_INVALID", true);
}

#[test]
fn a_keyholder_signs_the_digest_it_recomputes_and_only_as_an_owner() {
    use kinko_signer::eth_cold::{OwnerError, OwnerKey};
    let master =
        |seed: u8| bitcoin::bip32::Xpriv::new_master(bitcoin::NetworkKind::Test, &[seed; 32]).unwrap();
    let a = OwnerKey::new(&master(1)).unwrap();
    let b = OwnerKey::new(&master(2)).unwrap();
    let stranger = OwnerKey::new(&master(3)).unwrap();
    let hot = EthAddress([0x40; 20]);
    let call = kinko_chain::eth::cold::RefillCall {
        chain_id: CHAIN_ID,
        contract: cold(),
        nonce: 4,
        to: hot,
        value: ETH,
        data: Vec::new(),
    };
    let mut request = EthRefill {
        kind: REFILL_KIND.into(),
        asset: "ETH".into(),
        amount: ETH.to_string(),
        chain_id: CHAIN_ID,
        contract: cold().checksummed(),
        nonce: 4,
        to: hot.checksummed(),
        value: ETH.to_string(),
        data: String::new(),
        digest: hex::encode(call.digest()),
        owners: vec![a.address().checksummed(), b.address().checksummed()],
        threshold: 2,
        signatures: Vec::new(),
    };
    let s = a.sign_refill(&request).unwrap();
    let mut sig = [0u8; 65];
    hex::decode_to_slice(&s.signature, &mut sig).unwrap();
    assert_eq!(recover(&call.digest(), &sig), Some(a.address()));
    request.signatures.push(s);
    assert!(matches!(a.sign_refill(&request), Err(OwnerError::Duplicate)));
    assert!(matches!(
        stranger.sign_refill(&request),
        Err(OwnerError::NotOwner(_))
    ));
    // A file whose stated digest is not its fields' (the keyholder is shown the fields).
    let mut lying = request.clone();
    lying.value = (2 * ETH).to_string();
    assert!(matches!(b.sign_refill(&lying), Err(OwnerError::File(_))));
    b.sign_refill(&request).unwrap();
}
