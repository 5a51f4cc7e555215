//! The signer's reading of Ethereum transactions: the attack table (one row per way custody,
//! or whoever controls the host, could try to make the signer sign something else than what
//! was approved), and signed transactions accepted and mined by a real Anvil node.

use bitcoin::bip32::Xpriv;
use bitcoin::NetworkKind;
use kinko_chain::eth::anvil::{Anvil, CHAIN_ID};
use kinko_chain::eth::{erc20_approve, erc20_transfer, Eip1559, EthAddress};
use kinko_signer::eth::{recover_sender, EthPolicy, EthSigner, Intent, NonceBook, Payment};
use kinko_signer::policy::Code;

pub const GWEI: u128 = 1_000_000_000;
pub const ETH: u128 = 1_000_000_000_000_000_000;

fn master() -> Xpriv {
    Xpriv::new_master(NetworkKind::Test, &[7u8; 32]).unwrap()
}

fn usdc() -> EthAddress {
    EthAddress([0xcc; 20])
}

fn policy(tokens: Vec<EthAddress>) -> EthPolicy {
    EthPolicy {
        chain_id: CHAIN_ID,
        tokens,
        max_fee_per_gas_max: 200 * GWEI,
        priority_fee_max: 10 * GWEI,
        gas_limit_max: 100_000,
        fee_max_wei: 100_000 * 200 * GWEI,
    }
}

fn signer(tokens: Vec<EthAddress>) -> EthSigner {
    EthSigner::new(policy(tokens), &master(), NonceBook::default()).unwrap()
}

fn dest() -> EthAddress {
    EthAddress([0xde; 20])
}

pub fn eth_tx(nonce: u64, to: EthAddress, value: u128) -> Eip1559 {
    Eip1559 {
        chain_id: CHAIN_ID,
        nonce,
        max_priority_fee_per_gas: GWEI,
        max_fee_per_gas: 50 * GWEI,
        gas_limit: 21_000,
        to,
        value,
        data: Vec::new(),
    }
}

pub fn token_tx(nonce: u64, token: EthAddress, data: Vec<u8>) -> Eip1559 {
    Eip1559 {
        gas_limit: 80_000,
        data,
        ..eth_tx(nonce, token, 0)
    }
}

fn eth_intent(amount: u128) -> Intent {
    Intent {
        payment: Payment::Ether,
        destination: dest(),
        amount,
    }
}

fn token_intent(amount: u128) -> Intent {
    Intent {
        payment: Payment::Token(usdc()),
        destination: dest(),
        amount,
    }
}

/// One attack: what custody claims was approved, the bytes it hands over, the code expected.
struct Row {
    name: &'static str,
    intent: Intent,
    raw: Vec<u8>,
    code: Code,
    code_str: &'static str,
}

