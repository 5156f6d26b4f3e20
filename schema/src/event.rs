//! Events: the immutable facts of a cylinder's history.
//!
//! Every handheld operation, registration, inspection result, scrap, regulator finding and
//! correction is one [`Event`]. Its canonical encoding is postcard (field order as declared
//! here, integers as varints; floats are avoided: masses are whole grams). Its id is the
//! SHA-256 of that encoding, and the node that wrote it signs the id with its Ed25519 key.
//! The set of events is a grow-only set: merging is set union, so no merge can lose or
//! alter a fact. A mistake is never edited; a [`EventBody::Correction`] declares it (EPCIS
//! `errorDeclaration`), and corrections never lift a safety fact (see [`crate::state`]).

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::Day;
use crate::codes::FullCode;
use crate::hlc::Hlc;
use crate::vocab::Medium;

/// Version byte written before every canonical encoding.
pub const ENCODING_VERSION: u8 = 1;

/// The SHA-256 of an event's canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId(pub [u8; 32]);

/// A node's public key; the node's identity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

fn hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Parses lowercase or uppercase hex into exactly `N` bytes.
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventId(")?;
        hex(&self.0[..6], f)?;
        f.write_str("..)")
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeId(")?;
        hex(&self.0[..6], f)?;
        f.write_str("..)")
    }
}

/// A regulator finding either places a hold or releases one it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FindingAction {
    Hold,
    Release,
}

/// EPCIS error-declaration reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CorrectionReason {
    DidNotOccur,
    IncorrectData,
}

/// What happened. Field names are part of the canonical encoding: add variants at the end.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventBody {
    /// The archive record was created (建档). Carries the owner at registration time.
    Register { owner: String },
    /// A tag was bound to the cylinder (发卡 / 绑定标签).
    BindTag { tag: String },
    /// Received as empty into an empty store (入空瓶库).
    ReceiveEmpty { warehouse: String },
    /// Pre-fill check (充装前检查); a failure sends the cylinder to inspection.
    PreFillCheck { passed: bool, failed_items: Vec<String> },
    /// Filled (充装).
    Fill { medium: Medium, filled_mass_g: u64, batch: Option<String> },
    /// Post-fill check (充装后检查).
    PostFillCheck { passed: bool, failed_items: Vec<String> },
    /// Moved into a full store (入满瓶库).
    StoreFull { warehouse: String },
    /// Left the station on a delivery (出库 / 配送).
    Dispatch { order: Option<String>, driver: String },
    /// Handed to a customer (已配送).
    Deliver { customer: String, order: Option<String> },
    /// Collected back from a customer (回收).
    Return { customer: String, slip: Option<String> },
    /// Repaired (维修).
    Repair { description: String },
    /// Sent to periodic inspection (送检).
    SendToInspection { reason: String },
    /// Result of a periodic inspection (检验); `next_due` is the new due date when passed.
    InspectionResult { passed: bool, report_no: String, inspected_on: Day, next_due: Option<Day> },
    /// Scrapped (报废). Nothing ever un-scraps a cylinder.
    Scrap { reason: String },
    /// A regulator's finding: a hold blocks fills until a release naming `finding` arrives.
    RegulatorFinding { action: FindingAction, finding: String, note: String },
    /// Declares another event wrong (EPCIS errorDeclaration). Never lifts a safety fact.
    Correction { target: EventId, reason: CorrectionReason, note: String },
}

impl EventBody {
    /// Stable kind name used in the API, indexes and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Register { .. } => "register",
            EventBody::BindTag { .. } => "bind_tag",
            EventBody::ReceiveEmpty { .. } => "receive_empty",
            EventBody::PreFillCheck { .. } => "pre_fill_check",
            EventBody::Fill { .. } => "fill",
            EventBody::PostFillCheck { .. } => "post_fill_check",
            EventBody::StoreFull { .. } => "store_full",
            EventBody::Dispatch { .. } => "dispatch",
            EventBody::Deliver { .. } => "deliver",
            EventBody::Return { .. } => "return",
            EventBody::Repair { .. } => "repair",
            EventBody::SendToInspection { .. } => "send_to_inspection",
            EventBody::InspectionResult { .. } => "inspection_result",
            EventBody::Scrap { .. } => "scrap",
            EventBody::RegulatorFinding { .. } => "regulator_finding",
            EventBody::Correction { .. } => "correction",
        }
    }
}

/// One fact about one cylinder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    pub cylinder: FullCode,
    pub hlc: Hlc,
    /// Wall time of the recording node, milliseconds since the Unix epoch (UTC).
    pub wall_ms: i64,
    pub node: NodeId,
    /// Staff account that performed the operation.
    pub operator: String,
    /// Where it happened: warehouse, station or customer id.
    pub place: String,
    pub body: EventBody,
}

/// Why bytes are not a valid signed event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event encoding version {0} is not supported")]
    Version(u8),
    #[error("event bytes do not decode: {0}")]
    Decode(String),
    #[error("event {0} signature does not verify against its node key")]
    Signature(EventId),
}

