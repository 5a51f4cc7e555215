//! A small typed Ethereum JSON-RPC client (blocking, ureq), for any node that speaks the
//! standard API (geth, reth, erigon, a provider, Anvil). Quantities are hex strings on the wire
//! and `u64` / `u128` here: a quantity that does not fit is a decode error, never truncated.
//! The `anvil_*` / `evm_*` methods exist only on Anvil (tests).

use super::EthAddress;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest response body read.
const RESPONSE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Default timeout of one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EthRpcError {
    #[error("cannot reach the node: {0}")]
    Transport(String),
    #[error("node answered HTTP {0}")]
    Http(u16),
    #[error("node error {code}: {message}")]
    Node { code: i64, message: String },
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// One node's JSON-RPC endpoint.
#[derive(Clone)]
pub struct EthRpc {
    agent: ureq::Agent,
    url: String,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for EthRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthRpc")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<ReplyError>,
}

#[derive(Deserialize)]
struct BatchReply {
    id: Value,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<ReplyError>,
}

/// Calls sent in one JSON-RPC batch, at most.
pub const BATCH_CALLS_MAX: usize = 256;

#[derive(Deserialize)]
struct ReplyError {
    code: i64,
    message: String,
}

/// A hex quantity (`0x…`, no leading zeros required) as `u128`.
pub fn quantity(v: &Value) -> Result<u128, EthRpcError> {
    let s = v
        .as_str()
        .ok_or_else(|| EthRpcError::Decode(format!("quantity is not a string: {v}")))?;
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| EthRpcError::Decode(format!("quantity without 0x: {s}")))?;
    if digits.is_empty() || digits.len() > 32 {
        return Err(EthRpcError::Decode(format!("quantity out of range: {s}")));
    }
    u128::from_str_radix(digits, 16).map_err(|_| EthRpcError::Decode(format!("bad quantity: {s}")))
}

fn quantity_u64(v: &Value) -> Result<u64, EthRpcError> {
    u64::try_from(quantity(v)?).map_err(|_| EthRpcError::Decode(format!("quantity above u64: {v}")))
}

fn bytes(v: &Value) -> Result<Vec<u8>, EthRpcError> {
    let s = v
        .as_str()
        .and_then(|s| s.strip_prefix("0x"))
        .ok_or_else(|| EthRpcError::Decode(format!("not hex data: {v}")))?;
    hex::decode(s).map_err(|_| EthRpcError::Decode(format!("not hex data: {v}")))
}

fn hash32(v: &Value) -> Result<[u8; 32], EthRpcError> {
    bytes(v)?
        .try_into()
        .map_err(|_| EthRpcError::Decode(format!("not a 32-byte hash: {v}")))
}

fn address(v: &Value) -> Result<EthAddress, EthRpcError> {
    let b: [u8; 20] = bytes(v)?
        .try_into()
        .map_err(|_| EthRpcError::Decode(format!("not an address: {v}")))?;
    Ok(EthAddress(b))
}

/// `0x…` hex of bytes.
pub fn hex0x(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

fn qty(n: u128) -> String {
    format!("{n:#x}")
}

/// A block header and its transactions (only what custody reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub number: u64,
    pub hash: [u8; 32],
    pub parent_hash: [u8; 32],
    pub base_fee_per_gas: Option<u128>,
    pub transactions: Vec<BlockTx>,
}

/// A transaction as a block lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockTx {
    pub hash: [u8; 32],
    pub from: EthAddress,
    /// `None`: a contract creation.
    pub to: Option<EthAddress>,
    pub value: u128,
    pub nonce: u64,
}

