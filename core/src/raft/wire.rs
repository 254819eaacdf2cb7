//! The peer transport's encoding of raft [`Message`]s.
//!
//! The transport frames messages by length itself, so a buffer here is exactly one
//! message. Integers are fixed-width little-endian (as in the WAL), so encoding is a
//! handful of `extend_from_slice` calls and decoding never has to guess a width.
//!
//! ```text
//! 0       format version (1)
//! 1       body kind (below)
//! 2..10   from    u64
//! 10..18  to      u64
//! 18..26  term    u64
//! 26..    body:
//!   1  Append             prev_index u64, prev_term u64, commit u64,
//!                         n u32, n × (len u32, entry)
//!   2  AppendResponse     index u64, hinted u8 (0|1), [hint index u64, hint term u64]
//!   3  Heartbeat          commit u64, round u64
//!   4  HeartbeatResponse  round u64
//!   5  RequestVote        flags u8 (1 pre_vote, 2 transfer), last_index u64, last_term u64
//!   6  VoteResponse       flags u8 (1 pre_vote, 2 granted)
//!   7  SnapshotChunk      len u32, snapshot meta, total u64, offset u64, data (the rest)
//!   8  SnapshotAck        index u64, received u64, resend u8 (0|1)
//!   9  TimeoutNow         (nothing)
//!   10 Propose            n u32, n × (len u32, payload)
//!   11 ReadIndex          ctx u64
//!   12 ReadIndexResponse  ctx u64, index u64
//!   13 TransferLeader     target u64
//! ```
//!
//! An entry and a snapshot meta are encoded by [`super::codec`], as the WAL's records
//! encode them (so the two formats cannot drift apart); a payload is the
//! entry encoding without term and index: `0` empty, `1` followed by the data, or `2`
//! followed by a conf-change kind u8 (0 add voter, 1 add learner, 2 remove) and the member
//! u64. Flags and booleans admit no other bits or values, and nothing may follow the
//! message, so an accepted buffer has exactly one meaning.
//!
//! Decoding is zero-copy: entry data and snapshot chunks are slices of the input
//! [`Bytes`] (which they keep alive for as long as they live). It never panics, and it
//! allocates at most a small multiple of the input: declared counts are checked against
//! the bytes left before anything is reserved.

use bytes::Bytes;

use super::codec::{decode_snapshot_meta, encode_entry, encode_payload, encode_snapshot_meta};
use super::message::{Message, MessageBody, RejectHint};
use super::types::{
    ConfChange, Entry, EntryPayload, LogIndex, MemberId, ReadCtx, SnapshotMeta, Term,
};

/// The only format version this build writes and reads.
const VERSION: u8 = 1;

const K_APPEND: u8 = 1;
const K_APPEND_RESPONSE: u8 = 2;
const K_HEARTBEAT: u8 = 3;
const K_HEARTBEAT_RESPONSE: u8 = 4;
const K_REQUEST_VOTE: u8 = 5;
const K_VOTE_RESPONSE: u8 = 6;
const K_SNAPSHOT_CHUNK: u8 = 7;
const K_SNAPSHOT_ACK: u8 = 8;
const K_TIMEOUT_NOW: u8 = 9;
const K_PROPOSE: u8 = 10;
const K_READ_INDEX: u8 = 11;
const K_READ_INDEX_RESPONSE: u8 = 12;
const K_TRANSFER_LEADER: u8 = 13;

/// Smallest encoded entry: its length prefix, term, index and payload kind.
const MIN_ENTRY: usize = 4 + 8 + 8 + 1;
/// Smallest encoded payload: its length prefix and payload kind.
const MIN_PAYLOAD: usize = 4 + 1;

const P_EMPTY: u8 = 0;
const P_NORMAL: u8 = 1;
const P_CONF_CHANGE: u8 = 2;

