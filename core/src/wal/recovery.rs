//! Recovery: reading every segment, verifying the checksum chain, rebuilding the log.
//!
//! The decisions, all over byte slices:
//! - A header that does not decode, names that disagree with headers, a sequence gap, a
//!   header from another member or cluster, or a segment whose `prev_crc` does not
//!   continue the chain: fatal, naming the segment.
//! - An invalid frame in any segment but the newest, or bytes after the end marker of
//!   an older segment: fatal, naming the segment and byte offset.
//! - In the newest segment, the first invalid frame starts the torn tail (a partial
//!   record, a zeroed sector, garbage after the last valid record) and everything from
//!   there is cut, reported as [`TornTail`] — unless a valid frame chained to the invalid
//!   one follows it, which means the damage is inside the log, not at its end: fatal.
//!   (Damage to the very last record cannot be told apart from a torn write of it; it is
//!   cut and reported, never accepted as data.)
//! - Entry indices must continue the log; an entry at or below the last one replaces the
//!   suffix (raft truncation), but never below the durable commit index: fatal otherwise.
//! - If the recovered log no longer reaches the recorded commit index, a committed entry
//!   was lost: fatal, never silently accepted.

use std::fmt;

use crate::raft::{Entry, HardState, LogIndex, SnapshotMeta};

use super::record::{checksum, decode_frame, frame_len, Frame, Record, FRAME_HEADER, MAX_PAYLOAD};
use super::segment::{HeaderError, SegmentHeader, SegmentName, SEGMENT_HEADER};

/// A fatal problem found while recovering.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum WalError {
    /// A segment header is unusable.
    #[error("wal: {segment}: bad segment header ({reason:?})")]
    Header {
        /// File name.
        segment: String,
        /// What is wrong.
        reason: HeaderError,
    },
    /// The file name and the header disagree.
    #[error("wal: {segment}: file name does not match its header (seq {seq}, first index {first_index})")]
    NameMismatch {
        /// File name.
        segment: String,
        /// Header's sequence number.
        seq: u64,
        /// Header's first index.
        first_index: u64,
    },
    /// The segment belongs to another member or cluster.
    #[error("wal: {segment}: belongs to member {found_member:x} of cluster {found_cluster:x}, expected member {expected_member:x} of cluster {expected_cluster:x}")]
    ForeignSegment {
        /// File name.
        segment: String,
        /// Member in the header.
        found_member: u64,
        /// Cluster in the header.
        found_cluster: u64,
        /// Member expected.
        expected_member: u64,
        /// Cluster expected.
        expected_cluster: u64,
    },
    /// Segment sequence numbers are not consecutive.
    #[error("wal: {segment}: sequence gap after segment {after}")]
    SequenceGap {
        /// File name.
        segment: String,
        /// Last sequence number seen.
        after: u64,
    },
    /// A segment's header does not continue the checksum chain of the one before.
    #[error("wal: {segment}: checksum chain broken at the segment header")]
    ChainBroken {
        /// File name.
        segment: String,
    },
    /// An invalid frame where a valid one must be.
    #[error("wal: {segment}: corrupt record at byte offset {offset}")]
    Corrupt {
        /// File name.
        segment: String,
        /// Byte offset of the frame.
        offset: usize,
    },
    /// An entry's index skips ahead of the log.
    #[error("wal: {segment}: entry index {found} at byte offset {offset} does not follow {expected_after}")]
    IndexGap {
        /// File name.
        segment: String,
        /// Byte offset of the frame.
        offset: usize,
        /// Last index before it.
        expected_after: u64,
        /// Index found.
        found: u64,
    },
    /// An entry would replace one at or below the durable commit index.
    #[error("wal: {segment}: entry {index} at byte offset {offset} overwrites committed entry (commit {commit})")]
    OverwritesCommitted {
        /// File name.
        segment: String,
        /// Byte offset of the frame.
        offset: usize,
        /// Index of the entry.
        index: u64,
        /// Commit index at that point.
        commit: u64,
    },
    /// The log ends before the recorded commit index.
    #[error("wal: committed entries lost: commit index {commit} but the log ends at {last}")]
    CommittedLost {
        /// Recorded commit index.
        commit: u64,
        /// Last index recovered.
        last: u64,
    },
}

