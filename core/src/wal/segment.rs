//! Segment files: names and headers.
//!
//! A segment is named `<seq:016x>-<first index:016x>.wal` (as etcd names its WAL files)
//! and opens with a 64-byte header:
//!
//! ```text
//! 0..8   magic "KEELWAL\0"
//! 8..12  format version (u32 LE)
//! 16..24 cluster ID      24..32 member ID
//! 32..40 sequence number 40..48 first index
//! 48..52 running checksum at the end of the previous segment (the chain continues)
//! 56..60 CRC-32 of bytes 0..56
//! (other bytes zero)
//! ```

use std::fmt;

/// Bytes of a segment header; records start here.
pub const SEGMENT_HEADER: usize = 64;
/// The magic at the start of every segment.
pub const MAGIC: [u8; 8] = *b"KEELWAL\0";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

/// A segment's identity, as encoded in its file name.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SegmentName {
    /// Position in the sequence of segments (0, 1, 2, …).
    pub seq: u64,
    /// Index of the first entry written to it (the next index when it was opened).
    pub first_index: u64,
}

impl SegmentName {
    /// Parses `<seq:016x>-<first:016x>.wal`.
    pub fn parse(name: &str) -> Option<SegmentName> {
        let stem = name.strip_suffix(".wal")?;
        let (a, b) = stem.split_once('-')?;
        if a.len() != 16 || b.len() != 16 {
            return None;
        }
        Some(SegmentName {
            seq: u64::from_str_radix(a, 16).ok()?,
            first_index: u64::from_str_radix(b, 16).ok()?,
        })
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:016x}.wal", self.seq, self.first_index)
    }
}

/// The decoded header of a segment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SegmentHeader {
    /// Cluster this log belongs to.
    pub cluster_id: u64,
    /// Member this log belongs to.
    pub member_id: u64,
    /// Sequence number (must match the file name).
    pub seq: u64,
    /// First index (must match the file name).
    pub first_index: u64,
    /// Running checksum at the end of the previous segment.
    pub prev_crc: u32,
}

/// Why a header is unusable.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HeaderError {
    /// Shorter than a header.
    Short,
    /// Not a Keel WAL segment.
    BadMagic,
    /// Written by an unknown format version.
    Version(u32),
    /// The header's checksum does not match.
    Checksum,
    /// Bytes after the checksum that must be zero are not.
    Reserved,
}

impl SegmentHeader {
    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER] {
        let mut h = [0u8; SEGMENT_HEADER];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[16..24].copy_from_slice(&self.cluster_id.to_le_bytes());
        h[24..32].copy_from_slice(&self.member_id.to_le_bytes());
        h[32..40].copy_from_slice(&self.seq.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_index.to_le_bytes());
        h[48..52].copy_from_slice(&self.prev_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..56]);
        h[56..60].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and verifies a header.
    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let h = buf.get(..SEGMENT_HEADER).ok_or(HeaderError::Short)?;
        if h[0..8] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let u32at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32at(8);
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        if crc32fast::hash(&h[..56]) != u32at(56) {
            return Err(HeaderError::Checksum);
        }
        if h[60..64] != [0, 0, 0, 0] {
            return Err(HeaderError::Reserved);
        }
        Ok(SegmentHeader {
            cluster_id: u64at(16),
            member_id: u64at(24),
            seq: u64at(32),
            first_index: u64at(40),
            prev_crc: u32at(48),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_headers_round_trip() {
        let n = SegmentName {
            seq: 3,
            first_index: 0x1f,
        };
        assert_eq!(n.to_string(), "0000000000000003-000000000000001f.wal");
        assert_eq!(SegmentName::parse(&n.to_string()), Some(n));
        assert_eq!(SegmentName::parse("3-1f.wal"), None);
        assert_eq!(
            SegmentName::parse("0000000000000003-000000000000001f.tmp"),
            None
        );
        let h = SegmentHeader {
            cluster_id: 1,
            member_id: 2,
            seq: 3,
            first_index: 4,
            prev_crc: 5,
        };
        let mut bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        bytes[30] ^= 1;
        assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderError::Checksum));
        assert_eq!(SegmentHeader::decode(&bytes[..10]), Err(HeaderError::Short));
    }
}
