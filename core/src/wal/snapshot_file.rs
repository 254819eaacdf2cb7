//! State-machine snapshot files: format and naming (the bytes only; writing them
//! atomically is the driver's job).
//!
//! ```text
//! 0..8    magic "KEELSNAP"
//! 8..12   format version (u32 LE)
//! 12..16  CRC-32 of everything after byte 16
//! 16..24  length of the encoded metadata (u64 LE)
//! 24..    metadata: index, term, voters, learners (as a WAL snapshot record payload)
//! then    the application's image, to the end of the file
//! ```
//!
//! Files are named `<term:016x>-<index:016x>.snap` (etcd's scheme), so the newest sorts
//! last.

use bytes::Bytes;

use crate::raft::{Snapshot, SnapshotMeta};

use crate::raft::codec::{decode_snapshot_meta, encode_snapshot_meta};

/// Magic at the start of a snapshot file.
pub const SNAP_MAGIC: [u8; 8] = *b"KEELSNAP";
const SNAP_VERSION: u32 = 1;
const FIXED: usize = 24;

/// Why a snapshot file cannot be used.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// Shorter than its fixed header or than the metadata length it claims.
    #[error("snapshot file is truncated")]
    Truncated,
    /// Not a Keel snapshot.
    #[error("not a keel snapshot file (bad magic)")]
    BadMagic,
    /// Unknown format version.
    #[error("unsupported snapshot format version {0}")]
    Version(u32),
    /// Content does not match its checksum.
    #[error("snapshot file checksum mismatch")]
    Checksum,
    /// The metadata does not decode.
    #[error("snapshot metadata is malformed")]
    Metadata,
}

/// File name for a snapshot.
pub fn snapshot_file_name(meta: &SnapshotMeta) -> String {
    format!("{:016x}-{:016x}.snap", meta.term.0, meta.index.0)
}

/// Parses a snapshot file name into (term, index).
pub fn parse_snapshot_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".snap")?;
    let (t, i) = stem.split_once('-')?;
    if t.len() != 16 || i.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(t, 16).ok()?,
        u64::from_str_radix(i, 16).ok()?,
    ))
}

/// The complete file content for a snapshot.
pub fn encode_snapshot_file(snap: &Snapshot) -> Vec<u8> {
    let mut meta = Vec::new();
    encode_snapshot_meta(&snap.meta, &mut meta);
    let meta = &meta[..];
    let mut out = Vec::with_capacity(FIXED + meta.len() + snap.data.len());
    out.extend_from_slice(&SNAP_MAGIC);
    out.extend_from_slice(&SNAP_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(&snap.data);
    let crc = crc32fast::hash(&out[16..]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and verifies a snapshot file.
pub fn decode_snapshot_file(bytes: &[u8]) -> Result<Snapshot, SnapshotFileError> {
    let head = bytes.get(..FIXED).ok_or(SnapshotFileError::Truncated)?;
    if head[0..8] != SNAP_MAGIC {
        return Err(SnapshotFileError::BadMagic);
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != SNAP_VERSION {
        return Err(SnapshotFileError::Version(version));
    }
    let crc = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
    if crc32fast::hash(&bytes[16..]) != crc {
        return Err(SnapshotFileError::Checksum);
    }
    let mut l = [0u8; 8];
    l.copy_from_slice(&head[16..24]);
    let meta_len =
        usize::try_from(u64::from_le_bytes(l)).map_err(|_| SnapshotFileError::Truncated)?;
    let end = FIXED
        .checked_add(meta_len)
        .filter(|e| *e <= bytes.len())
        .ok_or(SnapshotFileError::Truncated)?;
    let meta = decode_snapshot_meta(&bytes[FIXED..end]).ok_or(SnapshotFileError::Metadata)?;
    Ok(Snapshot {
        meta,
        data: Bytes::copy_from_slice(&bytes[end..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{ConfState, LogIndex, MemberId, Term};

    #[test]
    fn snapshot_files_round_trip_and_detect_every_bit_flip() {
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(42),
                term: Term(3),
                conf: ConfState::with_voters([MemberId(1), MemberId(2), MemberId(3)]),
            },
            data: Bytes::from_static(b"the state machine image"),
        };
        let bytes = encode_snapshot_file(&snap);
        assert_eq!(decode_snapshot_file(&bytes), Ok(snap.clone()));
        assert_eq!(
            snapshot_file_name(&snap.meta),
            "0000000000000003-000000000000002a.snap"
        );
        assert_eq!(
            parse_snapshot_file_name("0000000000000003-000000000000002a.snap"),
            Some((3, 42))
        );
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_snapshot_file(&b).is_err(), "bit {bit} undetected");
        }
        for cut in 0..bytes.len() {
            assert!(
                decode_snapshot_file(&bytes[..cut]).is_err(),
                "truncation at {cut}"
            );
        }
    }
}