/// A torn tail that recovery cut off.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TornTail {
    /// Segment file name.
    pub segment: SegmentName,
    /// Byte offset where the cut starts.
    pub offset: usize,
    /// Non-zero bytes discarded from there on (what the torn write left behind).
    pub discarded: usize,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wal: {}: torn tail cut at byte offset {} ({} non-zero bytes discarded)",
            self.segment, self.offset, self.discarded
        )
    }
}

/// Where appending resumes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WalEnd {
    /// The newest segment.
    pub segment: SegmentName,
    /// Byte offset after the last valid frame.
    pub offset: usize,
    /// Checksum of the last valid frame (the next one chains to it).
    pub crc: u32,
}

/// Everything recovered from the segments.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Recovered {
    /// Cluster ID of the log.
    pub cluster_id: u64,
    /// Member ID of the log.
    pub member_id: u64,
    /// Last hard state.
    pub hard_state: HardState,
    /// Last snapshot marker, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries after the snapshot (or from the oldest kept), contiguous.
    pub entries: Vec<Entry>,
    /// The torn tail cut from the newest segment, if any.
    pub torn: Option<TornTail>,
    /// Where to resume appending (None if there were no segments).
    pub end: Option<WalEnd>,
    /// Every valid segment, oldest first, with the highest entry index written to it
    /// (0 if none): what may be released behind a snapshot.
    pub segments: Vec<(SegmentName, LogIndex)>,
}

/// Recovers from `segments` (any order). `expect` is the (cluster, member) the caller
/// knows it is, if any; otherwise the first segment's identity is used.
pub fn recover(
    segments: &[(SegmentName, &[u8])],
    expect: Option<(u64, u64)>,
) -> Result<Recovered, WalError> {
    let mut segs: Vec<&(SegmentName, &[u8])> = segments.iter().collect();
    segs.sort_by_key(|(n, _)| n.seq);
    let mut out = Recovered::default();
    let mut identity = expect;
    let mut running = 0u32;
    let mut prev_seq: Option<u64> = None;
    let count = segs.len();
    for (i, (name, bytes)) in segs.into_iter().enumerate() {
        let seg = name.to_string();
        let newest = i + 1 == count;
        if newest && bytes.iter().take(SEGMENT_HEADER).all(|b| *b == 0) {
            // A crash while rolling: the file exists but its header never reached the
            // disk, so nothing in it was ever synced. Report it as a torn tail.
            out.torn = Some(TornTail {
                segment: *name,
                offset: 0,
                discarded: nonzero(bytes),
            });
            break;
        }
        let header = SegmentHeader::decode(bytes).map_err(|reason| WalError::Header {
            segment: seg.clone(),
            reason,
        })?;
        if header.seq != name.seq || header.first_index != name.first_index {
            return Err(WalError::NameMismatch {
                segment: seg,
                seq: header.seq,
                first_index: header.first_index,
            });
        }
        let (ec, em) = *identity.get_or_insert((header.cluster_id, header.member_id));
        if (header.cluster_id, header.member_id) != (ec, em) {
            return Err(WalError::ForeignSegment {
                segment: seg,
                found_member: header.member_id,
                found_cluster: header.cluster_id,
                expected_member: em,
                expected_cluster: ec,
            });
        }
        match prev_seq {
            Some(p) if header.seq != p.wrapping_add(1) => {
                return Err(WalError::SequenceGap {
                    segment: seg,
                    after: p,
                });
            }
            Some(_) if header.prev_crc != running => {
                return Err(WalError::ChainBroken { segment: seg });
            }
            Some(_) => {}
            // The oldest segment kept: older ones were purged behind a snapshot, and the
            // chain continues from what its header recorded.
            None => running = header.prev_crc,
        }
        prev_seq = Some(header.seq);
        out.cluster_id = ec;
        out.member_id = em;
        let mut off = SEGMENT_HEADER;
        let mut highest = LogIndex(0);
        loop {
            let rest = &bytes[off.min(bytes.len())..];
            match decode_frame(rest, running) {
                Frame::Record { record, crc, len } => {
                    if let Record::Entry(e) = &record {
                        highest = highest.max(e.index);
                    }
                    apply(&mut out, record, &seg, off)?;
                    running = crc;
                    off += len;
                }
                other => {
                    // An end marker with bytes after it, or an invalid frame: damage.
                    let (damaged, discarded) = match other {
                        Frame::End => {
                            let after = nonzero(&rest[rest.len().min(FRAME_HEADER)..]);
                            (after > 0, after)
                        }
                        _ => (true, nonzero(rest)),
                    };
                    if damaged {
                        let invalid = matches!(other, Frame::Invalid { .. });
                        if !newest || (invalid && valid_frame_follows(rest, running)) {
                            return Err(WalError::Corrupt {
                                segment: seg,
                                offset: off,
                            });
                        }
                        out.torn = Some(TornTail {
                            segment: *name,
                            offset: off,
                            discarded,
                        });
                    }
                    break;
                }
            }
        }
        out.end = Some(WalEnd {
            segment: *name,
            offset: off,
            crc: running,
        });
        out.segments.push((*name, highest));
    }
    let last = out
        .entries
        .last()
        .map(|e| e.index)
        .or(out.snapshot.as_ref().map(|s| s.index))
        .unwrap_or(LogIndex(0));
    if out.hard_state.commit > last {
        return Err(WalError::CommittedLost {
            commit: out.hard_state.commit.0,
            last: last.0,
        });
    }
    Ok(out)
}

