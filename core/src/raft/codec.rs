//! The byte encoding of a log entry and of snapshot metadata, shared by the peer wire
//! format and the WAL's records (the WAL builds on raft, never the reverse), so the two
//! formats cannot drift apart.
//!
//! ```text
//! entry:          term u64, index u64, payload
//! payload:        0 (empty) | 1, data (the rest) | 2, kind u8, member u64
//!                 (kind: 0 add voter, 1 add learner, 2 remove)
//! snapshot meta:  index u64, term u64, voters (n u32, n × u64), learners (n u32, n × u64)
//! ```
//!
//! Decoders never panic and admit exactly one meaning: nothing may follow, and a
//! declared member count is checked against the bytes present before anything is
//! inserted.

use bytes::Bytes;

use super::types::{
    ConfChange, ConfState, Entry, EntryPayload, LogIndex, MemberId, SnapshotMeta, Term,
};

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends `e`'s encoding to `out`.
pub fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    put_u64(out, e.term.0);
    put_u64(out, e.index.0);
    encode_payload(&e.payload, out);
}

/// Appends a payload's encoding (an entry's without its term and index) to `out`.
pub fn encode_payload(p: &EntryPayload, out: &mut Vec<u8>) {
    match p {
        EntryPayload::Empty => out.push(0),
        EntryPayload::Normal(d) => {
            out.push(1);
            out.extend_from_slice(d);
        }
        EntryPayload::ConfChange(cc) => {
            out.push(2);
            let (k, id) = match cc {
                ConfChange::AddVoter(id) => (0, id.0),
                ConfChange::AddLearner(id) => (1, id.0),
                ConfChange::Remove(id) => (2, id.0),
            };
            out.push(k);
            put_u64(out, id);
        }
    }
}

/// Decodes an entry encoded by [`encode_entry`]; `None` if `p` is not exactly one.
pub fn decode_entry(p: &[u8]) -> Option<Entry> {
    let mut r = Reader { p };
    let term = Term(r.u64()?);
    let index = LogIndex(r.u64()?);
    let payload = match r.u8()? {
        0 => EntryPayload::Empty,
        1 => EntryPayload::Normal(Bytes::copy_from_slice(r.rest())),
        2 => {
            let k = r.u8()?;
            let id = MemberId(r.u64()?);
            EntryPayload::ConfChange(match k {
                0 => ConfChange::AddVoter(id),
                1 => ConfChange::AddLearner(id),
                2 => ConfChange::Remove(id),
                _ => return None,
            })
        }
        _ => return None,
    };
    r.p.is_empty().then_some(Entry {
        term,
        index,
        payload,
    })
}

/// Appends `m`'s encoding to `out`.
pub fn encode_snapshot_meta(m: &SnapshotMeta, out: &mut Vec<u8>) {
    put_u64(out, m.index.0);
    put_u64(out, m.term.0);
    for set in [&m.conf.voters, &m.conf.learners] {
        out.extend_from_slice(&(set.len() as u32).to_le_bytes());
        for id in set {
            put_u64(out, id.0);
        }
    }
}

/// Decodes snapshot metadata encoded by [`encode_snapshot_meta`].
pub fn decode_snapshot_meta(p: &[u8]) -> Option<SnapshotMeta> {
    let mut r = Reader { p };
    let index = LogIndex(r.u64()?);
    let term = Term(r.u64()?);
    let mut conf = ConfState::default();
    for learners in [false, true] {
        let n = r.u32()? as usize;
        // Each ID takes 8 bytes: a count the payload cannot hold is corrupt.
        if n > r.p.len() / 8 {
            return None;
        }
        for _ in 0..n {
            let id = MemberId(r.u64()?);
            if learners {
                conf.learners.insert(id);
            } else {
                conf.voters.insert(id);
            }
        }
    }
    r.p.is_empty().then_some(SnapshotMeta { index, term, conf })
}

/// A cursor over a little-endian payload.
pub(crate) struct Reader<'a> {
    pub(crate) p: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.p.len() < n {
            return None;
        }
        let (a, b) = self.p.split_at(n);
        self.p = b;
        Some(a)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
    pub(crate) fn rest(&mut self) -> &[u8] {
        std::mem::take(&mut self.p)
    }
}