/// Why a buffer is not a raft message.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum WireError {
    /// Written by a format version this build does not read.
    #[error("raft wire: unsupported format version {0}")]
    Version(u8),
    /// The body kind is not one this build knows.
    #[error("raft wire: unknown message kind {0}")]
    UnknownKind(u8),
    /// The buffer ends inside a field.
    #[error("raft wire: message truncated")]
    Truncated,
    /// Bytes follow a complete message or a complete length-prefixed part.
    #[error("raft wire: {0} trailing bytes")]
    TrailingBytes(usize),
    /// A count of entries or payloads that the rest of the buffer cannot hold.
    #[error("raft wire: count {0} exceeds what the message can hold")]
    Count(u32),
    /// A tag, flag or boolean with a value the format does not define.
    #[error("raft wire: invalid {what} {value}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// The value found.
        value: u8,
    },
    /// Snapshot metadata that does not parse.
    #[error("raft wire: malformed snapshot metadata")]
    SnapshotMeta,
}

/// Appends the encoding of `m` to `out`.
pub fn encode_message(m: &Message, out: &mut Vec<u8>) {
    out.push(VERSION);
    out.push(kind(&m.body));
    put_u64(out, m.from.0);
    put_u64(out, m.to.0);
    put_u64(out, m.term.0);
    match &m.body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            put_u64(out, prev_index.0);
            put_u64(out, prev_term.0);
            put_u64(out, commit.0);
            put_u32(out, len_u32(entries.len()));
            for e in entries {
                // Cloning an entry shares its data rather than copying it.
                prefixed(out, |out| encode_entry(e, out));
            }
        }
        MessageBody::AppendResponse { index, reject } => {
            put_u64(out, index.0);
            match reject {
                None => out.push(0),
                Some(h) => {
                    out.push(1);
                    put_u64(out, h.index.0);
                    put_u64(out, h.term.0);
                }
            }
        }
        MessageBody::Heartbeat { commit, round } => {
            put_u64(out, commit.0);
            put_u64(out, *round);
        }
        MessageBody::HeartbeatResponse { round } => put_u64(out, *round),
        MessageBody::RequestVote {
            pre_vote,
            last_index,
            last_term,
            transfer,
        } => {
            out.push(u8::from(*pre_vote) | u8::from(*transfer) << 1);
            put_u64(out, last_index.0);
            put_u64(out, last_term.0);
        }
        MessageBody::VoteResponse { pre_vote, granted } => {
            out.push(u8::from(*pre_vote) | u8::from(*granted) << 1);
        }
        MessageBody::SnapshotChunk {
            meta,
            total,
            offset,
            data,
        } => {
            prefixed(out, |out| encode_snapshot_meta(meta, out));
            put_u64(out, *total);
            put_u64(out, *offset);
            out.extend_from_slice(data);
        }
        MessageBody::SnapshotAck {
            index,
            received,
            resend,
        } => {
            put_u64(out, index.0);
            put_u64(out, *received);
            out.push(u8::from(*resend));
        }
        MessageBody::TimeoutNow => {}
        MessageBody::Propose { payloads } => {
            put_u32(out, len_u32(payloads.len()));
            for p in payloads {
                prefixed(out, |out| encode_payload(p, out));
            }
        }
        MessageBody::ReadIndex { ctx } => put_u64(out, ctx.0),
        MessageBody::ReadIndexResponse { ctx, index } => {
            put_u64(out, ctx.0);
            put_u64(out, index.0);
        }
        MessageBody::TransferLeader { target } => put_u64(out, target.0),
    }
}

