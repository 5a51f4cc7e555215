//! Our descriptors, checksums and derived addresses agree with the node's.

use crate::support::*;
use kinko_chain::keys::{
    cold_account_path, cold_descriptor, derive_cold, derive_hot, descriptor_checksum, hot_descriptor,
    watch_key, ColdKeys,
};

#[test]
fn checksums_and_addresses_match_the_node() {
    let node = node();
    let rpc = node.rpc();
    let key = hot_key(1);
    let cold = ColdKeys {
        threshold: 2,
        keys: (11..=13)
            .map(|s| watch_key(&master(s), &cold_account_path(NET)))
            .collect(),
    };
    let descs = [
        hot_descriptor(&key, 0),
        hot_descriptor(&key, 1),
        cold_descriptor(&cold),
    ];
    for desc in &descs {
        let (body, checksum) = desc.split_once('#').unwrap();
        assert_eq!(rpc.get_descriptor_info(body).unwrap(), checksum, "{desc}");
        assert_eq!(descriptor_checksum(body).as_deref(), Some(checksum));
        // The apostrophe form has its own checksum; Core agrees on that one too.
        let apostrophe = body.replace("h/", "'/").replace("h]", "']");
        assert_eq!(
            rpc.get_descriptor_info(&apostrophe).unwrap(),
            descriptor_checksum(&apostrophe).unwrap()
        );
    }
    let indexes = [0u32, 1, 2, 19, 1000];
    for chain in [0, 1] {
        let desc = hot_descriptor(&key, chain);
        for &i in &indexes {
            let node_addr = rpc.derive_addresses(&desc, (i, i)).unwrap();
            assert_eq!(
                node_addr,
                vec![derive_hot(NET, &key, chain, i).unwrap().address],
                "hot {chain}/{i}"
            );
        }
    }
    let desc = cold_descriptor(&cold);
    let range = rpc.derive_addresses(&desc, (0, 4)).unwrap();
    let ours: Vec<String> = (0..=4)
        .map(|i| derive_cold(NET, &cold, i).unwrap().address)
        .collect();
    assert_eq!(range, ours);
    for &i in &indexes {
        assert_eq!(
            rpc.derive_addresses(&desc, (i, i)).unwrap(),
            vec![derive_cold(NET, &cold, i).unwrap().address]
        );
    }
}
