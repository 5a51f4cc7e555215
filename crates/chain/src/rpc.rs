//! A small typed Bitcoin-Core JSON-RPC 1.0 client (Litecoin Core speaks the same), blocking,
//! over `ureq`. Amounts come back as integer satoshis, parsed from the JSON number's literal
//! text (see [`crate::amount`]); nothing goes through `f64`.
//!
//! The node is expected on loopback: the client ignores proxy settings from the environment.
//! The password is sent as HTTP basic auth and never appears in errors or `Debug` output.

use crate::amount::serde_sats;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Default time limit of one call (connect, send, node work, response).
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Largest response body read (64 MiB).
pub const RESPONSE_BYTES_MAX: u64 = 64 << 20;

/// Core's `RPC_WALLET_ERROR`, also used for a wallet that exists but is not watch-only.
pub const RPC_WALLET_ERROR: i64 = -4;
/// Core's `RPC_INVALID_ADDRESS_OR_KEY` (unknown transaction, block…).
pub const RPC_INVALID_ADDRESS_OR_KEY: i64 = -5;
/// Core's `RPC_WALLET_NOT_FOUND`.
pub const RPC_WALLET_NOT_FOUND: i64 = -18;
/// Core's `RPC_METHOD_NOT_FOUND`.
pub const RPC_METHOD_NOT_FOUND: i64 = -32601;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// Could not talk to the node (refused, timed out, broken response).
    #[error("cannot reach the node: {0}")]
    Transport(String),
    /// The node answered with an HTTP status and no JSON-RPC error (401: wrong credentials).
    #[error("node answered HTTP {0}")]
    Http(u16),
    /// The node refused the call.
    #[error("node error {code}: {message}")]
    Node { code: i64, message: String },
    /// The answer did not have the expected shape.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// A JSON-RPC endpoint of one node: the node itself, or one of its wallets.
#[derive(Clone)]
pub struct Rpc {
    agent: ureq::Agent,
    base: String,
    wallet: Option<String>,
    user: String,
    password: Arc<str>,
    next_id: Arc<AtomicU64>,
}

impl fmt::Debug for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rpc")
            .field("url", &self.endpoint())
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .build(),
    )
}

/// Percent-encodes a wallet name for the `/wallet/NAME` path.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    error: Option<NodeError>,
}

#[derive(Deserialize)]
struct NodeError {
    code: i64,
    message: String,
}

