//! Hot ↔ cold on a real Anvil through the real signer's socket (docs/design/ethereum.md, "Cold
//! setup"): the hot wallet's excess of ETH and of the token goes to the 2-of-3 cold multisig
//! contract, recorded and its gas booked before broadcast, never twice across a restart, and
//! not mistaken for theft by reconciliation; a refill ceremony (request file, two keyholders'
//! offline signatures from their cold keystores, submit) is mined and booked; each refusal of a
//! refill keeps its code and sends nothing.

use super::withdrawals::{start_signer_with, SIGNER_WAIT_S};
use super::*;
use kinko_api::vault::Vault;
use kinko_chain::eth::anvil::CHAIN_ID;
use kinko_chain::eth::cold::{read_state, EthRefill};
use kinko_chain::eth::{Branch, Eip1559, EthAddress};
use kinko_core::wallet::{CustodyMoveKind, CustodyMoveStatus};
use kinko_core::SystemAccount;
use kinko_custody::eth_service::{EthAssetConfig, EthCustody, EthCustodyConfig};
use kinko_signer::eth_cold::OwnerKey;
use kinko_signer::{ManualClock, Server};
use std::path::PathBuf;
use std::sync::Arc;

const USDC: u128 = 1_000_000;

/// The rig with three cold keyholders (each a `--role cold` keystore), the contract deployed
/// 2-of-3, a signer knowing it, and customers holding 10 ETH and 100 USDC.
struct ColdRig {
    rig: EthRig,
    owners: Vec<OwnerKey>,
    contract: EthAddress,
    hot: EthAddress,
    socket: PathBuf,
    _signer: Server,
}

fn keyholder(rig: &EthRig, n: u32) -> OwnerKey {
    let path = rig.dir.path().join(format!("cold-{n}.keystore"));
    Keystore::create_with(
        &path,
        kinko_chain::Network::LitecoinRegtest,
        Role::Cold,
        PASSPHRASE,
        KdfParams::TEST_FAST,
    )
    .unwrap();
    let master = Keystore::open_with(&path, PASSPHRASE, true).unwrap().master();
    OwnerKey::new(&master).unwrap()
}

impl ColdRig {
    fn start() -> ColdRig {
        let rig = EthRig::start();
        let mut owners: Vec<OwnerKey> = (1..=3).map(|n| keyholder(&rig, n)).collect();
        owners.sort_by_key(OwnerKey::address);
        let addrs: Vec<EthAddress> = owners.iter().map(OwnerKey::address).collect();
        let contract = rig.anvil.deploy_cold_multisig(&addrs, 2).unwrap();
        let clock = Arc::new(ManualClock::at_system_now());
        let extra = format!(
            "gas_limit_max = 200000\ncold_contract = \"{}\"",
            contract.checksummed()
        );
        let (signer, socket) = start_signer_with(&rig, &clock, &extra);
        clock.advance_s(SIGNER_WAIT_S + 1);
        // Customers' funds: 10 ETH and 100 USDC credited (the liabilities the hot share is of).
        let rpc = rig.anvil.rpc();
        let (c, d) = (rig.user(1), rig.user(2));
        let mut de = rig.watcher(rig.eth, EthAsset::Ether);
        let mut dt = rig.watcher(rig.usdc, EthAsset::Token(rig.token));
        let a = de.assign_address(c).unwrap();
        let b = dt.assign_address(d).unwrap();
        rig.pay_eth(&a, 10 * ETH);
        let t = rig.pay_token(&b, 100 * USDC);
        rig.anvil.mine_until_mined(&t, 1).unwrap();
        rpc.mine(CONFIRMATIONS).unwrap();
        de.poll().unwrap();
        dt.poll().unwrap();
        assert_eq!(rig.customer(c, rig.eth).1, 10 * ETH);
        // The hot address holds them (as sweeps from the deposit addresses would bring).
        let hot = rig.keys.address(Branch::Hot, 0).unwrap();
        rpc.set_balance(&hot, 10 * ETH).unwrap();
        let faucet = rig.anvil.faucet().unwrap();
        let f = rpc
            .send_from_dev(
                &faucet,
                Some(&rig.token),
                0,
                &kinko_chain::eth::erc20_transfer(&hot, 100 * USDC),
            )
            .unwrap();
        rig.anvil.mine_until_mined(&f, 1).unwrap();
        ColdRig {
            rig,
            owners,
            contract,
            hot,
            socket,
            _signer: signer,
        }
    }

