//! Seals: one signature for many events of one node.
//!
//! Every event is signed when it is written, so that it can travel alone at once. Once a
//! node has written enough events (or they are old enough), it seals them: one Ed25519
//! signature over the list of their ids. A sealed event then travels without its own
//! signature (its 64 bytes were two thirds of an event on the wire): in their place it
//! names the seal that lists it ([`seal_ref`]), and is checked by finding its id in that
//! seal, which must be its own node's: a binary search instead of a signature check.
//!
//! A seal lists the first 16 bytes of each id (SHA-256 truncated to 128 bits: forging an
//! event that matches a sealed prefix is a second-preimage search of 2^128 work), and
//! holds at most [`Seal::MAX_IDS`] of them.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::event::{EventId, NodeId};

/// Version byte written before every seal.
pub const SEAL_VERSION: u8 = 1;

/// The part of an event id a seal lists.
pub type SealedId = [u8; 16];

/// The sealed id of an event id.
pub fn sealed_id(id: &EventId) -> SealedId {
    let mut out = [0; 16];
    out.copy_from_slice(&id.0[..16]);
    out
}

/// A seal's id: SHA-256 of its encoding (its item id in the seals scope).
pub type SealId = [u8; 32];

/// The signature field of an event a seal stands for: 32 zero bytes, then the id of the
/// seal that lists it. A receiver finds that seal by its id and the event's id in it; no
/// table of sealed ids is needed on either side. (An Ed25519 signature never starts with
/// 32 zero bytes: that is the encoding of a point no signer's nonce gives.)
pub fn seal_ref(seal: &SealId) -> [u8; 64] {
    let mut out = [0; 64];
    out[32..].copy_from_slice(seal);
    out
}

/// The seal an event's signature field names, or `None` for a signature (or for 64 zero
/// bytes, which name no seal).
pub fn named_seal(signature: &[u8; 64]) -> Option<SealId> {
    let (zeros, seal) = signature.split_at(32);
    match zeros.iter().all(|b| *b == 0) && seal.iter().any(|b| *b != 0) {
        true => seal.try_into().ok(),
        false => None,
    }
}

/// One node's signature over a list of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    pub signer: NodeId,
    pub ids: Vec<SealedId>,
    pub signature: [u8; 64],
}

/// Why bytes are not a valid seal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("seal encoding version {0} is not supported")]
    Version(u8),
    #[error("seal bytes do not decode: {0}")]
    Decode(String),
    #[error("seal signature does not verify against its signer")]
    Signature,
}

impl Seal {
    /// The most ids one seal lists (64 KiB of ids).
    pub const MAX_IDS: usize = 4096;

    /// Seals `ids` (at most [`Seal::MAX_IDS`]) with the node key.
    pub fn make(key: &SigningKey, ids: Vec<SealedId>) -> Seal {
        assert!(ids.len() <= Seal::MAX_IDS, "a seal lists at most {} ids", Seal::MAX_IDS);
        let signer = NodeId(key.verifying_key().to_bytes());
        let signature = key.sign(&Seal::message(&signer, &ids)).to_bytes();
        Seal { signer, ids, signature }
    }