/// Decodes one message: `b` must hold exactly one. Entry data and snapshot chunks are
/// zero-copy slices of `b`, so they keep `b`'s whole buffer alive; a caller that keeps
/// one small entry long after the rest is gone may prefer to copy it.
pub fn decode_message(b: &Bytes) -> Result<Message, WireError> {
    let mut r = Reader::new(b);
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let k = r.u8()?;
    let from = MemberId(r.u64()?);
    let to = MemberId(r.u64()?);
    let term = Term(r.u64()?);
    let body = match k {
        K_APPEND => {
            let prev_index = LogIndex(r.u64()?);
            let prev_term = Term(r.u64()?);
            let commit = LogIndex(r.u64()?);
            let n = r.count(MIN_ENTRY)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                // The WAL's entry payload: term, index, then the payload (read here rather
                // than by the WAL's decoder, which copies the data out of its segment).
                let mut e = r.prefixed()?;
                entries.push(Entry {
                    term: Term(e.u64()?),
                    index: LogIndex(e.u64()?),
                    payload: e.payload()?,
                });
                e.finish()?;
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            }
        }
        K_APPEND_RESPONSE => MessageBody::AppendResponse {
            index: LogIndex(r.u64()?),
            reject: match r.bool("reject hint flag")? {
                false => None,
                true => Some(RejectHint {
                    index: LogIndex(r.u64()?),
                    term: Term(r.u64()?),
                }),
            },
        },
        K_HEARTBEAT => MessageBody::Heartbeat {
            commit: LogIndex(r.u64()?),
            round: r.u64()?,
        },
        K_HEARTBEAT_RESPONSE => MessageBody::HeartbeatResponse { round: r.u64()? },
        K_REQUEST_VOTE => {
            let [pre_vote, transfer] = r.flags("vote request flags")?;
            MessageBody::RequestVote {
                pre_vote,
                last_index: LogIndex(r.u64()?),
                last_term: Term(r.u64()?),
                transfer,
            }
        }
        K_VOTE_RESPONSE => {
            let [pre_vote, granted] = r.flags("vote response flags")?;
            MessageBody::VoteResponse { pre_vote, granted }
        }
        K_SNAPSHOT_CHUNK => {
            let meta = r.prefixed()?.snapshot_meta()?;
            let total = r.u64()?;
            let offset = r.u64()?;
            MessageBody::SnapshotChunk {
                meta,
                total,
                offset,
                data: r.rest(),
            }
        }
        K_SNAPSHOT_ACK => MessageBody::SnapshotAck {
            index: LogIndex(r.u64()?),
            received: r.u64()?,
            resend: r.bool("resend flag")?,
        },
        K_TIMEOUT_NOW => MessageBody::TimeoutNow,
        K_PROPOSE => {
            let n = r.count(MIN_PAYLOAD)?;
            let mut payloads = Vec::with_capacity(n);
            for _ in 0..n {
                let mut p = r.prefixed()?;
                payloads.push(p.payload()?);
                p.finish()?;
            }
            MessageBody::Propose { payloads }
        }
        K_READ_INDEX => MessageBody::ReadIndex {
            ctx: ReadCtx(r.u64()?),
        },
        K_READ_INDEX_RESPONSE => MessageBody::ReadIndexResponse {
            ctx: ReadCtx(r.u64()?),
            index: LogIndex(r.u64()?),
        },
        K_TRANSFER_LEADER => MessageBody::TransferLeader {
            target: MemberId(r.u64()?),
        },
        other => return Err(WireError::UnknownKind(other)),
    };
    r.finish()?;
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