    /// The custody loop of the chain (hot share 10%), as `kinko serve` builds it; deposits are
    /// not swept to hot here (`sweep_min` above any): the hot address was funded directly.
    fn custody(&self) -> EthCustody {
        let asset = |code: &str, kind, gas_limit| EthAssetConfig {
            code: code.into(),
            kind,
            gas_limit,
            hot_share_bps: 1_000,
            hot_cap: u128::MAX,
            sweep_min: u128::MAX,
        };
        let cfg = EthCustodyConfig {
            rpc_url: self.rig.anvil.url(),
            chain_id: CHAIN_ID,
            account: self.rig.keys.xpub(),
            signer_socket: self.socket.clone(),
            confirmations: CONFIRMATIONS,
            finality_depth: CONFIRMATIONS,
            poll: std::time::Duration::from_millis(100),
            start_block: self.rig.anvil.rpc().block_number().unwrap() + 1,
            priority_fee: 1_000_000_000,
            max_fee_cap: 500_000_000_000,
            sweep_gas_max_bps: 1_000,
            assets: vec![
                asset("ETH", EthAsset::Ether, 21_000),
                asset("USDC", EthAsset::Token(self.rig.token), 80_000),
            ],
            state_dir: Some(self.rig.dir.path().join("custody")),
            cold_contract: Some(self.contract),
        };
        std::fs::create_dir_all(self.rig.dir.path().join("custody")).unwrap();
        let vault: Arc<dyn kinko_engine::ports::SecretOpener> = Arc::new(Vault::from_key([7; 32]));
        EthCustody::new(cfg, self.rig.link.clone(), Some(vault)).unwrap()
    }

    fn moves(&self, kind: CustodyMoveKind) -> Vec<kinko_core::wallet::CustodyMove> {
        self.rig.link.view(|e| {
            e.wallet()
                .custody_moves()
                .iter()
                .filter(|m| m.kind == kind)
                .cloned()
                .collect()
        })
    }

    fn system(&self, asset: AssetId, which: SystemAccount) -> i128 {
        self.rig.link.view(|e| {
            let id = e.asset(asset).unwrap().system_account(which);
            e.ledger().account(id).unwrap().balance()
        })
    }

    fn incidents(&self) -> usize {
        self.rig.link.view(|e| e.admin().open_incidents().count())
    }

    /// Keyholders `who` sign `request` as `kinko-signer offline-sign` does.
    fn signed(&self, request: &str, who: &[usize]) -> String {
        let mut r: EthRefill = serde_json::from_str(request).unwrap();
        for i in who {
            let s = self.owners[*i].sign_refill(&r).unwrap();
            r.signatures.push(s);
        }
        serde_json::to_string(&r).unwrap()
    }

    /// Gas booked for a recorded move: its transaction's gas limit × max fee.
    fn gas_of(m: &kinko_core::wallet::CustodyMove) -> u128 {
        let raw = hex::decode(m.raw_tx.as_deref().unwrap()).unwrap();
        let (tx, _) = Eip1559::decode_signed(&raw).unwrap();
        u128::from(tx.gas_limit) * tx.max_fee_per_gas
    }
}

