//! Record framing and payload encoding.
//!
//! A frame is a 16-byte header, the payload, and zero padding to an 8-byte boundary:
//!
//! ```text
//! 0..4   payload length (u32, little-endian)
//! 4      record type (non-zero)
//! 5..8   zero
//! 8..12  chained checksum: CRC-32 (IEEE) of length, type and payload, seeded with the
//!        previous frame's checksum
//! 12..16 zero
//! 16..   payload, then zeros up to the next multiple of 8
//! ```
//!
//! The checksum is seeded with the previous frame's checksum, so a frame is valid only at
//! the position it was written for: a stale frame left by an earlier pass over a reused or
//! preallocated region, or a frame moved by a misdirected write, never validates. A header
//! of all zeros marks the end of the written part of a segment (preallocated space).

use crate::raft::codec::{self, Reader};
use crate::raft::{Entry, HardState, LogIndex, MemberId, SnapshotMeta, Term};

/// Bytes of a frame header.
pub const FRAME_HEADER: usize = 16;
/// Largest payload a frame may carry; a length beyond it is corruption, never an
/// allocation request.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// What a record says.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Record {
    /// A raft log entry. An entry at or below the last one replaces the log from there.
    Entry(Entry),
    /// Raft's hard state.
    HardState(HardState),
    /// A snapshot from the leader was installed: the log is replaced and restarts after
    /// it. (Local compaction needs no record: the snapshot file covers the prefix.)
    Snapshot(SnapshotMeta),
    /// Which cluster and member this log belongs to.
    Metadata {
        /// Cluster ID.
        cluster_id: u64,
        /// Member ID.
        member_id: u64,
    },
}

const T_ENTRY: u8 = 1;
const T_HARD_STATE: u8 = 2;
const T_SNAPSHOT: u8 = 3;
const T_METADATA: u8 = 4;

/// The records a raft persist batch becomes, in the order recovery needs them: the
/// snapshot marker (the log restarts after it), the entries, then the hard state.
pub fn batch_records(batch: &crate::raft::PersistBatch) -> Vec<Record> {
    let mut records = Vec::with_capacity(batch.entries.len() + 2);
    if let Some(s) = &batch.snapshot {
        records.push(Record::Snapshot(s.meta.clone()));
    }
    records.extend(batch.entries.iter().cloned().map(Record::Entry));
    if let Some(hs) = batch.hard_state {
        records.push(Record::HardState(hs));
    }
    records
}

/// Rounds `n` up to a multiple of 8.
pub fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Bytes a frame with `payload_len` bytes of payload occupies.
pub fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER + align8(payload_len)
}

/// The chained checksum of a frame's length, type and payload.
pub(crate) fn checksum(prev: u32, len: u32, kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(prev);
    h.update(&len.to_le_bytes());
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

impl Record {
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Record::Entry(_) => T_ENTRY,
            Record::HardState(_) => T_HARD_STATE,
            Record::Snapshot(_) => T_SNAPSHOT,
            Record::Metadata { .. } => T_METADATA,
        }
    }

    pub(crate) fn encode_payload(&self, out: &mut Vec<u8>) {
        let u64le = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
        match self {
            Record::Entry(e) => codec::encode_entry(e, out),
            Record::HardState(hs) => {
                u64le(out, hs.term.0);
                u64le(out, hs.vote.0);
                u64le(out, hs.commit.0);
            }
            Record::Snapshot(m) => codec::encode_snapshot_meta(m, out),
            Record::Metadata {
                cluster_id,
                member_id,
            } => {
                u64le(out, *cluster_id);
                u64le(out, *member_id);
            }
        }
    }

    /// Appends this record's frame to `out`, chained to `prev_crc`; returns its checksum.
    pub fn encode(&self, prev_crc: u32, out: &mut Vec<u8>) -> u32 {
        let start = out.len();
        out.resize(start + FRAME_HEADER, 0);
        self.encode_payload(out);
        let len = out.len() - start - FRAME_HEADER;
        let kind = self.kind();
        let crc = checksum(prev_crc, len as u32, kind, &out[start + FRAME_HEADER..]);
        out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        out[start + 4] = kind;
        out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
        out.resize(start + frame_len(len), 0);
        crc
    }

    /// Decodes a payload of record type `kind`. `None` if it does not parse exactly.
    pub(crate) fn decode_payload(kind: u8, p: &[u8]) -> Option<Record> {
        let mut r = Reader { p };
        let rec = match kind {
            T_ENTRY => return codec::decode_entry(p).map(Record::Entry),
            T_HARD_STATE => Record::HardState(HardState {
                term: Term(r.u64()?),
                vote: MemberId(r.u64()?),
                commit: LogIndex(r.u64()?),
            }),
            T_SNAPSHOT => return codec::decode_snapshot_meta(p).map(Record::Snapshot),
            T_METADATA => Record::Metadata {
                cluster_id: r.u64()?,
                member_id: r.u64()?,
            },
            _ => return None,
        };
        r.p.is_empty().then_some(rec)
    }
}