    /// What the signer signs: SHA-256 of a label, the signer and the ids in order.
    fn message(signer: &NodeId, ids: &[SealedId]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"gas-cylinder seal v1");
        h.update(signer.0);
        h.update((ids.len() as u32).to_be_bytes());
        for id in ids {
            h.update(id);
        }
        h.finalize().into()
    }

    /// Version byte, signer (32), count (u32, big-endian), ids (16 each), signature (64).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 32 + 4 + 16 * self.ids.len() + 64);
        out.push(SEAL_VERSION);
        out.extend_from_slice(&self.signer.0);
        out.extend_from_slice(&(self.ids.len() as u32).to_be_bytes());
        for id in &self.ids {
            out.extend_from_slice(id);
        }
        out.extend_from_slice(&self.signature);
        out
    }

    /// The id of an encoded seal.
    pub fn id_of(encoded: &[u8]) -> SealId {
        Sha256::digest(encoded).into()
    }

    /// Decodes and checks the signature.
    pub fn decode(bytes: &[u8]) -> Result<Seal, SealError> {
        let seal = Seal::decode_trusted(bytes)?;
        seal.verify()?;
        Ok(seal)
    }

    /// Decodes without checking the signature: for a seal this node checked when it came.
    pub fn decode_trusted(bytes: &[u8]) -> Result<Seal, SealError> {
        let (&version, rest) = bytes.split_first().ok_or_else(|| SealError::Decode("empty".into()))?;
        if version != SEAL_VERSION {
            return Err(SealError::Version(version));
        }
        let short = || SealError::Decode("truncated".into());
        let signer: [u8; 32] = rest.get(..32).ok_or_else(short)?.try_into().map_err(|_| short())?;
        let count: [u8; 4] = rest.get(32..36).ok_or_else(short)?.try_into().map_err(|_| short())?;
        let count = u32::from_be_bytes(count) as usize;
        if count == 0 || count > Seal::MAX_IDS {
            return Err(SealError::Decode(format!("{count} ids (1 to {} allowed)", Seal::MAX_IDS)));
        }
        let body = &rest[36..];
        if body.len() != 16 * count + 64 {
            return Err(SealError::Decode(format!("{} bytes for {count} ids", body.len())));
        }
        let (ids, signature) = body.split_at(16 * count);
        let ids = ids.chunks_exact(16).map(|c| c.try_into().map_err(|_| short())).collect::<Result<Vec<_>, _>>()?;
        let signature: [u8; 64] = signature.try_into().map_err(|_| short())?;
        Ok(Seal { signer: NodeId(signer), ids, signature })
    }

    pub fn verify(&self) -> Result<(), SealError> {
        let key = VerifyingKey::from_bytes(&self.signer.0).map_err(|_| SealError::Signature)?;
        key.verify(&Seal::message(&self.signer, &self.ids), &Signature::from_bytes(&self.signature))
            .map_err(|_| SealError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_seal_round_trips_and_refuses_any_change() {
        let ids: Vec<SealedId> = (0..300u16)
            .map(|i| [i.to_be_bytes()[0], i.to_be_bytes()[1], 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7])
            .collect();
        let seal = Seal::make(&key(1), ids.clone());
        let bytes = seal.encode();
        assert_eq!(bytes.len(), 1 + 32 + 4 + 16 * 300 + 64);
        assert_eq!(Seal::decode(&bytes).unwrap(), seal);
        // Every byte matters: a changed id, count, signer or signature is refused.
        for at in [0, 1, 33, 36, 37, 36 + 16 * 150, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(Seal::decode(&bad).is_err(), "a change at byte {at} was accepted");
        }
        // Another key's signature over the same ids is not this signer's.
        let mut other = Seal::make(&key(2), ids);
        other.signer = seal.signer;
        assert_eq!(Seal::decode(&other.encode()), Err(SealError::Signature));
        for cut in [0, 10, 36, bytes.len() - 1] {
            assert!(Seal::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn a_seal_holds_one_to_max_ids() {
        let empty = Seal::make(&key(1), Vec::new());
        assert!(Seal::decode(&empty.encode()).is_err());
        let full = Seal::make(&key(1), vec![[3; 16]; Seal::MAX_IDS]);
        assert!(Seal::decode(&full.encode()).is_ok());
    }

    #[test]
    fn a_seal_ref_names_its_seal_and_a_signature_names_none() {
        let seal = Seal::make(&key(1), vec![[3; 16]]);
        let id = Seal::id_of(&seal.encode());
        assert_eq!(named_seal(&seal_ref(&id)), Some(id));
        assert_eq!(named_seal(&[0; 64]), None, "64 zero bytes name no seal");
        let signed = crate::event::EventId([9; 32]);
        let signature = key(1).sign(&signed.0).to_bytes();
        assert_eq!(named_seal(&signature), None);
        // A trusted decode reads the same seal, and skips only the signature check.
        assert_eq!(Seal::decode_trusted(&seal.encode()).unwrap(), seal);
        let mut forged = seal.encode();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(Seal::decode(&forged).is_err());
        assert!(Seal::decode_trusted(&forged).is_ok());
    }
}