impl Rpc {
    /// A client for the node at `url` (e.g. `http://127.0.0.1:19443`). Put no credentials in
    /// `url`; they go in `user` / `password`.
    pub fn new(url: &str, user: &str, password: &str) -> Rpc {
        Rpc {
            agent: agent(TIMEOUT_DEFAULT),
            base: url.trim_end_matches('/').to_string(),
            wallet: None,
            user: user.to_string(),
            password: Arc::from(password),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The same node's wallet endpoint `/wallet/NAME`.
    pub fn wallet(&self, name: &str) -> Rpc {
        Rpc {
            wallet: Some(name.to_string()),
            ..self.clone()
        }
    }

    /// This client with another per-call time limit (e.g. longer for a rescanning import).
    pub fn with_timeout(&self, timeout: Duration) -> Rpc {
        Rpc {
            agent: agent(timeout),
            ..self.clone()
        }
    }

    /// The wallet this client speaks to, if any.
    pub fn wallet_name(&self) -> Option<&str> {
        self.wallet.as_deref()
    }

    /// The full endpoint URL (no credentials).
    pub fn endpoint(&self) -> String {
        match &self.wallet {
            Some(w) => format!("{}/wallet/{}", self.base, encode_path_segment(w)),
            None => format!("{}/", self.base),
        }
    }

    fn transport(&self, e: impl fmt::Display) -> RpcError {
        let mut msg = e.to_string();
        if !self.password.is_empty() {
            msg = msg.replace(&*self.password, "<redacted>");
        }
        RpcError::Transport(msg)
    }

    /// Calls `method` with `params` (a JSON array) and decodes the result as `T`. A `null`
    /// result decodes as `()`.
    pub fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let credentials = format!("{}:{}", self.user, self.password);
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        let response = self
            .agent
            .post(&self.endpoint())
            .header("Authorization", &auth)
            .send_json(&body)
            .map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let text = response
            .into_body()
            .with_config()
            .limit(RESPONSE_BYTES_MAX)
            .read_to_string()
            .map_err(|e| self.transport(e))?;
        match serde_json::from_str::<Reply>(&text) {
            Ok(Reply { error: Some(e), .. }) => Err(RpcError::Node {
                code: e.code,
                message: e.message,
            }),
            Ok(Reply { result, error: None }) if status == 200 => {
                serde_json::from_str(result.map_or("null", |r| r.get()))
                    .map_err(|e| RpcError::Decode(format!("{method}: {e}")))
            }
            _ if status != 200 => Err(RpcError::Http(status)),
            Ok(_) => Err(RpcError::Decode(format!("{method}: neither result nor error"))),
            Err(e) => Err(RpcError::Decode(format!("{method}: {e}"))),
        }
    }

    // --- chain -----------------------------------------------------------------------------

    pub fn get_blockchain_info(&self) -> Result<BlockchainInfo, RpcError> {
        self.call("getblockchaininfo", json!([]))
    }

    pub fn get_block_count(&self) -> Result<u64, RpcError> {
        self.call("getblockcount", json!([]))
    }

    pub fn get_block_hash(&self, height: u64) -> Result<String, RpcError> {
        self.call("getblockhash", json!([height]))
    }

    pub fn get_best_block_hash(&self) -> Result<String, RpcError> {
        self.call("getbestblockhash", json!([]))
    }

    /// A transaction's hex by txid (needs `-txindex` unless it is in the mempool or a wallet).
    pub fn get_raw_transaction(&self, txid: &str) -> Result<String, RpcError> {
        self.call("getrawtransaction", json!([txid, false]))
    }

    /// Broadcasts; returns the txid.
    pub fn send_raw_transaction(&self, hex: &str) -> Result<String, RpcError> {
        self.call("sendrawtransaction", json!([hex]))
    }

    /// Whether the node's mempool would accept the transaction, and why not.
    pub fn test_mempool_accept(&self, hex: &str) -> Result<MempoolAccept, RpcError> {
        let mut results: Vec<MempoolAccept> = self.call("testmempoolaccept", json!([[hex]]))?;
        if results.len() != 1 {
            return Err(RpcError::Decode(format!(
                "testmempoolaccept: {} results for 1 tx",
                results.len()
            )));
        }
        Ok(results.remove(0))
    }

    /// The mempool entry of `txid`, or `None` when it is not in the mempool.
    pub fn get_mempool_entry(&self, txid: &str) -> Result<Option<MempoolEntry>, RpcError> {
        match self.call("getmempoolentry", json!([txid])) {
            Ok(e) => Ok(Some(e)),
            Err(RpcError::Node {
                code: RPC_INVALID_ADDRESS_OR_KEY,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The node's fee estimate for confirmation within `blocks`, in sat/vB rounded up; `None`
    /// when the node has none (always the case on a fresh regtest chain).
    pub fn estimate_smart_fee(&self, blocks: u16) -> Result<Option<u64>, RpcError> {
        #[derive(Deserialize)]
        struct Estimate {
            #[serde(default, deserialize_with = "serde_sats::unsigned_opt")]
            feerate: Option<u64>,
        }
        let e: Estimate = self.call("estimatesmartfee", json!([blocks]))?;
        // `feerate` is in coins per 1000 vB: the sats figure is sat/kvB.
        Ok(e.feerate.map(|sat_per_kvb| sat_per_kvb.div_ceil(1000)))
    }

    /// The checksum Core computes for `desc`.
    pub fn get_descriptor_info(&self, desc: &str) -> Result<String, RpcError> {
        #[derive(Deserialize)]
        struct Info {
            checksum: String,
        }
        let i: Info = self.call("getdescriptorinfo", json!([desc]))?;
        Ok(i.checksum)
    }

    /// The addresses of a ranged descriptor (with checksum) for indexes `range.0..=range.1`.
    pub fn derive_addresses(&self, desc: &str, range: (u32, u32)) -> Result<Vec<String>, RpcError> {
        self.call("deriveaddresses", json!([desc, [range.0, range.1]]))
    }

    /// Mines `n` blocks paying `address` (regtest); returns their hashes.
    pub fn generate_to_address(&self, n: u32, address: &str) -> Result<Vec<String>, RpcError> {
        self.call("generatetoaddress", json!([n, address]))
    }

    pub fn invalidate_block(&self, hash: &str) -> Result<(), RpcError> {
        self.call("invalidateblock", json!([hash]))
    }

    pub fn reconsider_block(&self, hash: &str) -> Result<(), RpcError> {
        self.call("reconsiderblock", json!([hash]))
    }

    // --- wallets ---------------------------------------------------------------------------

    /// Names of the loaded wallets.
    pub fn list_wallets(&self) -> Result<Vec<String>, RpcError> {
        self.call("listwallets", json!([]))
    }

    /// Makes sure the legacy watch-only wallet `name` exists and is loaded: loads it if it
    /// is on disk, else creates it blank with private keys disabled
    /// (`createwallet name true true "" false false`). A loaded wallet that can hold private
    /// keys is refused (`Node { code: RPC_WALLET_ERROR, .. }`): kinko's wallets are watch-only.
    pub fn create_watch_only_wallet(&self, name: &str) -> Result<(), RpcError> {
        if !self.list_wallets()?.iter().any(|w| w == name) {
            match self.call::<Value>("loadwallet", json!([name])) {
                Ok(_) => {}
                Err(RpcError::Node {
                    code: RPC_WALLET_NOT_FOUND,
                    ..
                }) => {
                    match self.call::<Value>("createwallet", json!([name, true, true, "", false, false])) {
                        Ok(_) => {}
                        // Created meanwhile by someone else: load it (or it is loaded already).
                        Err(RpcError::Node { message, .. }) if message.contains("already exists") => {
                            self.load_wallet_tolerant(name)?
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(RpcError::Node { message, .. }) if message.contains("already loaded") => {}
                Err(e) => return Err(e),
            }
        }
        #[derive(Deserialize)]
        struct WalletInfo {
            private_keys_enabled: bool,
        }
        let info: WalletInfo = self.wallet(name).call("getwalletinfo", json!([]))?;
        if info.private_keys_enabled {
            return Err(RpcError::Node {
                code: RPC_WALLET_ERROR,
                message: format!("wallet {name:?} can hold private keys; a watch-only wallet is required"),
            });
        }
        Ok(())
    }

    fn load_wallet_tolerant(&self, name: &str) -> Result<(), RpcError> {
        match self.call::<Value>("loadwallet", json!([name])) {
            Ok(_) => Ok(()),
            Err(RpcError::Node { message, .. }) if message.contains("already loaded") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Imports a ranged descriptor (with checksum) into this (wallet) endpoint, indexes
    /// `0..=range_end`, watch-only, through `importmulti`. A descriptor on the BIP44 change
    /// chain (ending in `/1/*)`) is imported as internal: Core then treats its outputs as
    /// change (not listed as received in our own spends). With `rescan`, the import is dated
    /// from genesis and the chain rescanned (slow on a real chain: give the client a longer
    /// timeout); without, only new blocks are watched.
    pub fn import_descriptor(&self, desc: &str, range_end: u32, rescan: bool) -> Result<(), RpcError> {
        let body = desc.split('#').next().unwrap_or(desc);
        let internal = body.contains("/1/*)");
        self.import_descriptor_with(desc, range_end, rescan, internal)
    }

    /// [`Rpc::import_descriptor`] with the internal (change) flag given explicitly.
    pub fn import_descriptor_with(
        &self,
        desc: &str,
        range_end: u32,
        rescan: bool,
        internal: bool,
    ) -> Result<(), RpcError> {
        let timestamp = if rescan { json!(0) } else { json!("now") };
        let request = json!([{
            "desc": desc,
            "range": [0, range_end],
            "timestamp": timestamp,
            "watchonly": true,
            "internal": internal,
        }]);
        #[derive(Deserialize)]
        struct ImportResult {
            success: bool,
            error: Option<NodeError>,
        }
        let results: Vec<ImportResult> = self.call("importmulti", json!([request, {"rescan": rescan}]))?;
        match results.as_slice() {
            [r] if r.success => Ok(()),
            [ImportResult { error: Some(e), .. }] => Err(RpcError::Node {
                code: e.code,
                message: e.message.clone(),
            }),
            _ => Err(RpcError::Decode("importmulti: no success and no error".into())),
        }
    }

    /// The wallet's transactions since `block_hash` (all of them for `None`), watch-only
    /// included, plus `removed` (transactions of blocks that left the main chain).
    ///
    /// `lastblock` is the block `target_confirmations - 1` below the tip: using it as the next
    /// cursor re-reports every transaction with fewer than `target_confirmations`.
    ///
    /// What Litecoin Core 0.21.2 reports on reorgs (checked by `tests/it/reorg.rs`):
    ///
    /// 1. Cursor still on the main chain, the deposit's block invalidated: the deposit is
    ///    back in the mempool and listed in `transactions` with `confirmations: 0` and no
    ///    `blockhash` / `blockheight`; `removed` is empty. Mined again later, it is listed
    ///    with its new block.
    /// 2. Cursor block itself reorged out (it was the deposit's block): `removed` lists the
    ///    deposit with its *current* state (`confirmations: 0` if it went back to the mempool,
    ///    `-1` if a conflicting transaction was mined), and `transactions` lists it again too
    ///    when it is unconfirmed in the mempool. `lastblock` is on the new chain.
    /// 3. A conflicting transaction mined (double spend) while the cursor stays on the main
    ///    chain: the deposit **disappears from `transactions` and is not in `removed`**
    ///    (received entries with negative depth are filtered out). Only `get_transaction`
    ///    tells: `confirmations: -1` (and its `details` are empty). A watcher must therefore
    ///    re-check every pending deposit missing from the answer with `get_transaction`.
    ///
    /// 4. The conflicting branch loses again (the old block reconsidered, equal work, first
    ///    seen wins): the deposit is back in its old block with `confirmations: 1`; listed in
    ///    `transactions` from any cursor on the new main chain or below it, `removed` empty. A
    ///    deposit can thus go confirmed → conflicted → confirmed.
    ///
    /// Negative `confirmations` mean conflicted (Core: "the transaction conflicted that many
    /// blocks ago").
    ///
    /// Our own spends are listed as `send` entries (negative amounts, per output). Their
    /// change to an address imported as internal (the hot `/1/*` chain, see
    /// [`Rpc::import_descriptor`]) is not listed at all; change to a non-internal address of
    /// the same wallet (the cold wallet's `/0/*`) is listed twice, as a `send` and as a
    /// `receive` of the same output — not a deposit.
    ///
    /// `target_confirmations` 0 is treated as 1 (Core refuses 0).
    pub fn list_since_block(
        &self,
        block_hash: Option<&str>,
        target_confirmations: u32,
    ) -> Result<SinceBlock, RpcError> {
        self.call(
            "listsinceblock",
            json!([block_hash, target_confirmations.max(1), true, true]),
        )
    }

    /// Unspent outputs with at least `min_conf` confirmations (watch-only included), of the
    /// given addresses or all. With `min_conf == 0` unconfirmed outputs are included even when
    /// Core calls them unsafe — which in a watch-only wallet is every unconfirmed output,
    /// including the change of our own spends (Core trusts only outputs it can sign for) and
    /// foreign unconfirmed deposits. Callers decide from `confirmations`.
    pub fn list_unspent(
        &self,
        min_conf: u32,
        addresses: Option<&[String]>,
    ) -> Result<Vec<Unspent>, RpcError> {
        let addresses = addresses.map_or(json!([]), |a| json!(a));
        self.call(
            "listunspent",
            json!([min_conf, 9_999_999, addresses, min_conf == 0]),
        )
    }

    /// A wallet transaction (watch-only included).
    pub fn get_transaction(&self, txid: &str) -> Result<WalletTxDetail, RpcError> {
        self.call("gettransaction", json!([txid, true]))
    }

    /// A new bech32 address of a key-holding wallet (tests).
    pub fn get_new_address(&self, label: &str) -> Result<String, RpcError> {
        self.call("getnewaddress", json!([label, "bech32"]))
    }

    /// Pays `amount` (a decimal coin string such as `"0.5"`, see [`crate::amount::format_sats`])
    /// from a key-holding wallet (tests); returns the txid.
    pub fn send_to_address(&self, address: &str, amount: &str) -> Result<String, RpcError> {
        self.call("sendtoaddress", json!([address, amount]))
    }

    /// The wallet's balances in sats.
    pub fn get_balances(&self) -> Result<Balances, RpcError> {
        self.call("getbalances", json!([]))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct BlockchainInfo {
    pub chain: String,
    pub blocks: u64,
    #[serde(rename = "bestblockhash")]
    pub best_block_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SinceBlock {
    pub transactions: Vec<WalletTx>,
    #[serde(default)]
    pub removed: Vec<WalletTx>,
    pub lastblock: String,
}

/// One entry of `listsinceblock`: one output of a transaction as the wallet sees it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct WalletTx {
    #[serde(default)]
    pub address: Option<String>,
    /// `receive`, `send`, `generate`, `immature`, `orphan`.
    pub category: String,
    /// Signed: sends are negative.
    #[serde(rename = "amount", deserialize_with = "serde_sats::signed")]
    pub amount_sats: i64,
    pub vout: u32,
    /// Negative when conflicted.
    pub confirmations: i64,
    pub txid: String,
    #[serde(default)]
    pub blockhash: Option<String>,
    #[serde(default)]
    pub blockheight: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Unspent {
    pub txid: String,
    pub vout: u32,
    #[serde(default)]
    pub address: Option<String>,
    /// Hex.
    #[serde(rename = "scriptPubKey")]
    pub script_pub_key: String,
    #[serde(rename = "amount", deserialize_with = "serde_sats::unsigned")]
    pub amount_sats: u64,
    pub confirmations: u64,
}

impl Unspent {
    /// The outpoint, if `txid` is a valid hash.
    pub fn outpoint(&self) -> Option<bitcoin::OutPoint> {
        Some(bitcoin::OutPoint {
            txid: self.txid.parse().ok()?,
            vout: self.vout,
        })
    }

    /// The output script, if `script_pub_key` is valid hex.
    pub fn script(&self) -> Option<bitcoin::ScriptBuf> {
        bitcoin::ScriptBuf::from_hex(&self.script_pub_key).ok()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct WalletTxDetail {
    /// Negative when conflicted.
    pub confirmations: i64,
    #[serde(default)]
    pub blockhash: Option<String>,
    /// Present when the wallet paid for the transaction (all inputs its own); negative, as
    /// Core reports it.
    #[serde(rename = "fee", default, deserialize_with = "serde_sats::signed_opt")]
    pub fee_sats: Option<i64>,
    pub hex: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct MempoolAccept {
    pub allowed: bool,
    #[serde(rename = "reject-reason", default)]
    pub reject_reason: Option<String>,
    #[serde(default)]
    pub vsize: Option<u64>,
    #[serde(rename = "fees", default, deserialize_with = "base_fee_opt")]
    pub fee_sats: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct MempoolEntry {
    pub vsize: u64,
    #[serde(rename = "fees", deserialize_with = "base_fee")]
    pub fee_sats: u64,
}

#[derive(Deserialize)]
struct Fees {
    #[serde(deserialize_with = "serde_sats::unsigned")]
    base: u64,
}

fn base_fee<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Fees::deserialize(d).map(|f| f.base)
}

fn base_fee_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    <Option<Fees>>::deserialize(d).map(|f| f.map(|f| f.base))
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Balances {
    #[serde(default)]
    pub mine: Option<BalanceSet>,
    #[serde(default)]
    pub watchonly: Option<BalanceSet>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct BalanceSet {
    #[serde(rename = "trusted", deserialize_with = "serde_sats::unsigned")]
    pub trusted_sats: u64,
    #[serde(rename = "untrusted_pending", deserialize_with = "serde_sats::unsigned")]
    pub untrusted_pending_sats: u64,
    #[serde(rename = "immature", deserialize_with = "serde_sats::unsigned")]
    pub immature_sats: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_errors_hide_the_password() {
        let rpc = Rpc::new("http://127.0.0.1:1/", "u", "s3cret-pw").wallet("kinko hot");
        let dbg = format!("{rpc:?}");
        assert!(!dbg.contains("s3cret-pw"), "{dbg}");
        assert_eq!(rpc.endpoint(), "http://127.0.0.1:1/wallet/kinko%20hot");
        let e = rpc
            .with_timeout(Duration::from_secs(2))
            .get_block_count()
            .unwrap_err();
        assert!(matches!(e, RpcError::Transport(_)), "{e:?}");
        assert!(!e.to_string().contains("s3cret-pw"));
        assert_eq!(
            rpc.transport("x s3cret-pw y"),
            RpcError::Transport("x <redacted> y".into())
        );
    }

    #[test]
    fn clients_are_shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Rpc>();
        send_sync::<crate::RegtestNode>();
    }

    #[test]
    fn wallet_tx_parses_core_json() {
        let j = r#"{"address":"rltc1qx","category":"send","amount":-0.5,"label":"","vout":0,
            "fee":-0.0000141,"confirmations":-1,"trusted":false,"txid":"ab","walletconflicts":[],
            "time":1,"timereceived":1,"bip125-replaceable":"no","abandoned":false}"#;
        let t: WalletTx = serde_json::from_str(j).unwrap();
        assert_eq!(
            (t.amount_sats, t.confirmations, t.blockhash),
            (-50_000_000, -1, None)
        );
        let u = r#"{"txid":"ab","vout":1,"address":"a","scriptPubKey":"0014","amount":0.29,"confirmations":3,
            "spendable":false,"solvable":true,"safe":true}"#;
        let u: Unspent = serde_json::from_str(u).unwrap();
        assert_eq!(u.amount_sats, 29_000_000);
        let m: MempoolAccept =
            serde_json::from_str(r#"{"txid":"ab","allowed":true,"vsize":141,"fees":{"base":0.00001410}}"#)
                .unwrap();
        assert_eq!((m.fee_sats, m.vsize), (Some(1410), Some(141)));
        let m: MempoolAccept =
            serde_json::from_str(r#"{"txid":"ab","allowed":false,"reject-reason":"dust"}"#).unwrap();
        assert_eq!(m.reject_reason.as_deref(), Some("dust"));
    }
}