#[test]
fn the_hot_excess_goes_to_cold_once_and_a_two_of_three_refill_comes_back_booked() {
    let r = ColdRig::start();
    let rpc = r.rig.anvil.rpc();
    let (eth, usdc) = (r.rig.eth, r.rig.usdc);
    let fees_before = r.system(eth, SystemAccount::NetworkFees);
    let mut c = r.custody();
    c.poll().unwrap();
    // Limits: 10% of 10 ETH and of 100 USDC; what stays is half of that.
    let sweeps = r.moves(CustodyMoveKind::Sweep);
    assert_eq!(sweeps.len(), 2, "{sweeps:?}");
    let (se, st) = (&sweeps[0], &sweeps[1]);
    assert_eq!((se.asset, st.asset), (eth, usdc));
    assert_eq!(st.amount.0, 95 * USDC);
    let gas_e = ColdRig::gas_of(se);
    assert_eq!(
        se.amount.0,
        10 * ETH - ETH / 2 - gas_e,
        "the gas comes out of what moves"
    );

    // Neither the same loop nor a restarted one sends again while they are not final.
    c.poll().unwrap();
    drop(c);
    let mut c = r.custody();
    c.poll().unwrap();
    assert_eq!(r.moves(CustodyMoveKind::Sweep).len(), 2, "no double send");
    assert_eq!(rpc.nonce(&r.hot, "pending").unwrap(), 2);

    rpc.mine(1).unwrap();
    assert_eq!(rpc.balance(&r.contract, "latest").unwrap(), se.amount.0);
    assert_eq!(
        rpc.token_balance(&r.rig.token, &r.contract, "latest").unwrap(),
        95 * USDC
    );
    rpc.mine(CONFIRMATIONS).unwrap();
    c.poll().unwrap();
    c.poll().unwrap();
    assert_eq!(r.moves(CustodyMoveKind::Sweep).len(), 2, "under the limit now");
    assert_eq!(r.incidents(), 0, "our own sweeps are not an unapproved outflow");
    // Ledger: cold holds what moved; the gas of both (the token's too) is in the ETH ledger.
    assert_eq!(r.system(eth, SystemAccount::ColdWallet), se.amount.0 as i128);
    assert_eq!(r.system(usdc, SystemAccount::ColdWallet), 95 * USDC as i128);
    assert_eq!(
        r.system(eth, SystemAccount::NetworkFees) - fees_before,
        (gas_e + ColdRig::gas_of(st)) as i128
    );
    assert_eq!(
        r.system(usdc, SystemAccount::NetworkFees),
        0,
        "no ETH in the token's ledger"
    );
    assert_eq!(
        c.balances("ETH").unwrap().1,
        se.amount.0,
        "custody status shows cold"
    );
    assert_eq!(c.balances("USDC").unwrap().1, 95 * USDC);

    // The ceremony: a request, keyholders 1 and 3 sign it offline, submit (amounts that keep
    // hot under its limit, or the next poll sweeps them back).
    let hot_before = rpc.balance(&r.hot, "latest").unwrap();
    let request = c.refill_request("ETH", 4 * ETH / 10).unwrap();
    let (txid, amount, gas) = c.submit_refill("ETH", &r.signed(&request, &[0, 2])).unwrap();
    assert_eq!(amount, 4 * ETH / 10);
    let hash: [u8; 32] = hex::decode(&txid[2..]).unwrap().try_into().unwrap();
    assert_eq!(r.rig.anvil.mine_until_mined(&hash, 1).unwrap().status, 1);
    let hot_after = rpc.balance(&r.hot, "latest").unwrap();
    assert!(
        hot_after > hot_before + 4 * ETH / 10 - gas,
        "the refill reached hot"
    );
    assert_eq!(read_state(&rpc, &r.contract, "latest").unwrap().nonce, 1);
    // The token with keyholders 2 and 3.
    let request = c.refill_request("USDC", 4 * USDC).unwrap();
    let (txid, _, _) = c.submit_refill("USDC", &r.signed(&request, &[1, 2])).unwrap();
    let hash: [u8; 32] = hex::decode(&txid[2..]).unwrap().try_into().unwrap();
    assert_eq!(r.rig.anvil.mine_until_mined(&hash, 1).unwrap().status, 1);
    assert_eq!(
        rpc.token_balance(&r.rig.token, &r.hot, "latest").unwrap(),
        9 * USDC
    );
    rpc.mine(CONFIRMATIONS).unwrap();
    c.poll().unwrap();
    let refills = r.moves(CustodyMoveKind::Refill);
    assert_eq!(refills.len(), 2, "{refills:?}");
    assert!(refills.iter().all(|m| m.status == CustodyMoveStatus::Recorded));
    assert_eq!(
        r.system(usdc, SystemAccount::ColdWallet),
        91 * USDC as i128,
        "cold → hot booked"
    );
    assert_eq!(r.incidents(), 0, "the refills' executes are ours too");
    assert_eq!(c.balances("USDC").unwrap().1, 91 * USDC);
    assert_eq!(r.moves(CustodyMoveKind::Sweep).len(), 2, "nothing swept back");
    r.rig.audit();
}