/// What is at a position in a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A valid record, its checksum, and the bytes the frame occupies.
    Record {
        /// The record.
        record: Record,
        /// Its checksum (the next frame chains to it).
        crc: u32,
        /// Frame length in bytes.
        len: usize,
    },
    /// An all-zero header: nothing was written from here on.
    End,
    /// Not a valid frame here. `stored_crc` and `len` are what the header claims, when the
    /// header is plausible, so a reader can look past it for later valid frames.
    Invalid {
        /// The header's checksum field, if the header is plausible.
        stored_crc: Option<u32>,
        /// The frame length the header claims, if plausible.
        len: Option<usize>,
    },
}

/// Decodes the frame at the start of `buf`, expecting it to chain to `prev_crc`.
/// Never panics and never allocates more than the payload it validates.
pub fn decode_frame(buf: &[u8], prev_crc: u32) -> Frame {
    let Some(h) = buf.get(..FRAME_HEADER) else {
        // Too short for a header: zeros mean unwritten space, anything else a torn write.
        return if buf.iter().all(|b| *b == 0) {
            Frame::End
        } else {
            Frame::Invalid {
                stored_crc: None,
                len: None,
            }
        };
    };
    if h.iter().all(|b| *b == 0) {
        return Frame::End;
    }
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let len = word(0) as usize;
    let kind = h[4];
    let stored = word(8);
    let plausible = len <= MAX_PAYLOAD
        && (T_ENTRY..=T_METADATA).contains(&kind)
        && h[5..8] == [0, 0, 0]
        && h[12..16] == [0, 0, 0, 0];
    let total = frame_len(len.min(MAX_PAYLOAD));
    if !plausible {
        return Frame::Invalid {
            stored_crc: None,
            len: None,
        };
    }
    let Some(frame) = buf.get(..total) else {
        return Frame::Invalid {
            stored_crc: Some(stored),
            len: None,
        };
    };
    let payload = &frame[FRAME_HEADER..FRAME_HEADER + len];
    let invalid = Frame::Invalid {
        stored_crc: Some(stored),
        len: Some(total),
    };
    if checksum(prev_crc, len as u32, kind, payload) != stored
        || frame[FRAME_HEADER + len..].iter().any(|b| *b != 0)
    {
        return invalid;
    }
    match Record::decode_payload(kind, payload) {
        Some(record) => Frame::Record {
            record,
            crc: stored,
            len: total,
        },
        None => invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{ConfChange, ConfState, EntryPayload};
    use bytes::Bytes;

    fn samples() -> Vec<Record> {
        vec![
            Record::Metadata {
                cluster_id: 7,
                member_id: 9,
            },
            Record::HardState(HardState {
                term: Term(3),
                vote: MemberId(2),
                commit: LogIndex(10),
            }),
            Record::Entry(Entry {
                term: Term(3),
                index: LogIndex(11),
                payload: EntryPayload::Normal(Bytes::from_static(b"hello, wal")),
            }),
            Record::Entry(Entry {
                term: Term(3),
                index: LogIndex(12),
                payload: EntryPayload::ConfChange(ConfChange::Remove(MemberId(4))),
            }),
            Record::Entry(Entry {
                term: Term(4),
                index: LogIndex(13),
                payload: EntryPayload::Empty,
            }),
            Record::Snapshot(SnapshotMeta {
                index: LogIndex(13),
                term: Term(4),
                conf: ConfState::with_voters([MemberId(1), MemberId(2)]),
            }),
        ]
    }

    #[test]
    fn frames_round_trip_and_chain() {
        let mut buf = Vec::new();
        let mut crc = 0;
        let mut crcs = Vec::new();
        for r in samples() {
            crc = r.encode(crc, &mut buf);
            crcs.push(crc);
        }
        assert_eq!(buf.len() % 8, 0);
        let mut off = 0;
        let mut prev = 0;
        for (r, want) in samples().into_iter().zip(crcs) {
            match decode_frame(&buf[off..], prev) {
                Frame::Record { record, crc, len } => {
                    assert_eq!(record, r);
                    assert_eq!(crc, want);
                    off += len;
                    prev = crc;
                }
                other => panic!("expected a record, got {other:?}"),
            }
        }
        assert_eq!(decode_frame(&buf[off..], prev), Frame::End);
        // The same frame does not validate under another chain position.
        assert!(matches!(decode_frame(&buf, 12345), Frame::Invalid { .. }));
    }
}
