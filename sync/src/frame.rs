//! Replication frames and their encoding.
//!
//! On the wire a frame is a 4-byte big-endian length, then that many bytes: one version
//! byte, one flags byte and the postcard encoding of [`Frame`], raw or (flag
//! [`DEFLATE`]) compressed with raw DEFLATE. Frames of more than [`COMPRESS_MIN`] bytes
//! are compressed when that makes them smaller: events repeat their node key, operator,
//! place and cylinder code prefix, so item frames shrink to about half. Every decode of
//! peer bytes returns an error on bad input, and inflating stops at [`FRAME_LEN_MAX`];
//! none panics.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::fingerprint::{Fingerprint, Id};

/// Protocol version written into every frame (5: a sealed event names its seal in place
/// of its signature).
pub const VERSION: u8 = 5;
/// Flags byte: the postcard bytes are DEFLATE-compressed.
pub const DEFLATE: u8 = 1;
/// Frames whose encoding is at most this long go raw.
pub const COMPRESS_MIN: usize = 512;
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
    /// Every change of mine to `scope` up to my sequence `seq` has gone before this frame
    /// (a long push, part way): say when you hold them durably.
    Mark { scope: Vec<u8>, seq: u64 },
    /// What you sent before your `Mark` of `seq` is durable here (refusals aside): a push
    /// cut off later resumes after `seq` instead of from its start.
    Holding { scope: Vec<u8>, seq: u64 },
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
        let compressed = (body.len() > COMPRESS_MIN).then(|| deflate(&body)).filter(|c| c.len() < body.len());
        let (flags, payload) = match &compressed {
            Some(c) => (DEFLATE, c),
            None => (0, &body),
        };
        let len = payload.len() + 2;
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(payload);
        out
    }

    /// Decodes one frame body (without the length prefix).
    pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
        Frame::decode_within(body, FRAME_LEN_MAX)
    }

    /// Decodes one frame body whose length, and inflated length, are at most `limit`
    /// (`FrameError::TooLarge` otherwise).
    fn decode_within(body: &[u8], limit: usize) -> Result<Frame, FrameError> {
        if body.len() > limit {
            return Err(FrameError::TooLarge(body.len()));
        }
        let (&version, rest) = body.split_first().ok_or_else(|| FrameError::Decode("empty frame".into()))?;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let (&flags, rest) = rest.split_first().ok_or_else(|| FrameError::Decode("no flags byte".into()))?;
        let inflated;
        let rest = match flags {
            0 => rest,
            DEFLATE => {
                inflated = inflate(rest, limit)?;
                inflated.as_slice()
            }
            other => return Err(FrameError::Decode(format!("unknown flags {other:#04x}"))),
        };
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
            | Frame::Pushed { scope }
            | Frame::Mark { scope, .. }
            | Frame::Holding { scope, .. } => (scope, 0),
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

/// Raw DEFLATE at the fastest level: the receiver's writer, not the link, bounds a sync.
fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::with_capacity(bytes.len() / 2), flate2::Compression::fast());
    e.write_all(bytes).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