#[test]
fn the_attack_table_every_forgery_is_refused_with_its_code_and_nothing_is_signed() {
    let mut other_calldata = erc20_transfer(&dest(), 5_000_000);
    other_calldata.extend_from_slice(&[0u8; 32]);
    let mut ether_with_data = eth_tx(0, dest(), ETH);
    ether_with_data.data = vec![0xde, 0xad, 0xbe, 0xef];
    let mut token_with_value = token_tx(0, usdc(), erc20_transfer(&dest(), 5_000_000));
    token_with_value.value = 1;
    let mut fee_above_cap = eth_tx(0, dest(), ETH);
    fee_above_cap.max_fee_per_gas = 201 * GWEI;
    let mut priority_above_cap = eth_tx(0, dest(), ETH);
    priority_above_cap.max_priority_fee_per_gas = 11 * GWEI;
    let mut gas_above_cap = token_tx(0, usdc(), erc20_transfer(&dest(), 5_000_000));
    gas_above_cap.gas_limit = 100_001;
    let mut wrong_chain = eth_tx(0, dest(), ETH);
    wrong_chain.chain_id = 1;
    let mut priority_over_max = eth_tx(0, dest(), ETH);
    priority_over_max.max_priority_fee_per_gas = 60 * GWEI;
    let another_token = EthAddress([0xee; 20]);
    let mut huge = erc20_transfer(&dest(), 5_000_000);
    huge[36] = 1;
    let rows = vec![
        Row {
            name: "wrong chain id (a replay on mainnet)",
            intent: eth_intent(ETH),
            raw: wrong_chain.encode_unsigned(),
            code: Code::ChainIdWrong,
            code_str: "CHAIN_ID_WRONG",
        },
        Row {
            name: "extra calldata on a token transfer",
            intent: token_intent(5_000_000),
            raw: token_tx(0, usdc(), other_calldata).encode_unsigned(),
            code: Code::CalldataForbidden,
            code_str: "CALLDATA_FORBIDDEN",
        },
        Row {
            name: "calldata on an ETH payment",
            intent: eth_intent(ETH),
            raw: ether_with_data.encode_unsigned(),
            code: Code::CalldataForbidden,
            code_str: "CALLDATA_FORBIDDEN",
        },
        Row {
            name: "approve instead of transfer",
            intent: token_intent(5_000_000),
            raw: token_tx(0, usdc(), erc20_approve(&dest(), 5_000_000)).encode_unsigned(),
            code: Code::CalldataForbidden,
            code_str: "CALLDATA_FORBIDDEN",
        },
        Row {
            name: "ETH sent along with the token call",
            intent: token_intent(5_000_000),
            raw: token_with_value.encode_unsigned(),
            code: Code::CalldataForbidden,
            code_str: "CALLDATA_FORBIDDEN",
        },
        Row {
            name: "another token's contract",
            intent: token_intent(5_000_000),
            raw: token_tx(0, another_token, erc20_transfer(&dest(), 5_000_000)).encode_unsigned(),
            code: Code::TokenNotAllowed,
            code_str: "TOKEN_NOT_ALLOWED",
        },
        Row {
            name: "an approval naming a token off the allowlist",
            intent: Intent {
                payment: Payment::Token(another_token),
                destination: dest(),
                amount: 5_000_000,
            },
            raw: token_tx(0, another_token, erc20_transfer(&dest(), 5_000_000)).encode_unsigned(),
            code: Code::TokenNotAllowed,
            code_str: "TOKEN_NOT_ALLOWED",
        },
        Row {
            name: "ETH to another destination",
            intent: eth_intent(ETH),
            raw: eth_tx(0, EthAddress([0xba; 20]), ETH).encode_unsigned(),
            code: Code::TxPaysOther,
            code_str: "TX_PAYS_OTHER",
        },
        Row {
            name: "ETH, one wei more",
            intent: eth_intent(ETH),
            raw: eth_tx(0, dest(), ETH + 1).encode_unsigned(),
            code: Code::TxPaysOther,
            code_str: "TX_PAYS_OTHER",
        },
        Row {
            name: "token transfer to another recipient",
            intent: token_intent(5_000_000),
            raw: token_tx(0, usdc(), erc20_transfer(&EthAddress([0xba; 20]), 5_000_000)).encode_unsigned(),
            code: Code::TxPaysOther,
            code_str: "TX_PAYS_OTHER",
        },
        Row {
            name: "token amount beyond u128",
            intent: token_intent(5_000_000),
            raw: token_tx(0, usdc(), huge).encode_unsigned(),
            code: Code::TxPaysOther,
            code_str: "TX_PAYS_OTHER",
        },
        Row {
            name: "a nonce gap",
            intent: eth_intent(ETH),
            raw: eth_tx(5, dest(), ETH).encode_unsigned(),
            code: Code::NonceUnexpected,
            code_str: "NONCE_UNEXPECTED",
        },
        Row {
            name: "max fee per gas above the cap",
            intent: eth_intent(ETH),
            raw: fee_above_cap.encode_unsigned(),
            code: Code::FeeTooHigh,
            code_str: "FEE_TOO_HIGH",
        },
        Row {
            name: "priority fee above the cap",
            intent: eth_intent(ETH),
            raw: priority_above_cap.encode_unsigned(),
            code: Code::FeeTooHigh,
            code_str: "FEE_TOO_HIGH",
        },
        Row {
            name: "gas limit above the cap",
            intent: token_intent(5_000_000),
            raw: gas_above_cap.encode_unsigned(),
            code: Code::FeeTooHigh,
            code_str: "FEE_TOO_HIGH",
        },
        Row {
            name: "priority fee above its own fee cap",
            intent: eth_intent(ETH),
            raw: priority_over_max.encode_unsigned(),
            code: Code::EthTxMalformed,
            code_str: "ETH_TX_MALFORMED",
        },
        Row {
            name: "not a transaction",
            intent: eth_intent(ETH),
            raw: vec![0x02, 0xc0],
            code: Code::EthTxMalformed,
            code_str: "ETH_TX_MALFORMED",
        },
        Row {
            name: "a legacy (type 0) transaction",
            intent: eth_intent(ETH),
            raw: {
                let mut r = eth_tx(0, dest(), ETH).encode_unsigned();
                r.remove(0);
                r
            },
            code: Code::EthTxMalformed,
            code_str: "ETH_TX_MALFORMED",
        },
    ];
    for row in rows {
        let mut s = signer(vec![usdc()]);
        let err = s.sign_withdrawal(&row.intent, &row.raw).expect_err(row.name);
        assert_eq!(err.code, row.code, "{}: {}", row.name, err.reason);
        assert_eq!(err.code.as_str(), row.code_str, "{}", row.name);
        let tamper = matches!(
            row.code,
            Code::ChainIdWrong | Code::CalldataForbidden | Code::TokenNotAllowed | Code::TxPaysOther
        );
        assert_eq!(
            err.code.tamper(),
            tamper,
            "{}: halts signing iff it is a forgery",
            row.name
        );
        assert_eq!(s.book.expected(&s.hot()), 0, "{}: nothing recorded", row.name);
        // The same signer still signs the honest transaction afterwards.
        let honest = match row.intent.payment {
            Payment::Ether => eth_tx(0, dest(), row.intent.amount),
            Payment::Token(t) => token_tx(0, t, erc20_transfer(&dest(), row.intent.amount)),
        };
        if row.code != Code::TokenNotAllowed || row.intent.payment == Payment::Token(usdc()) {
            s.sign_withdrawal(&row.intent, &honest.encode_unsigned())
                .unwrap_or_else(|e| panic!("{}: honest transaction refused: {e:?}", row.name));
        }
    }
}

