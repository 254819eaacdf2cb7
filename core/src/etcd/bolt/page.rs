//! bbolt's page layout (v1.3.6, what etcd 3.4 links): the page header, the meta record,
//! leaf and branch elements, decoded from byte slices with every offset checked.

use super::error::{BoltError, Loc};

/// Page header: id u64, flags u16, count u16, overflow u32.
pub(crate) const PAGE_HEADER: usize = 16;
/// Leaf elements (flags, pos, ksize, vsize) and branch elements (pos, ksize, pgid) are
/// both 16 bytes.
pub(crate) const ELEMENT: usize = 16;
/// A bucket's value starts with {root pgid u64, sequence u64}.
pub(crate) const BUCKET_HEADER: usize = 16;

pub(crate) const BRANCH_PAGE: u16 = 0x01;
pub(crate) const LEAF_PAGE: u16 = 0x02;
pub(crate) const META_PAGE: u16 = 0x04;
pub(crate) const FREELIST_PAGE: u16 = 0x10;
/// Leaf element flag: the value is a bucket header, not user data.
pub(crate) const BUCKET_LEAF: u32 = 0x01;

pub(crate) const MAGIC: u32 = 0xED0C_DAED;
pub(crate) const VERSION: u32 = 2;
/// `meta.freelist` when the freelist is not stored (etcd on Linux sets NoFreelistSync):
/// readers rebuild it from the pages no bucket reaches.
pub(crate) const NO_FREELIST: u64 = u64::MAX;
/// A page count of 0xFFFF in a freelist page means the real count is the first u64.
pub(crate) const FREELIST_COUNT_OVERFLOW: u16 = 0xFFFF;
/// The meta record from magic up to and including the checksum.
pub(crate) const META_LEN: usize = 64;
/// The checksum covers the meta record up to (not including) itself.
const META_SUMMED: usize = 56;

/// bbolt's `MaxKeySize`.
pub(crate) const MAX_KEY: usize = 32768;
/// bbolt's `MaxValueSize`: (1 << 31) - 2.
pub(crate) const MAX_VALUE: usize = (1 << 31) - 2;

/// Little-endian fixed-width reads that return None past the end instead of panicking.
pub(crate) fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(s.try_into().ok()?))
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// A u32 length or offset from the file as usize; on 16-bit targets it may not fit, and
/// then the element cannot lie inside any slice we hold.
fn to_usize(v: u32) -> Option<usize> {
    usize::try_from(v).ok()
}

/// FNV-1a 64, the hash bbolt checksums its meta record with (Go's `hash/fnv` New64a).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The 16-byte page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    pub fn decode(b: &[u8]) -> Option<PageHeader> {
        Some(PageHeader {
            id: le_u64(b, 0)?,
            flags: le_u16(b, 8)?,
            count: le_u16(b, 10)?,
            overflow: le_u32(b, 12)?,
        })
    }

    pub fn encode(&self) -> [u8; PAGE_HEADER] {
        let mut b = [0u8; PAGE_HEADER];
        b[0..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..10].copy_from_slice(&self.flags.to_le_bytes());
        b[10..12].copy_from_slice(&self.count.to_le_bytes());
        b[12..16].copy_from_slice(&self.overflow.to_le_bytes());
        b
    }
}

/// Go's `page.typ()`, for check messages that match `tx.Check()`'s word for word.
pub(crate) fn page_type_name(flags: u16) -> String {
    if flags & BRANCH_PAGE != 0 {
        "branch".into()
    } else if flags & LEAF_PAGE != 0 {
        "leaf".into()
    } else if flags & META_PAGE != 0 {
        "meta".into()
    } else if flags & FREELIST_PAGE != 0 {
        "freelist".into()
    } else {
        format!("unknown<{flags:02x}>")
    }
}