/// Inflates at most `limit` bytes: a bomb is refused, not expanded.
fn inflate(bytes: &[u8], limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    flate2::read::DeflateDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| FrameError::Decode(format!("compressed frame: {e}")))?;
    if out.len() > limit {
        return Err(FrameError::TooLarge(out.len()));
    }
    Ok(out)
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

    /// Whether a whole frame is here (without decoding it). An error leaves the stream
    /// unusable: close it.
    pub fn has_frame(&self) -> Result<bool, FrameError> {
        Ok(self.frame_len()?.is_some_and(|len| self.buf.len() >= 4 + len))
    }

    /// The frame at the front, if all of it is here and it takes at most `max` bytes on
    /// the wire and inflated; else `None`, the frame left in place. A receiver takes such
    /// frames without counting them against its bound on frames held decoded.
    pub fn next_small_frame(&mut self, max: usize) -> Result<Option<Frame>, FrameError> {
        let Some(len) = self.frame_len()?.filter(|len| *len <= max && self.buf.len() >= 4 + len) else {
            return Ok(None);
        };
        match Frame::decode_within(&self.buf[4..4 + len], max) {
            Err(FrameError::TooLarge(_)) => Ok(None),
            Err(e) => Err(e),
            Ok(frame) => {
                self.buf.drain(..4 + len);
                Ok(Some(frame))
            }
        }
    }

    /// The length of the frame at the front, once its length prefix is here.
    fn frame_len(&self) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = self.buf.first_chunk::<4>() else { return Ok(None) };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > FRAME_LEN_MAX {
            return Err(FrameError::TooLarge(len));
        }
        Ok(Some(len))
    }

    /// The next complete frame, if any. An error leaves the stream unusable: close it.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(len) = self.frame_len()? else { return Ok(None) };
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
            // `has_frame` says yes exactly when `next_frame` would give one.
            while d.has_frame().unwrap() {
                got.push(d.next_frame().unwrap().expect("a whole frame"));
            }
            assert_eq!(d.next_frame().unwrap(), None);
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(Frame::decode(&[1, 0]), Err(FrameError::Version(1)));
        assert!(matches!(Frame::decode(&[]), Err(FrameError::Decode(_))));
        let mut d = Decoder::default();
        d.push(&u32::MAX.to_be_bytes());
        assert!(matches!(d.has_frame(), Err(FrameError::TooLarge(_))));
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge(_))));
        let unsorted = Frame::Split {
            scope: vec![],
            prefix: vec![],
            children: vec![(5, Fingerprint::default()), (5, Fingerprint::default())],
        };
        let bytes = unsorted.encode();
        assert!(matches!(Frame::decode(&bytes[4..]), Err(FrameError::Bounds(_))));
    }

    #[test]
    fn large_repetitive_frames_go_compressed_and_come_back_whole() {
        let item = |i: u32| {
            [b"node-key-node-key-node-key-abcdef operator place 3701020101".as_slice(), &i.to_be_bytes()].concat()
        };
        let frame = Frame::Items { scope: b"E:3701020001".to_vec(), items: (0..2000).map(item).collect() };
        let raw = postcard::to_stdvec(&frame).unwrap().len();
        let bytes = frame.encode();
        assert_eq!(bytes[5], DEFLATE);
        assert!(bytes.len() * 4 < raw, "{} compressed of {raw}", bytes.len());
        assert_eq!(Frame::decode(&bytes[4..]).unwrap(), frame);
        // Small frames go raw.
        let small = Frame::Pushed { scope: b"E:3701020001".to_vec() };
        assert_eq!(small.encode()[5], 0);
    }

    /// Only a frame small both on the wire and inflated comes out as small; any other is
    /// left whole for `next_frame`, in its place in the stream.
    #[test]
    fn a_small_frame_is_one_small_on_the_wire_and_inflated() {
        let items = |n: usize, byte: u8| Frame::Items { scope: b"E:3701020001".to_vec(), items: vec![vec![byte; n]] };
        let (small, wide) = (items(600, 1), items(64 << 10, 2));
        let (wide_bytes, small_bytes) = (wide.encode(), small.encode());
        assert!(wide_bytes.len() < 1024, "compressed to {} bytes on the wire", wide_bytes.len());
        let mut d = Decoder::default();
        d.push(&small_bytes[..10]);
        assert_eq!(d.next_small_frame(16 << 10).unwrap(), None, "not all of it here");
        d.push(&small_bytes[10..]);
        d.push(&wide_bytes);
        d.push(&small_bytes);
        assert_eq!(d.next_small_frame(16 << 10).unwrap(), Some(small.clone()));
        assert_eq!(d.next_small_frame(16 << 10).unwrap(), None, "inflates past the bound");
        assert_eq!(d.next_small_frame(100).unwrap(), None, "longer than the bound on the wire");
        assert_eq!(d.next_frame().unwrap(), Some(wide));
        assert_eq!(d.next_small_frame(16 << 10).unwrap(), Some(small));
        d.push(&[0, 0, 0, 3, VERSION, 7, 0]);
        assert!(matches!(d.next_small_frame(16 << 10), Err(FrameError::Decode(_))));
    }

    #[test]
    fn a_compressed_frame_that_inflates_past_the_limit_is_refused() {
        let bomb = deflate(&vec![0u8; FRAME_LEN_MAX + 10]);
        assert!(bomb.len() < FRAME_LEN_MAX / 16, "{}", bomb.len());
        let body = [&[VERSION, DEFLATE][..], &bomb].concat();
        assert!(matches!(Frame::decode(&body), Err(FrameError::TooLarge(_))));
        assert!(matches!(Frame::decode(&[VERSION, 7, 0]), Err(FrameError::Decode(_))));
        assert!(matches!(Frame::decode(&[VERSION, DEFLATE, 0xff, 0xff]), Err(FrameError::Decode(_))));
    }

    proptest! {
        /// Any bytes after the version and the compression flag: an error or a frame.
        #[test]
        fn inflating_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(&[&[VERSION, DEFLATE][..], &bytes].concat());
        }

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