fn code(e: kinko_custody::eth::EthWatchError) -> String {
    e.code().unwrap_or("none").to_owned()
}

#[test]
fn every_refused_refill_keeps_its_code_and_sends_nothing() {
    let r = ColdRig::start();
    let rpc = r.rig.anvil.rpc();
    let mut c = r.custody();
    c.poll().unwrap();
    rpc.mine(CONFIRMATIONS + 1).unwrap();
    c.poll().unwrap();
    let nonce = rpc.nonce(&r.hot, "pending").unwrap();
    let request = c.refill_request("ETH", ETH).unwrap();
    let base: EthRefill = serde_json::from_str(&request).unwrap();
    let good = |who: &[usize]| -> EthRefill { serde_json::from_str(&r.signed(&request, who)).unwrap() };

    // One signature of a 2-of-3.
    let mut rows: Vec<(&str, String, &str)> = vec![(
        "too few signatures",
        serde_json::to_string(&good(&[0])).unwrap(),
        "SIGNATURES_TOO_FEW",
    )];
    // A key that is not an owner, signing the right digest.
    let stranger = keyholder(&r.rig, 9);
    let call = base.call().unwrap();
    let mut f = good(&[0]);
    f.signatures.push(kinko_chain::eth::cold::RefillSignature {
        owner: stranger.address().checksummed(),
        signature: hex::encode(stranger.sign_digest(&call.digest()).unwrap()),
    });
    rows.push((
        "a non-owner",
        serde_json::to_string(&f).unwrap(),
        "SIGNATURE_NOT_OWNER",
    ));
    // The same owner twice.
    let mut f = good(&[0]);
    f.signatures.push(f.signatures[0].clone());
    rows.push((
        "a duplicate",
        serde_json::to_string(&f).unwrap(),
        "SIGNATURE_DUPLICATE",
    ));
    // An owner's signature over another request's digest (another amount).
    let other = c.refill_request("ETH", ETH + 1).unwrap();
    let other: EthRefill = serde_json::from_str(&r.signed(&other, &[1])).unwrap();
    let mut f = good(&[0]);
    f.signatures.push(other.signatures[0].clone());
    rows.push((
        "a signature over another digest",
        serde_json::to_string(&f).unwrap(),
        "SIGNATURE_DIGEST_WRONG",
    ));
    // A file whose digest field is not its fields' (a value changed after signing).
    let mut f = good(&[0, 1]);
    f.value = (2 * ETH).to_string();
    f.amount = (2 * ETH).to_string();
    rows.push((
        "fields changed under the digest",
        serde_json::to_string(&f).unwrap(),
        "SIGNATURE_DIGEST_WRONG",
    ));
    // Correctly signed by two owners, but paying another address: ETH, then the token.
    let thief = EthAddress([0xba; 20]);
    let redirect = |mut f: EthRefill, to: EthAddress, value: u128, data: Vec<u8>| {
        f.to = to.checksummed();
        f.value = value.to_string();
        f.data = hex::encode(&data);
        f.digest = hex::encode(kinko_chain::eth::cold::digest(
            CHAIN_ID,
            &r.contract,
            f.nonce,
            &to,
            value,
            &data,
        ));
        f.signatures = r
            .owners
            .iter()
            .take(2)
            .map(|o| o.sign_refill(&f).unwrap())
            .collect();
        serde_json::to_string(&f).unwrap()
    };
    rows.push((
        "ETH to another address",
        redirect(base.clone(), thief, ETH, Vec::new()),
        "REFILL_NOT_TO_HOT",
    ));
    rows.push((
        "the token to another address",
        redirect(
            base.clone(),
            r.rig.token,
            0,
            kinko_chain::eth::erc20_transfer(&thief, 5),
        ),
        "REFILL_NOT_TO_HOT",
    ));
    rows.push(("not a request", "{\"kind\": \"psbt\"}".into(), "REFILL_INVALID"));
    for (name, text, expected) in rows {
        let got = c.submit_refill("ETH", &text).map(|_| ()).map_err(code);
        assert_eq!(got, Err(expected.to_owned()), "{name}");
    }
    assert_eq!(rpc.nonce(&r.hot, "pending").unwrap(), nonce, "nothing was sent");
    assert!(
        r.moves(CustodyMoveKind::Refill).is_empty(),
        "nothing was recorded"
    );

    // The good one passes; sent again it is refused, in flight then spent.
    let signed = r.signed(&request, &[1, 2]);
    c.submit_refill("ETH", &signed).unwrap();
    assert_eq!(
        c.submit_refill("ETH", &signed).map(|_| ()).map_err(code),
        Err("REFILL_IN_FLIGHT".to_owned())
    );
    rpc.mine(CONFIRMATIONS + 1).unwrap();
    c.poll().unwrap();
    assert_eq!(
        c.submit_refill("ETH", &signed).map(|_| ()).map_err(code),
        Err("REFILL_INVALID".to_owned()),
        "the contract's nonce moved on"
    );
    assert_eq!(r.moves(CustodyMoveKind::Refill).len(), 1);
    r.rig.audit();
}