#[test]
fn replacements_keep_the_payment_and_raise_both_fees() {
    let mut s = signer(vec![usdc()]);
    let first = eth_tx(0, dest(), ETH);
    let (c, _) = s
        .sign_withdrawal(&eth_intent(ETH), &first.encode_unsigned())
        .unwrap();
    assert!(!c.replacement && !c.resign);
    assert_eq!(s.book.expected(&s.hot()), 1);

    // The same bytes again (a retry after a lost answer): signed again, not a replacement.
    let (c, _) = s
        .sign_withdrawal(&eth_intent(ETH), &first.encode_unsigned())
        .unwrap();
    assert!(c.resign && !c.replacement);

    // A replacement that changes the destination (custody claims another approval).
    let mut redirect = eth_tx(0, EthAddress([0xba; 20]), ETH);
    redirect.max_fee_per_gas = 100 * GWEI;
    redirect.max_priority_fee_per_gas = 2 * GWEI;
    let other = Intent {
        destination: EthAddress([0xba; 20]),
        ..eth_intent(ETH)
    };
    let err = s
        .sign_withdrawal(&other, &redirect.encode_unsigned())
        .unwrap_err();
    assert_eq!(err.code, Code::ReplacementInvalid, "{}", err.reason);
    assert_eq!(err.code.as_str(), "REPLACEMENT_INVALID");
    assert!(err.code.tamper());

    // A replacement that changes the amount.
    let mut more = eth_tx(0, dest(), 2 * ETH);
    more.max_fee_per_gas = 100 * GWEI;
    more.max_priority_fee_per_gas = 2 * GWEI;
    let err = s
        .sign_withdrawal(&eth_intent(2 * ETH), &more.encode_unsigned())
        .unwrap_err();
    assert_eq!(err.code, Code::ReplacementInvalid);

    // Same payment, only one fee raised: refused.
    let mut one_fee = first.clone();
    one_fee.max_fee_per_gas = 100 * GWEI;
    let err = s
        .sign_withdrawal(&eth_intent(ETH), &one_fee.encode_unsigned())
        .unwrap_err();
    assert_eq!(err.code, Code::ReplacementInvalid);

    // Same payment, both fees higher: signed, as a replacement.
    let mut bumped = first.clone();
    bumped.max_fee_per_gas = 100 * GWEI;
    bumped.max_priority_fee_per_gas = 2 * GWEI;
    let (c, _) = s
        .sign_withdrawal(&eth_intent(ETH), &bumped.encode_unsigned())
        .unwrap();
    assert!(c.replacement);
    // The bar is now the replacement's fees.
    let err = s
        .sign_withdrawal(&eth_intent(ETH), &one_fee.encode_unsigned())
        .unwrap_err();
    assert_eq!(err.code, Code::ReplacementInvalid);
    assert_eq!(s.book.expected(&s.hot()), 1);

    // A nonce before any the signer signed (the key's history before it) is a gap, not a
    // replacement.
    let mut book = NonceBook::default();
    let hot = s.hot();
    book.set_start(hot, 10);
    let mut late = EthSigner::new(policy(vec![usdc()]), &master(), book).unwrap();
    let err = late
        .sign_withdrawal(&eth_intent(ETH), &eth_tx(9, dest(), ETH).encode_unsigned())
        .unwrap_err();
    assert_eq!(err.code, Code::NonceUnexpected);
    late.sign_withdrawal(&eth_intent(ETH), &eth_tx(10, dest(), ETH).encode_unsigned())
        .unwrap();
}

