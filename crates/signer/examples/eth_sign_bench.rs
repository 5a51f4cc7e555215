//! Withdrawals signed per second by the Ethereum signer: each one decoded from its raw
//! unsigned EIP-1559 bytes, checked (chain id, payment, calldata, fees, nonce) and signed with
//! the hot key, alternating ETH and token payments.
//!
//! `cargo run -p kinko-signer --example eth_sign_bench [-- N]` (N withdrawals, default 20 000).

use bitcoin::bip32::Xpriv;
use bitcoin::NetworkKind;
use kinko_chain::eth::{erc20_transfer, Eip1559, EthAddress};
use kinko_signer::eth::{EthPolicy, EthSigner, Intent, NonceBook, Payment};
use std::time::Instant;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let token = EthAddress([0xcc; 20]);
    let policy = EthPolicy {
        chain_id: 31337,
        tokens: vec![token],
        max_fee_per_gas_max: 200_000_000_000,
        priority_fee_max: 10_000_000_000,
        gas_limit_max: 100_000,
        fee_max_wei: 100_000 * 200_000_000_000,
    };
    let master = Xpriv::new_master(NetworkKind::Test, &[7u8; 32]).expect("master key");
    let mut signer = EthSigner::new(policy, &master, NonceBook::default()).expect("signer");
    // The withdrawals are built before the clock starts: only the signer's work is timed.
    let work: Vec<(Intent, Vec<u8>)> = (0..n)
        .map(|i| {
            let mut dest = [0u8; 20];
            dest[..8].copy_from_slice(&i.to_be_bytes());
            dest[19] = 1;
            let destination = EthAddress(dest);
            let amount = u128::from(i) + 1;
            let (payment, to, value, data, gas) = if i % 2 == 0 {
                (Payment::Ether, destination, amount, Vec::new(), 21_000)
            } else {
                (
                    Payment::Token(token),
                    token,
                    0,
                    erc20_transfer(&destination, amount),
                    60_000,
                )
            };
            let tx = Eip1559 {
                chain_id: 31337,
                nonce: i,
                max_priority_fee_per_gas: 1_000_000_000,
                max_fee_per_gas: 50_000_000_000,
                gas_limit: gas,
                to,
                value,
                data,
            };
            (
                Intent {
                    payment,
                    destination,
                    amount,
                },
                tx.encode_unsigned(),
            )
        })
        .collect();
    let start = Instant::now();
    let mut bytes = 0usize;
    for (intent, raw) in &work {
        let (_, signed) = signer.sign_withdrawal(intent, raw).expect("signed");
        bytes += signed.raw.len();
    }
    let elapsed = start.elapsed();
    let per_s = u128::from(n) * 1_000_000 / elapsed.as_micros().max(1);
    println!(
        "eth_sign_bench: {n} withdrawals checked and signed in {} ms: {per_s} per second ({bytes} bytes signed)",
        elapsed.as_millis()
    );
}