/// The meta record of pages 0 and 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub page_size: u32,
    pub flags: u32,
    /// Root page of the root bucket (whose elements are the top-level buckets).
    pub root: u64,
    pub sequence: u64,
    pub freelist: u64,
    /// High-water mark: pages below it belong to the database.
    pub pgid: u64,
    pub txid: u64,
}

impl Meta {
    /// Decodes the meta of a page (`page` starts at its page header). None unless magic,
    /// version and checksum are right; like bbolt 1.3.6 a zero checksum is not checked
    /// (files from before bbolt checksummed metas have one).
    pub fn decode(page: &[u8]) -> Option<Meta> {
        let m = page.get(PAGE_HEADER..PAGE_HEADER + META_LEN)?;
        if le_u32(m, 0)? != MAGIC || le_u32(m, 4)? != VERSION {
            return None;
        }
        let checksum = le_u64(m, META_SUMMED)?;
        if checksum != 0 && checksum != fnv1a64(m.get(..META_SUMMED)?) {
            return None;
        }
        Some(Meta {
            page_size: le_u32(m, 8)?,
            flags: le_u32(m, 12)?,
            root: le_u64(m, 16)?,
            sequence: le_u64(m, 24)?,
            freelist: le_u64(m, 32)?,
            pgid: le_u64(m, 40)?,
            txid: le_u64(m, 48)?,
        })
    }

    /// The page header and meta record of meta page `id` (0 or 1), checksummed.
    pub fn encode(&self, id: u64) -> [u8; PAGE_HEADER + META_LEN] {
        let mut b = [0u8; PAGE_HEADER + META_LEN];
        let header = PageHeader {
            id,
            flags: META_PAGE,
            count: 0,
            overflow: 0,
        };
        b[..PAGE_HEADER].copy_from_slice(&header.encode());
        let m = &mut b[PAGE_HEADER..];
        m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        m[4..8].copy_from_slice(&VERSION.to_le_bytes());
        m[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        m[12..16].copy_from_slice(&self.flags.to_le_bytes());
        m[16..24].copy_from_slice(&self.root.to_le_bytes());
        m[24..32].copy_from_slice(&self.sequence.to_le_bytes());
        m[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        m[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        m[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&m[..META_SUMMED]);
        m[META_SUMMED..META_LEN].copy_from_slice(&sum.to_le_bytes());
        b
    }
}

/// A branch or leaf page (or an inline bucket's page) with its element table checked to
/// lie inside `bytes`, which spans the page and its overflow pages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageView<'a> {
    pub loc: Loc,
    pub flags: u16,
    pub count: usize,
    bytes: &'a [u8],
}

/// One leaf element: a key and its value (a bucket header when `flags` has
/// `BUCKET_LEAF`), both sub-slices of the file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeafElem<'a> {
    pub flags: u32,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl LeafElem<'_> {
    pub fn is_bucket(&self) -> bool {
        self.flags & BUCKET_LEAF != 0
    }
}

impl<'a> PageView<'a> {
    /// Reads the header of the page held in `bytes` (the page and its overflow pages, or
    /// an inline bucket's page) and checks its element table fits.
    pub fn new(loc: Loc, bytes: &'a [u8]) -> Result<PageView<'a>, BoltError> {
        let h = PageHeader::decode(bytes).ok_or(BoltError::PageTruncated { loc })?;
        let count = usize::from(h.count);
        // Both element kinds are 16 bytes; a count whose table would not fit is a torn or
        // hostile page, refused before any element is read.
        let table = count
            .checked_mul(ELEMENT)
            .and_then(|t| t.checked_add(PAGE_HEADER));
        if table.is_none_or(|t| t > bytes.len()) {
            return Err(BoltError::TooManyElements { loc, count });
        }
        Ok(PageView {
            loc,
            flags: h.flags,
            count,
            bytes,
        })
    }

    pub fn is_leaf(&self) -> bool {
        self.flags == LEAF_PAGE
    }

    pub fn is_branch(&self) -> bool {
        self.flags == BRANCH_PAGE
    }

    /// `pos` is relative to the element's own address (bbolt writes it so); the key and
    /// the value that follows it must lie inside the page.
    fn slice(&self, index: usize, pos: u32, len: u32) -> Result<&'a [u8], BoltError> {
        let outside = BoltError::ElementOutside {
            loc: self.loc,
            index,
        };
        let start = PAGE_HEADER
            .checked_add(index.checked_mul(ELEMENT).ok_or(outside.clone())?)
            .and_then(|e| e.checked_add(to_usize(pos)?))
            .ok_or(outside.clone())?;
        let end = start
            .checked_add(to_usize(len).ok_or(outside.clone())?)
            .ok_or(outside.clone())?;
        self.bytes.get(start..end).ok_or(outside)
    }