/// After an invalid frame at the start of `rest`: does a valid frame chained to it follow?
/// If so, the damage is inside the log (bit rot, a misdirected write), not a torn end.
///
/// The next frame chains to the damaged frame's checksum: either the stored one (if the
/// damage is elsewhere in the frame) or the one its bytes compute to (if the damage is in
/// the stored checksum). The damaged frame's length field may itself be wrong, so every
/// 8-byte-aligned position up to the largest frame is tried.
fn valid_frame_follows(rest: &[u8], prev: u32) -> bool {
    let Some(h) = rest.get(..FRAME_HEADER) else {
        return false;
    };
    let stored = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let mut candidates = vec![stored];
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if let Some(payload) = rest.get(FRAME_HEADER..FRAME_HEADER.saturating_add(len)) {
        candidates.push(checksum(prev, len as u32, h[4], payload));
    }
    let limit = rest.len().min(frame_len(MAX_PAYLOAD));
    let mut q = FRAME_HEADER;
    while q < limit {
        let at = &rest[q..];
        // Cheap filter first: only a plausible, non-empty header can start a frame.
        if at.len() >= FRAME_HEADER && at[..FRAME_HEADER].iter().any(|b| *b != 0) {
            for c in &candidates {
                if matches!(decode_frame(at, *c), Frame::Record { .. }) {
                    return true;
                }
            }
        }
        q += 8;
    }
    false
}

fn nonzero(b: &[u8]) -> usize {
    b.iter().filter(|x| **x != 0).count()
}

fn apply(out: &mut Recovered, record: Record, seg: &str, offset: usize) -> Result<(), WalError> {
    match record {
        Record::Entry(e) => {
            let base = out.snapshot.as_ref().map_or(LogIndex(0), |s| s.index);
            let last = out.entries.last().map_or(base, |l| l.index);
            if out.entries.is_empty() && out.snapshot.is_none() {
                // The oldest kept segment may start anywhere after a purge.
            } else if e.index > last.next() {
                return Err(WalError::IndexGap {
                    segment: seg.to_string(),
                    offset,
                    expected_after: last.0,
                    found: e.index.0,
                });
            } else if e.index <= last {
                if e.index <= out.hard_state.commit || e.index <= base {
                    return Err(WalError::OverwritesCommitted {
                        segment: seg.to_string(),
                        offset,
                        index: e.index.0,
                        commit: out.hard_state.commit.0.max(base.0),
                    });
                }
                let keep = out.entries.partition_point(|x| x.index < e.index);
                out.entries.truncate(keep);
            }
            out.entries.push(e);
        }
        Record::HardState(hs) => out.hard_state = hs,
        Record::Snapshot(meta) => {
            // A snapshot installed from the leader replaces the whole log.
            out.entries.clear();
            out.snapshot = Some(meta);
        }
        Record::Metadata { .. } => {}
    }
    Ok(())
}