#[test]
fn signed_withdrawals_and_a_replacement_are_mined_by_a_real_node() {
    let anvil = Anvil::start().unwrap();
    let rpc = anvil.rpc();
    let token = anvil.deploy_test_token().unwrap();
    let mut s = signer(vec![token]);
    let hot = s.hot();
    rpc.set_balance(&hot, 10 * ETH).unwrap();
    let faucet = anvil.faucet().unwrap();
    let fund = rpc
        .send_from_dev(&faucet, Some(&token), 0, &erc20_transfer(&hot, 50_000_000))
        .unwrap();
    anvil.mine_until_mined(&fund, 2).unwrap();

    // ETH.
    let (_, signed) = s
        .sign_withdrawal(&eth_intent(ETH), &eth_tx(0, dest(), ETH).encode_unsigned())
        .unwrap();
    assert_eq!(recover_sender(&signed.raw), Some(hot));
    assert_eq!(rpc.send_raw(&signed.raw).unwrap(), signed.hash);
    let r = anvil.mine_until_mined(&signed.hash, 2).unwrap();
    assert_eq!(r.status, 1);
    assert_eq!(rpc.balance(&dest(), "latest").unwrap(), ETH);

    // The token.
    let intent = Intent {
        payment: Payment::Token(token),
        destination: dest(),
        amount: 5_000_000,
    };
    let (_, signed) = s
        .sign_withdrawal(
            &intent,
            &token_tx(1, token, erc20_transfer(&dest(), 5_000_000)).encode_unsigned(),
        )
        .unwrap();
    rpc.send_raw(&signed.raw).unwrap();
    let r = anvil.mine_until_mined(&signed.hash, 2).unwrap();
    assert_eq!(r.status, 1);
    assert_eq!(rpc.token_balance(&token, &dest(), "latest").unwrap(), 5_000_000);
    assert_eq!(rpc.token_balance(&token, &hot, "latest").unwrap(), 45_000_000);

    // A stuck transaction replaced by one with higher fees: only the replacement is mined.
    let stuck = eth_tx(2, dest(), ETH / 2);
    let (_, a) = s
        .sign_withdrawal(&eth_intent(ETH / 2), &stuck.encode_unsigned())
        .unwrap();
    rpc.send_raw(&a.raw).unwrap();
    let mut bumped = stuck;
    bumped.max_fee_per_gas *= 2;
    bumped.max_priority_fee_per_gas *= 2;
    let (c, b) = s
        .sign_withdrawal(&eth_intent(ETH / 2), &bumped.encode_unsigned())
        .unwrap();
    assert!(c.replacement);
    rpc.send_raw(&b.raw).unwrap();
    let r = anvil.mine_until_mined(&b.hash, 2).unwrap();
    assert_eq!(r.status, 1);
    assert_eq!(
        rpc.receipt(&a.hash).unwrap(),
        None,
        "the replaced transaction is gone"
    );
    assert_eq!(rpc.balance(&dest(), "latest").unwrap(), ETH + ETH / 2);
    assert_eq!(rpc.nonce(&hot, "latest").unwrap(), 3);
    assert_eq!(s.book.expected(&hot), 3);
}