/// A mined transaction's receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub block_number: u64,
    pub block_hash: [u8; 32],
    /// 1: success, 0: reverted.
    pub status: u64,
    pub gas_used: u128,
    pub effective_gas_price: u128,
    pub contract_address: Option<EthAddress>,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    pub address: EthAddress,
    pub topics: Vec<[u8; 32]>,
    pub data: Vec<u8>,
    pub block_number: u64,
    pub block_hash: [u8; 32],
    pub tx_hash: [u8; 32],
    pub log_index: u64,
    pub removed: bool,
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, EthRpcError> {
    v.get(name)
        .ok_or_else(|| EthRpcError::Decode(format!("missing `{name}`")))
}

impl EthRpc {
    /// A client of the node at `url` (e.g. `http://127.0.0.1:8545`).
    pub fn new(url: &str) -> EthRpc {
        EthRpc::with_timeout(url, CALL_TIMEOUT)
    }

    pub fn with_timeout(url: &str, timeout: Duration) -> EthRpc {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .proxy(None)
                .max_redirects(0)
                .build(),
        );
        EthRpc {
            agent,
            url: url.to_owned(),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Posts a JSON-RPC request (one call or a batch): the HTTP status and the body, read up to
    /// [`RESPONSE_BYTES_MAX`].
    fn post(&self, body: &impl serde::Serialize) -> Result<(u16, String), EthRpcError> {
        let response = self
            .agent
            .post(&self.url)
            .send_json(body)
            .map_err(|e| EthRpcError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .into_body()
            .with_config()
            .limit(RESPONSE_BYTES_MAX)
            .read_to_string()
            .map_err(|e| EthRpcError::Transport(e.to_string()))?;
        Ok((status, text))
    }

    /// One call; the raw `result`.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, EthRpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let (status, text) = self.post(&body)?;
        match serde_json::from_str::<Reply>(&text) {
            Ok(Reply { error: Some(e), .. }) => Err(EthRpcError::Node {
                code: e.code,
                message: e.message,
            }),
            Ok(Reply { result, error: None }) if status == 200 => Ok(result.unwrap_or(Value::Null)),
            _ if status != 200 => Err(EthRpcError::Http(status)),
            Ok(_) => Err(EthRpcError::Decode(format!("{method}: neither result nor error"))),
            Err(e) => Err(EthRpcError::Decode(format!("{method}: {e}"))),
        }
    }

    /// Many calls in JSON-RPC batches of at most [`BATCH_CALLS_MAX`]: each call's `result`, in
    /// order (a call the node refused: its error). One round trip per batch.
    pub fn call_batch(
        &self,
        calls: &[(&str, Value)],
    ) -> Result<Vec<Result<Value, EthRpcError>>, EthRpcError> {
        let mut out = Vec::with_capacity(calls.len());
        for chunk in calls.chunks(BATCH_CALLS_MAX) {
            let first = self.next_id.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let body: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, (method, params))| {
                    json!({"jsonrpc": "2.0", "id": first + i as u64, "method": method, "params": params})
                })
                .collect();
            let (status, text) = self.post(&body)?;
            if status != 200 {
                return Err(EthRpcError::Http(status));
            }
            let replies: Vec<BatchReply> =
                serde_json::from_str(&text).map_err(|e| EthRpcError::Decode(format!("batch: {e}")))?;
            let mut by_id: Vec<Option<Result<Value, EthRpcError>>> = (0..chunk.len()).map(|_| None).collect();
            for r in replies {
                let Some(i) = r.id.as_u64().and_then(|id| id.checked_sub(first)) else {
                    continue;
                };
                let Some(slot) = usize::try_from(i).ok().and_then(|i| by_id.get_mut(i)) else {
                    continue;
                };
                *slot = Some(match r.error {
                    Some(e) => Err(EthRpcError::Node {
                        code: e.code,
                        message: e.message,
                    }),
                    None => Ok(r.result.unwrap_or(Value::Null)),
                });
            }
            for (slot, (method, _)) in by_id.into_iter().zip(chunk) {
                out.push(slot.unwrap_or_else(|| {
                    Err(EthRpcError::Decode(format!("{method}: no answer in the batch")))
                }));
            }
        }
        Ok(out)
    }

    /// The balances of `who` at `tag`: ETH (`token` none) or the token's `balanceOf`, in batches.
    pub fn balances(
        &self,
        who: &[EthAddress],
        token: Option<&EthAddress>,
        tag: &str,
    ) -> Result<Vec<u128>, EthRpcError> {
        let calls: Vec<(&str, Value)> = who
            .iter()
            .map(|a| match token {
                None => ("eth_getBalance", json!([hex0x(&a.0), tag])),
                Some(t) => {
                    let mut data = vec![0x70, 0xa0, 0x82, 0x31];
                    data.extend_from_slice(&[0u8; 12]);
                    data.extend_from_slice(&a.0);
                    (
                        "eth_call",
                        json!([{"to": hex0x(&t.0), "data": hex0x(&data)}, tag]),
                    )
                }
            })
            .collect();
        self.call_batch(&calls)?
            .into_iter()
            .map(|r| {
                let v = r?;
                match token {
                    None => quantity(&v),
                    Some(_) => {
                        let out = bytes(&v)?;
                        if out.len() != 32 || out[..16].iter().any(|b| *b != 0) {
                            return Err(EthRpcError::Decode(format!("balanceOf: {}", hex::encode(&out))));
                        }
                        let mut w = [0u8; 16];
                        w.copy_from_slice(&out[16..]);
                        Ok(u128::from_be_bytes(w))
                    }
                }
            })
            .collect()
    }

    /// The transaction counts of `who` at `tag` (`pending` counts the pool), in batches.
    pub fn nonces(&self, who: &[EthAddress], tag: &str) -> Result<Vec<u64>, EthRpcError> {
        let calls: Vec<(&str, Value)> = who
            .iter()
            .map(|a| ("eth_getTransactionCount", json!([hex0x(&a.0), tag])))
            .collect();
        self.call_batch(&calls)?
            .into_iter()
            .map(|r| quantity_u64(&r?))
            .collect()
    }

    pub fn chain_id(&self) -> Result<u64, EthRpcError> {
        quantity_u64(&self.call("eth_chainId", json!([]))?)
    }

    pub fn block_number(&self) -> Result<u64, EthRpcError> {
        quantity_u64(&self.call("eth_blockNumber", json!([]))?)
    }

    /// Balance in wei at `tag` (`latest`, `safe`, `finalized`, or a `0x…` number).
    pub fn balance(&self, who: &EthAddress, tag: &str) -> Result<u128, EthRpcError> {
        quantity(&self.call("eth_getBalance", json!([hex0x(&who.0), tag]))?)
    }

    /// The account's transaction count (its next nonce) at `tag` (`pending` counts the pool).
    pub fn nonce(&self, who: &EthAddress, tag: &str) -> Result<u64, EthRpcError> {
        quantity_u64(&self.call("eth_getTransactionCount", json!([hex0x(&who.0), tag]))?)
    }

    /// Broadcasts a signed transaction; its hash.
    pub fn send_raw(&self, raw: &[u8]) -> Result<[u8; 32], EthRpcError> {
        hash32(&self.call("eth_sendRawTransaction", json!([hex0x(raw)]))?)
    }

    pub fn receipt(&self, hash: &[u8; 32]) -> Result<Option<Receipt>, EthRpcError> {
        let v = self.call("eth_getTransactionReceipt", json!([hex0x(hash)]))?;
        if v.is_null() {
            return Ok(None);
        }
        let contract = match v.get("contractAddress") {
            None | Some(Value::Null) => None,
            Some(a) => Some(address(a)?),
        };
        Ok(Some(Receipt {
            block_number: quantity_u64(field(&v, "blockNumber")?)?,
            block_hash: hash32(field(&v, "blockHash")?)?,
            status: quantity_u64(field(&v, "status")?)?,
            gas_used: quantity(field(&v, "gasUsed")?)?,
            effective_gas_price: quantity(field(&v, "effectiveGasPrice")?)?,
            contract_address: contract,
        }))
    }

    /// The block at `tag` (a `0x…` number, `latest`, `safe`, `finalized`) with its
    /// transactions; `None` if there is none.
    pub fn block(&self, tag: &str) -> Result<Option<Block>, EthRpcError> {
        let v = self.call("eth_getBlockByNumber", json!([tag, true]))?;
        if v.is_null() {
            return Ok(None);
        }
        let txs = field(&v, "transactions")?
            .as_array()
            .ok_or_else(|| EthRpcError::Decode("`transactions` is not a list".into()))?;
        let mut transactions = Vec::with_capacity(txs.len());
        for t in txs {
            let to = match t.get("to") {
                None | Some(Value::Null) => None,
                Some(a) => Some(address(a)?),
            };
            transactions.push(BlockTx {
                hash: hash32(field(t, "hash")?)?,
                from: address(field(t, "from")?)?,
                to,
                value: quantity(field(t, "value")?)?,
                nonce: quantity_u64(field(t, "nonce")?)?,
            });
        }
        let base_fee = match v.get("baseFeePerGas") {
            None | Some(Value::Null) => None,
            Some(q) => Some(quantity(q)?),
        };
        Ok(Some(Block {
            number: quantity_u64(field(&v, "number")?)?,
            hash: hash32(field(&v, "hash")?)?,
            parent_hash: hash32(field(&v, "parentHash")?)?,
            base_fee_per_gas: base_fee,
            transactions,
        }))
    }

    /// The hash of the block at height `n` (header only), `None` above the tip.
    pub fn block_hash_at(&self, n: u64) -> Result<Option<[u8; 32]>, EthRpcError> {
        let v = self.call("eth_getBlockByNumber", json!([qty(u128::from(n)), false]))?;
        if v.is_null() {
            return Ok(None);
        }
        hash32(field(&v, "hash")?).map(Some)
    }

    /// The block at height `n`.
    pub fn block_at(&self, n: u64) -> Result<Option<Block>, EthRpcError> {
        self.block(&qty(u128::from(n)))
    }

    /// Logs of `contract` with topic 0 `topic0` (and topic 2, the recipient of a `Transfer`, in
    /// `to_any` when not empty) in blocks `from..=to`.
    pub fn logs(
        &self,
        contract: &EthAddress,
        topic0: &[u8; 32],
        to_any: &[EthAddress],
        from: u64,
        to: u64,
    ) -> Result<Vec<Log>, EthRpcError> {
        let recipients: Vec<String> = to_any
            .iter()
            .map(|a| {
                let mut w = [0u8; 32];
                w[12..].copy_from_slice(&a.0);
                hex0x(&w)
            })
            .collect();
        let topics = if recipients.is_empty() {
            json!([hex0x(topic0)])
        } else {
            json!([hex0x(topic0), null, recipients])
        };
        let filter = json!({
            "address": hex0x(&contract.0),
            "topics": topics,
            "fromBlock": qty(u128::from(from)),
            "toBlock": qty(u128::from(to)),
        });
        let v = self.call("eth_getLogs", json!([filter]))?;
        let list = v
            .as_array()
            .ok_or_else(|| EthRpcError::Decode("eth_getLogs: not a list".into()))?;
        let mut out = Vec::with_capacity(list.len());
        for l in list {
            let topics = field(l, "topics")?
                .as_array()
                .ok_or_else(|| EthRpcError::Decode("`topics` is not a list".into()))?
                .iter()
                .map(hash32)
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Log {
                address: address(field(l, "address")?)?,
                topics,
                data: bytes(field(l, "data")?)?,
                block_number: quantity_u64(field(l, "blockNumber")?)?,
                block_hash: hash32(field(l, "blockHash")?)?,
                tx_hash: hash32(field(l, "transactionHash")?)?,
                log_index: quantity_u64(field(l, "logIndex")?)?,
                removed: l.get("removed").and_then(Value::as_bool).unwrap_or(false),
            });
        }
        Ok(out)
    }

    /// `eth_call` of `data` on `contract` at `tag`; the returned bytes.
    pub fn eth_call(&self, contract: &EthAddress, data: &[u8], tag: &str) -> Result<Vec<u8>, EthRpcError> {
        bytes(&self.call(
            "eth_call",
            json!([{"to": hex0x(&contract.0), "data": hex0x(data)}, tag]),
        )?)
    }

    /// An ERC-20 `balanceOf(who)` at `tag`; an answer that does not fit `u128` is a decode error.
    pub fn token_balance(
        &self,
        token: &EthAddress,
        who: &EthAddress,
        tag: &str,
    ) -> Result<u128, EthRpcError> {
        let mut data = vec![0x70, 0xa0, 0x82, 0x31];
        data.extend_from_slice(&[0u8; 12]);
        data.extend_from_slice(&who.0);
        let out = self.eth_call(token, &data, tag)?;
        if out.len() != 32 || out[..16].iter().any(|b| *b != 0) {
            return Err(EthRpcError::Decode(format!("balanceOf: {}", hex::encode(&out))));
        }
        let mut w = [0u8; 16];
        w.copy_from_slice(&out[16..]);
        Ok(u128::from_be_bytes(w))
    }

    // ---- Anvil only (tests) ----

    /// Mines `blocks` blocks.
    pub fn mine(&self, blocks: u64) -> Result<(), EthRpcError> {
        self.call("anvil_mine", json!([qty(u128::from(blocks))]))?;
        Ok(())
    }

    /// Replaces the last `depth` blocks with as many empty ones (a real reorg).
    pub fn reorg(&self, depth: u64) -> Result<(), EthRpcError> {
        self.call("anvil_reorg", json!([depth, []]))?;
        Ok(())
    }

    /// Sets an account's balance.
    pub fn set_balance(&self, who: &EthAddress, wei: u128) -> Result<(), EthRpcError> {
        self.call("anvil_setBalance", json!([hex0x(&who.0), qty(wei)]))?;
        Ok(())
    }

    /// `eth_sendTransaction` from one of the node's own unlocked accounts (tests: funding,
    /// deploying the test token); the transaction hash.
    pub fn send_from_dev(
        &self,
        from: &EthAddress,
        to: Option<&EthAddress>,
        value: u128,
        data: &[u8],
    ) -> Result<[u8; 32], EthRpcError> {
        let mut tx = json!({"from": hex0x(&from.0), "value": qty(value), "data": hex0x(data)});
        if let Some(to) = to {
            tx["to"] = json!(hex0x(&to.0));
        }
        hash32(&self.call("eth_sendTransaction", json!([tx]))?)
    }

    /// The node's own unlocked accounts.
    pub fn accounts(&self) -> Result<Vec<EthAddress>, EthRpcError> {
        let v = self.call("eth_accounts", json!([]))?;
        v.as_array()
            .ok_or_else(|| EthRpcError::Decode("eth_accounts: not a list".into()))?
            .iter()
            .map(address)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_exact_and_bounded() {
        assert_eq!(quantity(&json!("0x0")).unwrap(), 0);
        assert_eq!(
            quantity(&json!("0xde0b6b3a7640000")).unwrap(),
            1_000_000_000_000_000_000
        );
        assert_eq!(
            quantity(&json!(format!("0x{}", "f".repeat(32)))).unwrap(),
            u128::MAX
        );
        assert!(quantity(&json!(format!("0x1{}", "0".repeat(32)))).is_err());
        assert!(quantity(&json!("12")).is_err());
        assert!(quantity(&json!(12)).is_err());
        assert!(quantity(&json!("0x")).is_err());
    }
}