    pub fn leaf(&self, index: usize) -> Result<LeafElem<'a>, BoltError> {
        let at = PAGE_HEADER + index * ELEMENT;
        let outside = BoltError::ElementOutside {
            loc: self.loc,
            index,
        };
        // The table was checked in new(); these reads only fail for index >= count.
        let flags = le_u32(self.bytes, at).ok_or(outside.clone())?;
        let pos = le_u32(self.bytes, at + 4).ok_or(outside.clone())?;
        let ksize = le_u32(self.bytes, at + 8).ok_or(outside.clone())?;
        let vsize = le_u32(self.bytes, at + 12).ok_or(outside.clone())?;
        let kv_len = ksize.checked_add(vsize).ok_or(outside)?;
        let kv = self.slice(index, pos, kv_len)?;
        let (key, value) = kv.split_at(to_usize(ksize).unwrap_or(kv.len()).min(kv.len()));
        Ok(LeafElem { flags, key, value })
    }

    /// A branch element: the first key of the child page (or a key before it) and the
    /// child's page id.
    pub fn branch(&self, index: usize) -> Result<(&'a [u8], u64), BoltError> {
        let at = PAGE_HEADER + index * ELEMENT;
        let outside = BoltError::ElementOutside {
            loc: self.loc,
            index,
        };
        let pos = le_u32(self.bytes, at).ok_or(outside.clone())?;
        let ksize = le_u32(self.bytes, at + 4).ok_or(outside.clone())?;
        let pgid = le_u64(self.bytes, at + 8).ok_or(outside)?;
        Ok((self.slice(index, pos, ksize)?, pgid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_go_hash_fnv_new64a() {
        // Go: fnv.New64a() of "" and of "a".
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn meta_round_trips_and_rejects_corruption() {
        let m = Meta {
            page_size: 4096,
            flags: 0,
            root: 3,
            sequence: 0,
            freelist: 2,
            pgid: 4,
            txid: 7,
        };
        let mut page = m.encode(1).to_vec();
        assert_eq!(Meta::decode(&page), Some(m));
        page[PAGE_HEADER + 20] ^= 1;
        assert_eq!(
            Meta::decode(&page),
            None,
            "checksum must catch a flipped root"
        );
        assert_eq!(Meta::decode(&page[..40]), None);
    }

    #[test]
    fn elements_outside_the_page_are_errors() {
        // A leaf page with one element whose key runs past the end.
        let mut p = PageHeader {
            id: 0,
            flags: LEAF_PAGE,
            count: 1,
            overflow: 0,
        }
        .encode()
        .to_vec();
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&16u32.to_le_bytes()); // pos: right after the element
        p.extend_from_slice(&3u32.to_le_bytes());
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        p.extend_from_slice(b"abc");
        let v = PageView::new(Loc::Inline, &p).expect("table fits");
        assert!(matches!(
            v.leaf(0),
            Err(BoltError::ElementOutside { index: 0, .. })
        ));
        assert!(matches!(
            PageView::new(Loc::Page(3), &p[..20]),
            Err(BoltError::TooManyElements { count: 1, .. })
        ));
    }
}