impl Event {
    /// The canonical encoding: version byte + postcard.
    pub fn encode(&self) -> Vec<u8> {
        let out = vec![ENCODING_VERSION];
        postcard::to_extend(self, out).expect("writing to a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Event, EventError> {
        match bytes.split_first() {
            Some((&ENCODING_VERSION, rest)) => {
                let (event, tail) =
                    postcard::take_from_bytes::<Event>(rest).map_err(|e| EventError::Decode(e.to_string()))?;
                if !tail.is_empty() {
                    return Err(EventError::Decode(format!("{} trailing bytes", tail.len())));
                }
                Ok(event)
            }
            Some((&v, _)) => Err(EventError::Version(v)),
            None => Err(EventError::Decode("empty".into())),
        }
    }

    /// The node that wrote the event of canonical encoding `bytes`, read without decoding
    /// the rest (the fields before it have the layout of [`Event`]'s first four).
    pub fn node_of(bytes: &[u8]) -> Result<NodeId, EventError> {
        #[derive(Deserialize)]
        struct Head {
            _cylinder: FullCode,
            _hlc: Hlc,
            _wall_ms: i64,
            node: NodeId,
        }
        match bytes.split_first() {
            Some((&ENCODING_VERSION, rest)) => postcard::take_from_bytes::<Head>(rest)
                .map(|(head, _)| head.node)
                .map_err(|e| EventError::Decode(e.to_string())),
            Some((&v, _)) => Err(EventError::Version(v)),
            None => Err(EventError::Decode("empty".into())),
        }
    }

    pub fn id_of(bytes: &[u8]) -> EventId {
        EventId(Sha256::digest(bytes).into())
    }

    /// Encodes, hashes and signs with the node key. `self.node` must be that key's public half.
    pub fn sign(self, key: &SigningKey) -> SignedEvent {
        assert_eq!(self.node.0, key.verifying_key().to_bytes(), "event node must be the signer");
        let bytes = self.encode();
        let id = Event::id_of(&bytes);
        let signature = key.sign(&id.0).to_bytes();
        SignedEvent { id, bytes, signature, event: self }
    }
}

/// An event with its canonical bytes, id and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEvent {
    pub id: EventId,
    pub bytes: Vec<u8>,
    pub signature: [u8; 64],
    pub event: Event,
}

impl SignedEvent {
    /// The stored form: 64-byte signature followed by the canonical bytes.
    pub fn to_stored(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.bytes.len());
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&self.bytes);
        out
    }

    /// Reads the stored form back and checks hash and signature.
    pub fn from_stored(stored: &[u8]) -> Result<SignedEvent, EventError> {
        if stored.len() < 65 {
            return Err(EventError::Decode("shorter than a signature".into()));
        }
        let (sig, bytes) = stored.split_at(64);
        let signature: [u8; 64] = sig.try_into().expect("split at 64");
        let event = Event::decode(bytes)?;
        let signed = SignedEvent { id: Event::id_of(bytes), bytes: bytes.to_vec(), signature, event };
        signed.verify()?;
        Ok(signed)
    }

    /// Reads the stored form without checking the signature (for data this node wrote or
    /// already verified on receipt).
    pub fn from_stored_trusted(stored: &[u8]) -> Result<SignedEvent, EventError> {
        let bytes = stored.get(64..).ok_or_else(|| EventError::Decode("shorter than a signature".into()))?;
        SignedEvent::from_stored_known(stored, Event::id_of(bytes))
    }

    /// [`SignedEvent::from_stored_trusted`] for a caller that already knows the id (the
    /// store keeps it in the key): nothing is hashed.
    pub fn from_stored_known(stored: &[u8], id: EventId) -> Result<SignedEvent, EventError> {
        if stored.len() < 65 {
            return Err(EventError::Decode("shorter than a signature".into()));
        }
        let (sig, bytes) = stored.split_at(64);
        SignedEvent::from_parts(sig.try_into().expect("split at 64"), bytes, id)
    }

    /// An event from its signature (zero bytes when a seal stands for it) and canonical
    /// bytes, for a caller that already knows the id; nothing is hashed or checked.
    pub fn from_parts(signature: [u8; 64], bytes: &[u8], id: EventId) -> Result<SignedEvent, EventError> {
        let event = Event::decode(bytes)?;
        Ok(SignedEvent { id, bytes: bytes.to_vec(), signature, event })
    }

    pub fn verify(&self) -> Result<(), EventError> {
        let key = VerifyingKey::from_bytes(&self.event.node.0).map_err(|_| EventError::Signature(self.id))?;
        key.verify(&self.id.0, &Signature::from_bytes(&self.signature)).map_err(|_| EventError::Signature(self.id))
    }

    /// Checks many signatures at once (Ed25519 batch verification, about twice as fast
    /// per signature). On failure it says only that some signature is bad: check them
    /// one by one with [`SignedEvent::verify`] to find which.
    pub fn verify_batch(events: &[SignedEvent]) -> bool {
        // Decompressing a key costs a third of a verification, and a batch usually has a
        // handful of signers: decompress each once.
        let mut known: std::collections::BTreeMap<[u8; 32], VerifyingKey> = std::collections::BTreeMap::new();
        let mut keys = Vec::with_capacity(events.len());
        for e in events {
            let key = match known.get(&e.event.node.0) {
                Some(k) => *k,
                None => match VerifyingKey::from_bytes(&e.event.node.0) {
                    Ok(k) => *known.entry(e.event.node.0).or_insert(k),
                    Err(_) => return false,
                },
            };
            keys.push(key);
        }
        let messages: Vec<&[u8]> = events.iter().map(|e| &e.id.0[..]).collect();
        let signatures: Vec<Signature> = events.iter().map(|e| Signature::from_bytes(&e.signature)).collect();
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    }

    /// The order in which derivation applies events: (HLC, node, id).
    pub fn order_key(&self) -> (Hlc, NodeId, EventId) {
        (self.event.hlc, self.event.node, self.id)
    }
}

#[cfg(test)]
pub(crate) mod tests;