fn kind(body: &MessageBody) -> u8 {
    match body {
        MessageBody::Append { .. } => K_APPEND,
        MessageBody::AppendResponse { .. } => K_APPEND_RESPONSE,
        MessageBody::Heartbeat { .. } => K_HEARTBEAT,
        MessageBody::HeartbeatResponse { .. } => K_HEARTBEAT_RESPONSE,
        MessageBody::RequestVote { .. } => K_REQUEST_VOTE,
        MessageBody::VoteResponse { .. } => K_VOTE_RESPONSE,
        MessageBody::SnapshotChunk { .. } => K_SNAPSHOT_CHUNK,
        MessageBody::SnapshotAck { .. } => K_SNAPSHOT_ACK,
        MessageBody::TimeoutNow => K_TIMEOUT_NOW,
        MessageBody::Propose { .. } => K_PROPOSE,
        MessageBody::ReadIndex { .. } => K_READ_INDEX,
        MessageBody::ReadIndexResponse { .. } => K_READ_INDEX_RESPONSE,
        MessageBody::TransferLeader { .. } => K_TRANSFER_LEADER,
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Lengths and counts are u32. Nothing raft sends comes near 4 GiB (an entry must fit a
/// WAL record, at most `wal::MAX_PAYLOAD`), so saturating only guards against wrapping into
/// a plausible small value: an oversized field then fails to decode instead of misparsing.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Writes `f`'s output preceded by its length.
fn prefixed(out: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    put_u32(out, 0);
    f(out);
    let len = len_u32(out.len() - at - 4);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// A cursor over `b[pos..end]`, handing out zero-copy slices of `b`.
struct Reader<'a> {
    b: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a Bytes) -> Self {
        Reader {
            b,
            pos: 0,
            end: b.len(),
        }
    }

    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.remaining() {
            return Err(WireError::Truncated);
        }
        let s = self
            .b
            .get(self.pos..self.pos + n)
            .ok_or(WireError::Truncated)?;
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(WireError::Invalid { what, value }),
        }
    }

    /// Two boolean flags in one byte (bits 0 and 1); any other bit set is invalid.
    fn flags(&mut self, what: &'static str) -> Result<[bool; 2], WireError> {
        let value = self.u8()?;
        if value & !3 != 0 {
            return Err(WireError::Invalid { what, value });
        }
        Ok([value & 1 != 0, value & 2 != 0])
    }

    /// A count of items each taking at least `min` bytes; refused if the rest of the
    /// buffer cannot hold that many, so it is safe to reserve.
    fn count(&mut self, min: usize) -> Result<usize, WireError> {
        let n = self.u32()?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&k| k <= self.remaining() / min);
        fits.ok_or(WireError::Count(n))
    }

    /// The length-prefixed part that follows, as its own reader.
    fn prefixed(&mut self) -> Result<Reader<'a>, WireError> {
        let len = usize::try_from(self.u32()?).map_err(|_| WireError::Truncated)?;
        if len > self.remaining() {
            return Err(WireError::Truncated);
        }
        let sub = Reader {
            b: self.b,
            pos: self.pos,
            end: self.pos + len,
        };
        self.pos += len;
        Ok(sub)
    }

    /// Everything left, zero-copy.
    fn rest(&mut self) -> Bytes {
        let s = self.b.slice(self.pos..self.end);
        self.pos = self.end;
        s
    }

    fn finish(&self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(WireError::TrailingBytes(n)),
        }
    }

    /// An entry payload filling the rest of this reader (Normal data runs to the end).
    fn payload(&mut self) -> Result<EntryPayload, WireError> {
        Ok(match self.u8()? {
            P_EMPTY => EntryPayload::Empty,
            P_NORMAL => EntryPayload::Normal(self.rest()),
            P_CONF_CHANGE => {
                let k = self.u8()?;
                let id = MemberId(self.u64()?);
                EntryPayload::ConfChange(match k {
                    0 => ConfChange::AddVoter(id),
                    1 => ConfChange::AddLearner(id),
                    2 => ConfChange::Remove(id),
                    value => {
                        return Err(WireError::Invalid {
                            what: "conf change kind",
                            value,
                        })
                    }
                })
            }
            value => {
                return Err(WireError::Invalid {
                    what: "payload kind",
                    value,
                })
            }
        })
    }

    /// Snapshot metadata filling the rest of this reader, parsed by the WAL's own decoder
    /// (which checks member counts against the bytes present before inserting).
    fn snapshot_meta(&mut self) -> Result<SnapshotMeta, WireError> {
        let p = self.take(self.remaining())?;
        decode_snapshot_meta(p).ok_or(WireError::SnapshotMeta)
    }
}
