//! Replication frames and their encoding.
//!
//! On the wire a frame is a 4-byte big-endian length, then that many bytes: one version
//! byte and the postcard encoding of [`Frame`]. Every decode of peer bytes returns an
//! error on bad input; none panics.

use serde::{Deserialize, Serialize};

use crate::fingerprint::{Fingerprint, Id};

/// Protocol version written into every frame.
pub const VERSION: u8 = 2;
/// Largest frame accepted, in bytes (after the length prefix).
pub const FRAME_LEN_MAX: usize = 8 << 20;
/// Longest scope and prefix accepted from a peer.
pub const SCOPE_LEN_MAX: usize = 64;

/// One message of the reconciliation protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// My fingerprint of the ids under `prefix` in `scope`.
    Fingerprint { scope: Vec<u8>, prefix: Vec<u8>, fp: Fingerprint },
    /// Your root fingerprint equals mine: this scope is in sync.
    InSync { scope: Vec<u8>, fp: Fingerprint },
    /// My fingerprints differ from yours under `prefix`; here are mine one byte deeper
    /// (non-empty children only).
    Split { scope: Vec<u8>, prefix: Vec<u8>, children: Vec<(u8, Fingerprint)> },
    /// Every id I have under `prefix`: send me what I lack, ask for what you lack.
    IdList { scope: Vec<u8>, prefix: Vec<u8>, ids: Vec<Id> },
    /// Please send these items.
    Want { scope: Vec<u8>, ids: Vec<Id> },
    /// Items (stored form; the receiver derives ids and checks them).
    Items { scope: Vec<u8>, items: Vec<Vec<u8>> },
    /// Everything I added to `scope` since our last sync has been sent (possibly nothing:
    /// too many changes, or no checkpoint); the round's fingerprints may follow.
    Pushed { scope: Vec<u8> },
}

/// Why bytes from a peer are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {FRAME_LEN_MAX}")]
    TooLarge(usize),
    #[error("frame version {0} is not supported (this node speaks {VERSION})")]
    Version(u8),
    #[error("frame does not decode: {0}")]
    Decode(String),
    #[error("frame field out of bounds: {0}")]
    Bounds(&'static str),
}

impl Frame {
    /// Length-prefixed encoding.
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(self).expect("serialising to a Vec cannot fail");
        let len = body.len() + 1;
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.push(VERSION);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes one frame body (without the length prefix).
    pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
        if body.len() > FRAME_LEN_MAX {
            return Err(FrameError::TooLarge(body.len()));
        }
        let (&version, rest) = body.split_first().ok_or_else(|| FrameError::Decode("empty frame".into()))?;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let (frame, tail) = postcard::take_from_bytes::<Frame>(rest).map_err(|e| FrameError::Decode(e.to_string()))?;
        if !tail.is_empty() {
            return Err(FrameError::Decode(format!("{} trailing bytes", tail.len())));
        }
        frame.check_bounds()?;
        Ok(frame)
    }

    fn check_bounds(&self) -> Result<(), FrameError> {
        let (scope, prefix) = match self {
            Frame::Fingerprint { scope, prefix, .. }
            | Frame::Split { scope, prefix, .. }
            | Frame::IdList { scope, prefix, .. } => (scope, prefix.len()),
            Frame::InSync { scope, .. }
            | Frame::Want { scope, .. }
            | Frame::Items { scope, .. }
            | Frame::Pushed { scope } => (scope, 0),
        };
        if scope.len() > SCOPE_LEN_MAX {
            return Err(FrameError::Bounds("scope longer than 64 bytes"));
        }
        if prefix > 32 {
            return Err(FrameError::Bounds("prefix longer than an id"));
        }
        if let Frame::Split { children, .. } = self
            && (children.len() > 256 || children.windows(2).any(|w| w[0].0 >= w[1].0))
        {
            return Err(FrameError::Bounds("split children must be sorted and distinct"));
        }
        Ok(())
    }
}

/// Reassembles frames from a byte stream.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if any. An error leaves the stream unusable: close it.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > FRAME_LEN_MAX {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = Frame::decode(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn frames_round_trip_through_a_split_stream() {
        let frames = vec![
            Frame::Fingerprint {
                scope: b"3701020001".to_vec(),
                prefix: vec![],
                fp: Fingerprint { count: 3, hash: [7; 16] },
            },
            Frame::Split {
                scope: vec![],
                prefix: vec![1],
                children: vec![(0, Fingerprint::default()), (9, Fingerprint::default())],
            },
            Frame::IdList { scope: vec![], prefix: vec![1, 2], ids: vec![[3; 32]] },
            Frame::Items { scope: vec![], items: vec![vec![1, 2, 3]] },
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(5) {
            d.push(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(Frame::decode(&[1, 0]), Err(FrameError::Version(1)));
        assert!(matches!(Frame::decode(&[]), Err(FrameError::Decode(_))));
        let mut d = Decoder::default();
        d.push(&u32::MAX.to_be_bytes());
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge(_))));
        let unsorted = Frame::Split {
            scope: vec![],
            prefix: vec![],
            children: vec![(5, Fingerprint::default()), (5, Fingerprint::default())],
        };
        let bytes = unsorted.encode();
        assert!(matches!(Frame::decode(&bytes[4..]), Err(FrameError::Bounds(_))));
    }

    proptest! {
        /// Any bytes at all: an error or a frame, never a panic.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(&bytes);
            let mut d = Decoder::default();
            d.push(&bytes);
            while let Ok(Some(_)) = d.next_frame() {}
        }
    }
}