#[test]
fn keys_come_from_the_encrypted_keystore_and_the_nonce_book_from_the_log() {
    use kinko_signer::keystore::{KdfParams, Keystore, Role};
    use kinko_signer::log::Log;
    use kinko_signer::registry::Registry;
    let dir = tempfile::tempdir().unwrap();
    let ks_path = dir.path().join("hot.keystore");
    let passphrase = "correct horse battery staple";
    Keystore::create_with(
        &ks_path,
        kinko_chain::Network::LitecoinRegtest,
        Role::Hot,
        passphrase,
        KdfParams::TEST_FAST,
    )
    .unwrap();
    // Nothing of the seed is readable in the file.
    let at_rest = std::fs::read(&ks_path).unwrap();
    let unlocked = Keystore::open_with(&ks_path, passphrase, true).unwrap();
    let log_path = dir.path().join("signer.log");
    let hot;
    {
        let mut opened = Log::open(&log_path).unwrap();
        let mut s = EthSigner::new(policy(vec![usdc()]), &unlocked.master(), NonceBook::default()).unwrap();
        hot = s.hot();
        let secret = unlocked.master().private_key.secret_bytes();
        assert!(
            !at_rest.windows(32).any(|w| w == secret),
            "the keystore holds no key in clear"
        );
        s.sign_withdrawal_logged(
            &mut opened.log,
            1,
            &eth_intent(ETH),
            &eth_tx(0, dest(), ETH).encode_unsigned(),
        )
        .unwrap();
        s.sign_withdrawal_logged(
            &mut opened.log,
            2,
            &token_intent(7),
            &token_tx(1, usdc(), erc20_transfer(&dest(), 7)).encode_unsigned(),
        )
        .unwrap();
    }
    // A restart: the registry rebuilt from the log knows both nonces and what they paid.
    let opened = Log::open(&log_path).unwrap();
    let mut reg = Registry::default();
    for line in &opened.lines {
        reg.apply_line(line, &[0u8; 32]).unwrap();
    }
    assert_eq!(reg.eth.expected(&hot), 2);
    let unlocked = Keystore::open_with(&ks_path, passphrase, true).unwrap();
    let mut s = EthSigner::new(policy(vec![usdc()]), &unlocked.master(), reg.eth.clone()).unwrap();
    assert_eq!(s.hot(), hot, "the same key from the same keystore");
    // Nonce 0 again with another destination: a replacement that changes the payment.
    let mut redirect = eth_tx(0, EthAddress([0xba; 20]), ETH);
    redirect.max_fee_per_gas *= 2;
    redirect.max_priority_fee_per_gas *= 2;
    let other = Intent {
        destination: EthAddress([0xba; 20]),
        ..eth_intent(ETH)
    };
    let err = s
        .sign_withdrawal(&other, &redirect.encode_unsigned())
        .unwrap_err();
    assert_eq!(err.code, Code::ReplacementInvalid);
    // The token transfer at nonce 1 may be replaced with higher fees, not changed.
    let mut bumped = token_tx(1, usdc(), erc20_transfer(&dest(), 7));
    bumped.max_fee_per_gas *= 2;
    bumped.max_priority_fee_per_gas *= 2;
    assert!(
        s.sign_withdrawal(&token_intent(7), &bumped.encode_unsigned())
            .unwrap()
            .0
            .replacement
    );
    let err = s
        .sign_withdrawal(&eth_intent(ETH), &eth_tx(3, dest(), ETH).encode_unsigned())
        .unwrap_err();
    assert_eq!(err.code, Code::NonceUnexpected, "a gap after the logged nonces");
}

#[test]
fn the_signer_never_prints_its_key() {
    use std::str::FromStr;
    let s = signer(vec![usdc()]);
    let text = format!("{s:?} {:?}", kinko_signer::eth::EthKeys::new(&master()).unwrap());
    let path = bitcoin::bip32::DerivationPath::from_str("m/44'/60'/0'/0/0").unwrap();
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let hot = master()
        .derive_priv(&secp, &path)
        .unwrap()
        .private_key
        .secret_bytes();
    assert_eq!(
        EthAddress::from_pubkey(&bitcoin::secp256k1::PublicKey::from_secret_key(
            &secp,
            &bitcoin::secp256k1::SecretKey::from_slice(&hot).unwrap()
        )),
        s.hot(),
        "this is the hot key"
    );
    assert!(!text.contains(&hex::encode(hot)), "{text}");
    assert!(
        !text.contains(&format!("{:?}", &hot[..4]).trim_end_matches(']').to_string()),
        "{text}"
    );
}

