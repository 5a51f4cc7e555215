//! Every signature the signer makes witnesses the engine journal's head: custody sends the head
//! with each signing request, and the signer keeps it (with its cosignature) in its own log, so
//! a journal rewritten on the host after that withdrawal no longer matches what it saw.

use crate::rig::{Options, Rig, COIN, PASSPHRASE};
use kinko_core::wallet::WithdrawalStatus;

#[test]
fn a_withdrawal_signature_witnesses_the_journal_head() {
    let mut rig = Rig::start(Options::default());
    let alice = rig.user(1);
    rig.deposit(alice.0, "1");
    let dest = rig.miner().get_new_address("alice elsewhere").unwrap();
    let to = rig.withdrawal_address(alice.0, &dest);
    rig.poll();
    rig.signer_waits();
    let w = rig.withdraw(&alice, to, COIN / 4).unwrap();
    rig.poll();
    assert_eq!(rig.withdrawal(w.id).status, WithdrawalStatus::Broadcast);

    let lines = kinko_signer::log::verify(&rig.dir.path().join("signer.log")).unwrap();
    let signed = lines
        .iter()
        .position(|l| matches!(l.entry, kinko_signer::log::Entry::Signed { .. }))
        .expect("the withdrawal was signed");
    // The head was witnessed on the way to that signature, and is a real head of the journal.
    let cos = kinko_signer::log::cosignatures(&lines[..signed]);
    let head = cos
        .iter()
        .rfind(|c| c.log == kinko_audit::witness::LOG_JOURNAL)
        .expect("the journal head was witnessed with the signature");
    let journal = rig.dir.path().join("data").join("journal");
    let rec = kinko_journal::read_from(&journal, head.size)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(rec.seq, head.size);
    assert_eq!(hex::encode(rec.hash), head.root);
    let key = kinko_signer::Keystore::open_with(&rig.dir.path().join("hot.keystore"), PASSPHRASE, true)
        .unwrap()
        .witness_key()
        .verifying_key();
    assert_eq!(head.verify(&key).unwrap(), rec.hash);
}