/// The signer signed a sweep to cold and kinko died before recording it: after the restart the
/// very same bytes are asked for again (a rebuild at other fees or another amount would be a
/// replacement the signer refuses and halts on), recorded once, sent once.
#[test]
fn a_sweep_signed_before_a_crash_is_asked_for_again_as_it_was_and_sent_once() {
    let r = ColdRig::start();
    let rpc = r.rig.anvil.rpc();
    // What the loop kept and the signer answered before the crash: 9 ETH to cold at nonce 0.
    let tx = Eip1559 {
        chain_id: CHAIN_ID,
        nonce: 0,
        max_priority_fee_per_gas: 1_000_000_000,
        max_fee_per_gas: 7_000_000_000,
        gas_limit: kinko_chain::eth::cold::COLD_SWEEP_GAS,
        to: r.contract,
        value: 9 * ETH,
        data: Vec::new(),
    };
    let unsigned = tx.encode_unsigned();
    let dir = r.rig.dir.path().join("custody");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ETH.cold-sweep.eth-tx"), hex::encode(&unsigned)).unwrap();
    let answer = kinko_signer_proto::client::SignerClient::connect(&r.socket)
        .unwrap()
        .call(&kinko_signer_proto::protocol::Request::SignEthColdSweep {
            raw_unsigned: unsigned.clone(),
            journal: None,
        })
        .unwrap();
    let kinko_signer_proto::protocol::Response::EthSigned { hash, .. } = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(r.moves(CustodyMoveKind::Sweep).len(), 0, "the answer was lost");

    let mut c = r.custody();
    c.poll().unwrap();
    let sweeps = r.moves(CustodyMoveKind::Sweep);
    let eth: Vec<_> = sweeps.iter().filter(|m| m.asset == r.rig.eth).collect();
    assert_eq!(eth.len(), 1, "{sweeps:?}");
    assert_eq!(
        eth[0].txid,
        format!("0x{}", hex::encode(hash)),
        "the same transaction"
    );
    assert_eq!(eth[0].amount.0, 9 * ETH);
    assert!(
        !dir.join("ETH.cold-sweep.eth-tx").exists(),
        "forgotten once recorded"
    );
    assert_eq!(r.rig.anvil.mine_until_mined(&hash, 1).unwrap().status, 1);
    assert_eq!(rpc.balance(&r.contract, "latest").unwrap(), 9 * ETH);
    // The token's sweep took the next nonce; nothing else was sent.
    assert_eq!(rpc.nonce(&r.hot, "pending").unwrap(), 2);
    let log = std::fs::read_to_string(r.rig.dir.path().join("signer.log")).unwrap();
    assert_eq!(
        log.matches(r#""kind":"eth_signed""#).count(),
        2,
        "the first one signed once"
    );
    r.rig.audit();
}

/// A sweep to cold the signer refuses (here: signing halted) records and sends nothing, frees
/// its nonce, and shows as the `cold:<ASSET>` component down until a sweep goes through.
#[test]
fn a_refused_sweep_to_cold_sends_nothing_and_shows_in_health() {
    let r = ColdRig::start();
    let rpc = r.rig.anvil.rpc();
    let halted = kinko_signer_proto::client::SignerClient::connect(&r.socket)
        .unwrap()
        .call(&kinko_signer_proto::protocol::Request::Halt {
            reason: "drill".into(),
            source: "test".into(),
        })
        .unwrap();
    assert_eq!(halted, kinko_signer_proto::protocol::Response::Ok);
    let health = kinko_engine::health::Health::new();
    let mut c = r.custody().with_health(health.clone());
    let err = c.poll().unwrap_err();
    assert_eq!(err.code(), Some("SIGNER_REFUSED"), "{err}");
    let eth = health.get("cold:ETH").expect("reported");
    assert!(!eth.up && eth.reason.contains("SIGNER_HALTED"), "{eth:?}");
    assert!(r.moves(CustodyMoveKind::Sweep).is_empty());
    assert_eq!(rpc.nonce(&r.hot, "pending").unwrap(), 0, "nothing sent");
    assert!(
        !r.rig.dir.path().join("custody/ETH.cold-sweep.eth-tx").exists(),
        "a refused transaction is not kept"
    );
}

/// Cold funds moved outside kinko (here: two keyholders' signatures on an `execute` paying a
/// stranger, sent by someone else): the next poll finds the contract below the ledger's cold
/// wallet, halts the asset's withdrawals and opens a `cold_shortfall` incident with what is
/// missing, once; the token's cold, untouched, stays open.
#[test]
fn cold_funds_moved_outside_kinko_halt_the_asset_within_one_poll() {
    use kinko_chain::eth::cold::{digest, execute_calldata};
    let r = ColdRig::start();
    let rpc = r.rig.anvil.rpc();
    let mut c = r.custody();
    c.poll().unwrap();
    rpc.mine(CONFIRMATIONS + 1).unwrap();
    c.poll().unwrap();
    assert_eq!(r.incidents(), 0, "our own moves are explained");
    let open = |asset: AssetId| r.rig.link.view(|e| e.asset(asset).unwrap().switches.withdrawals);
    assert!(open(r.rig.eth));

    let thief = EthAddress([0xba; 20]);
    let nonce = read_state(&rpc, &r.contract, "latest").unwrap().nonce;
    let d = digest(CHAIN_ID, &r.contract, nonce, &thief, ETH, &[]);
    let sigs: Vec<[u8; 65]> = r.owners[..2].iter().map(|o| o.sign_digest(&d).unwrap()).collect();
    let faucet = r.rig.anvil.faucet().unwrap();
    let h = rpc
        .send_from_dev(
            &faucet,
            Some(&r.contract),
            0,
            &execute_calldata(&thief, ETH, &[], &sigs),
        )
        .unwrap();
    assert_eq!(r.rig.anvil.mine_until_mined(&h, 1).unwrap().status, 1);
    assert_eq!(rpc.balance(&thief, "latest").unwrap(), ETH);

    c.poll().unwrap();
    let incidents: Vec<kinko_core::admin::Incident> =
        r.rig.link.view(|e| e.admin().open_incidents().cloned().collect());
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(
        (
            incidents[0].kind.as_str(),
            incidents[0].asset,
            incidents[0].missing.0
        ),
        ("cold_shortfall", Some(r.rig.eth), ETH)
    );
    assert!(!open(r.rig.eth), "ETH withdrawals halted");
    assert!(open(r.rig.usdc), "the token's cold is whole");
    c.poll().unwrap();
    assert_eq!(r.incidents(), 1, "reported once");
}

/// The signer signed a refill's `execute` and kinko died before recording it: the next poll asks
/// for the very same bytes again (kept with the keyholders' signatures in them), records and
/// sends them; the hot key's nonce is not left a gap.
#[test]
fn a_refill_signed_before_a_crash_is_sent_by_the_next_poll() {
    use kinko_chain::eth::cold::{execute_calldata, EXECUTE_GAS};
    let r = ColdRig::start();
    let rpc = r.rig.anvil.rpc();
    let mut c = r.custody();
    c.poll().unwrap();
    rpc.mine(CONFIRMATIONS + 1).unwrap();
    c.poll().unwrap();
    let request = c.refill_request("ETH", ETH / 4).unwrap();
    drop(c);
    let signed: EthRefill = serde_json::from_str(&r.signed(&request, &[0, 1])).unwrap();
    let call = signed.call().unwrap();
    let sigs: Vec<[u8; 65]> = signed
        .signatures
        .iter()
        .map(|s| {
            let mut b = [0u8; 65];
            hex::decode_to_slice(&s.signature, &mut b).unwrap();
            b
        })
        .collect();
    let tx = Eip1559 {
        chain_id: CHAIN_ID,
        nonce: rpc.nonce(&r.hot, "latest").unwrap(),
        max_priority_fee_per_gas: 1_000_000_000,
        max_fee_per_gas: 7_000_000_000,
        gas_limit: EXECUTE_GAS,
        to: r.contract,
        value: 0,
        data: execute_calldata(&call.to, call.value, &call.data, &sigs),
    };
    let unsigned = tx.encode_unsigned();
    std::fs::write(
        r.rig.dir.path().join("custody/ETH.refill.eth-tx"),
        hex::encode(&unsigned),
    )
    .unwrap();
    let answer = kinko_signer_proto::client::SignerClient::connect(&r.socket)
        .unwrap()
        .call(&kinko_signer_proto::protocol::Request::SignEthRefill {
            raw_unsigned: unsigned,
            journal: None,
        })
        .unwrap();
    let kinko_signer_proto::protocol::Response::EthSigned { hash, .. } = answer else {
        panic!("{answer:?}")
    };

    let mut c = r.custody();
    c.poll().unwrap();
    let refills = r.moves(CustodyMoveKind::Refill);
    assert_eq!(refills.len(), 1, "{refills:?}");
    assert_eq!(refills[0].txid, format!("0x{}", hex::encode(hash)));
    assert_eq!(refills[0].amount.0, ETH / 4);
    assert_eq!(r.rig.anvil.mine_until_mined(&hash, 1).unwrap().status, 1);
    assert_eq!(read_state(&rpc, &r.contract, "latest").unwrap().nonce, 1);
    c.poll().unwrap();
    assert_eq!(r.moves(CustodyMoveKind::Refill).len(), 1, "sent once");
    assert_eq!(r.incidents(), 0);
}