#[test]
fn sweeps_pay_only_our_hot_address_and_are_mined() {
    let anvil = Anvil::start().unwrap();
    let rpc = anvil.rpc();
    let token = anvil.deploy_test_token().unwrap();
    let mut s = signer(vec![token]);
    let hot = s.hot();
    let keys = kinko_signer::eth::EthKeys::new(&master()).unwrap();
    let deposit = keys.address(kinko_chain::eth::Branch::Deposit, 5).unwrap();
    let faucet = anvil.faucet().unwrap();
    let paid = rpc.send_from_dev(&faucet, Some(&deposit), 2 * ETH, &[]).unwrap();
    let t = rpc
        .send_from_dev(&faucet, Some(&token), 0, &erc20_transfer(&deposit, 9_000_000))
        .unwrap();
    anvil.mine_until_mined(&paid, 1).unwrap();
    anvil.mine_until_mined(&t, 1).unwrap();

    // Forgeries: another destination, a token transfer elsewhere, an approve, another token.
    let thief = EthAddress([0x7f; 20]);
    let rows: Vec<(&str, Eip1559, Code)> = vec![
        ("ETH swept elsewhere", eth_tx(0, thief, ETH), Code::TxPaysOther),
        (
            "token swept elsewhere",
            token_tx(0, token, erc20_transfer(&thief, 9_000_000)),
            Code::TxPaysOther,
        ),
        (
            "approve from a deposit address",
            token_tx(0, token, erc20_approve(&thief, 9_000_000)),
            Code::CalldataForbidden,
        ),
        (
            "another token",
            token_tx(0, usdc(), erc20_transfer(&hot, 1)),
            Code::TokenNotAllowed,
        ),
        (
            "wrong chain",
            Eip1559 {
                chain_id: 1,
                ..eth_tx(0, hot, ETH)
            },
            Code::ChainIdWrong,
        ),
    ];
    for (name, tx, code) in rows {
        let err = s.sign_sweep(5, &tx.encode_unsigned()).expect_err(name);
        assert_eq!(err.code, code, "{name}: {}", err.reason);
    }
    // A gas top-up above the cap is refused; one within it pays our deposit address.
    let err = s
        .sign_gas_topup(5, &eth_tx(0, deposit, 100_000 * 200 * GWEI + 1).encode_unsigned())
        .unwrap_err();
    assert_eq!(err.code, Code::FeeTooHigh);

    // The ETH sweep: everything but the gas, to hot.
    rpc.set_balance(&hot, ETH).unwrap();
    let gas = 21_000 * 50 * GWEI;
    let (_, signed) = s
        .sign_sweep(5, &eth_tx(0, hot, 2 * ETH - gas).encode_unsigned())
        .unwrap();
    assert_eq!(recover_sender(&signed.raw), Some(deposit));
    rpc.send_raw(&signed.raw).unwrap();
    assert_eq!(anvil.mine_until_mined(&signed.hash, 1).unwrap().status, 1);
    // The token sweep needs gas: the hot wallet tops the deposit address up, then it sweeps.
    let token_gas = 80_000 * 50 * GWEI;
    let (_, top) = s
        .sign_gas_topup(5, &eth_tx(0, deposit, token_gas).encode_unsigned())
        .unwrap();
    assert_eq!(recover_sender(&top.raw), Some(hot));
    rpc.send_raw(&top.raw).unwrap();
    anvil.mine_until_mined(&top.hash, 1).unwrap();
    let (_, sweep) = s
        .sign_sweep(
            5,
            &token_tx(1, token, erc20_transfer(&hot, 9_000_000)).encode_unsigned(),
        )
        .unwrap();
    rpc.send_raw(&sweep.raw).unwrap();
    assert_eq!(anvil.mine_until_mined(&sweep.hash, 1).unwrap().status, 1);
    assert_eq!(rpc.token_balance(&token, &hot, "latest").unwrap(), 9_000_000);
    assert_eq!(rpc.token_balance(&token, &deposit, "latest").unwrap(), 0);
    assert!(
        rpc.balance(&hot, "latest").unwrap() > 2 * ETH,
        "the ETH sweep arrived"
    );
    assert_eq!(s.book.expected(&deposit), 2);
}
