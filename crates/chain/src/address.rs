//! Addresses of the Litecoin networks ↔ output scripts. Segwit v0 (P2WPKH, P2WSH) and v1+
//! (bech32m) programs, and base58 P2PKH / P2SH (both P2SH versions). Anything else is refused
//! with an [`AddressError`]; nothing here panics on input.

use crate::network::Network;
use bitcoin::bech32::{segwit, Hrp};
use bitcoin::hashes::Hash as _;
use bitcoin::script::{Script, ScriptBuf};
use bitcoin::{PubkeyHash, ScriptHash, WitnessProgram, WitnessVersion};

/// Longest address we parse (bech32 is at most 90 characters).
pub const ADDRESS_LEN_MAX: usize = 90;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty or longer than {ADDRESS_LEN_MAX} characters")]
    Length,
    #[error("address belongs to another network")]
    WrongNetwork,
    #[error("address is not valid bech32/bech32m or base58check")]
    Encoding,
    #[error("address has an invalid witness program")]
    WitnessProgram,
}

/// The output script an address pays to, if the address is valid on `net`.
pub fn script_for(net: Network, address: &str) -> Result<ScriptBuf, AddressError> {
    if address.is_empty() || address.len() > ADDRESS_LEN_MAX {
        return Err(AddressError::Length);
    }
    let lower = address.to_ascii_lowercase();
    if lower.starts_with(&format!("{}1", net.hrp())) {
        let (hrp, version, program) = segwit::decode(address).map_err(|_| AddressError::Encoding)?;
        if hrp != Hrp::parse(net.hrp()).map_err(|_| AddressError::Encoding)? {
            return Err(AddressError::WrongNetwork);
        }
        let version = WitnessVersion::try_from(version).map_err(|_| AddressError::WitnessProgram)?;
        let wp = WitnessProgram::new(version, &program).map_err(|_| AddressError::WitnessProgram)?;
        return Ok(ScriptBuf::new_witness_program(&wp));
    }
    if Network::ALL
        .iter()
        .any(|n| *n != net && lower.starts_with(&format!("{}1", n.hrp())))
    {
        return Err(AddressError::WrongNetwork);
    }
    let data = bitcoin::base58::decode_check(address).map_err(|_| AddressError::Encoding)?;
    if data.len() != 21 {
        return Err(AddressError::Encoding);
    }
    let hash: [u8; 20] = data[1..].try_into().map_err(|_| AddressError::Encoding)?;
    if data[0] == net.p2pkh_version() {
        Ok(ScriptBuf::new_p2pkh(&PubkeyHash::from_byte_array(hash)))
    } else if net.p2sh_versions().contains(&data[0]) {
        Ok(ScriptBuf::new_p2sh(&ScriptHash::from_byte_array(hash)))
    } else {
        Err(AddressError::WrongNetwork)
    }
}

/// The address of an output script on `net`, for the standard script kinds; `None` for any
/// other script (bare multisig, OP_RETURN, non-standard).
pub fn address_for(net: Network, script: &Script) -> Option<String> {
    let b = script.as_bytes();
    if let Some(version) = script.witness_version() {
        let hrp = Hrp::parse(net.hrp()).ok()?;
        let program = b.get(2..)?;
        WitnessProgram::new(version, program).ok()?;
        return segwit::encode(hrp, version.into(), program).ok();
    }
    let (ver, hash) = if script.is_p2pkh() {
        (net.p2pkh_version(), b.get(3..23)?)
    } else if script.is_p2sh() {
        (net.p2sh_versions()[0], b.get(2..22)?)
    } else {
        return None;
    };
    let mut data = Vec::with_capacity(21);
    data.push(ver);
    data.extend_from_slice(hash);
    Some(bitcoin::base58::encode_check(&data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segwit_round_trip_and_network_checked() {
        let wpkh =
            ScriptBuf::new_witness_program(&WitnessProgram::new(WitnessVersion::V0, &[7u8; 20]).unwrap());
        let a = address_for(Network::LitecoinRegtest, &wpkh).unwrap();
        assert!(a.starts_with("rltc1q"), "{a}");
        assert_eq!(script_for(Network::LitecoinRegtest, &a).unwrap(), wpkh);
        assert_eq!(script_for(Network::Litecoin, &a), Err(AddressError::WrongNetwork));
        let main = address_for(Network::Litecoin, &wpkh).unwrap();
        assert!(main.starts_with("ltc1q"));
        let wsh =
            ScriptBuf::new_witness_program(&WitnessProgram::new(WitnessVersion::V0, &[9u8; 32]).unwrap());
        let a = address_for(Network::LitecoinRegtest, &wsh).unwrap();
        assert_eq!(script_for(Network::LitecoinRegtest, &a).unwrap(), wsh);
    }

    #[test]
    fn base58_round_trip() {
        let p2pkh = ScriptBuf::new_p2pkh(&PubkeyHash::from_byte_array([3u8; 20]));
        let a = address_for(Network::Litecoin, &p2pkh).unwrap();
        assert!(a.starts_with('L'), "{a}");
        assert_eq!(script_for(Network::Litecoin, &a).unwrap(), p2pkh);
        let p2sh = ScriptBuf::new_p2sh(&ScriptHash::from_byte_array([4u8; 20]));
        let a = address_for(Network::Litecoin, &p2sh).unwrap();
        assert!(a.starts_with('M'), "{a}");
        assert_eq!(script_for(Network::Litecoin, &a).unwrap(), p2sh);
        // Bitcoin mainnet P2PKH is not a Litecoin address.
        assert_eq!(
            script_for(Network::Litecoin, "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"),
            Err(AddressError::WrongNetwork)
        );
    }

    #[test]
    fn garbage_is_refused_not_panicking() {
        for s in [
            "",
            "rltc1",
            "rltc1qqqqq",
            "ltc1zzzz",
            "L",
            "xyz",
            &"r".repeat(200),
            "rltc1q\u{0}",
        ] {
            assert!(script_for(Network::LitecoinRegtest, s).is_err(), "{s:?}");
        }
    }
}
