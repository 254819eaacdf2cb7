//! What can be wrong with a bbolt file, each as one line that names the page or key.

use std::fmt;

/// Where a page lives: a numbered page of the file, or an inline bucket's page carried
/// inside its parent's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// A page of the file, by id.
    Page(u64),
    /// The page inside an inline bucket's value.
    Inline,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Page(id) => write!(f, "page {id}"),
            Loc::Inline => f.write_str("an inline bucket page"),
        }
    }
}

/// A key for a message: printable ASCII as is, other bytes escaped, long keys cut.
pub(crate) fn show(key: &[u8]) -> String {
    const SHOWN: usize = 64;
    let mut s: String = key
        .iter()
        .take(SHOWN)
        .flat_map(|b| b.escape_ascii())
        .map(char::from)
        .collect();
    if key.len() > SHOWN {
        s.push_str("...");
    }
    format!("\"{s}\"")
}

/// Why a bbolt file cannot be read. Every variant is a structural problem of the file
/// (never an I/O error: the reader works on bytes already in memory).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BoltError {
    /// Not even the two meta pages are there.
    #[error("bbolt: file is {len} bytes, shorter than two meta pages")]
    TooShort {
        /// File length.
        len: u64,
    },
    /// Neither meta page has the right magic, version and checksum.
    #[error("bbolt: invalid meta pages (bad magic, version or checksum)")]
    InvalidMeta,
    /// The meta's high-water mark claims more pages than the file holds.
    #[error("bbolt: file is {len} bytes, shorter than its {pages} pages of {page_size} bytes")]
    ShortFile {
        /// File length.
        len: u64,
        /// High-water mark from the meta.
        pages: u64,
        /// Page size in use.
        page_size: usize,
    },
    /// A meta field (root or freelist page) points past the high-water mark.
    #[error("bbolt: meta {field} page {id} is out of range (file has {pages} pages)")]
    MetaOutOfRange {
        /// `root` or `freelist`.
        field: &'static str,
        /// The page id it names.
        id: u64,
        /// High-water mark.
        pages: u64,
    },
    /// A page id at or past the high-water mark.
    #[error("bbolt: page {id} is out of range (file has {pages} pages)")]
    PageOutOfRange {
        /// The page id referenced.
        id: u64,
        /// High-water mark.
        pages: u64,
    },
    /// A page whose overflow pages run past the high-water mark.
    #[error(
        "bbolt: page {id} has {overflow} overflow pages, past the end (file has {pages} pages)"
    )]
    OverflowOutOfRange {
        /// The page id.
        id: u64,
        /// Its header's overflow count.
        overflow: u32,
        /// High-water mark.
        pages: u64,
    },
    /// A page whose header names another id: a torn write or a misdirected reference.
    #[error("bbolt: page {id} has id {found} in its header")]
    PageIdMismatch {
        /// Where it was read.
        id: u64,
        /// What its header says.
        found: u64,
    },
    /// A page too short to hold its own header.
    #[error("bbolt: {loc} is too short for a page header")]
    PageTruncated {
        /// The page.
        loc: Loc,
    },
    /// A page reached from a bucket that is not a branch or leaf page.
    #[error("bbolt: {loc} has flags {flags:#04x}, expected a branch or leaf page")]
    PageType {
        /// The page.
        loc: Loc,
        /// Its flags.
        flags: u16,
    },
    /// A page whose element count does not fit in it.
    #[error("bbolt: {loc} claims {count} elements, more than fit in it")]
    TooManyElements {
        /// The page.
        loc: Loc,
        /// Its element count.
        count: usize,
    },
    /// An element whose key or value lies outside its page.
    #[error("bbolt: {loc} element {index} points outside its page")]
    ElementOutside {
        /// The page.
        loc: Loc,
        /// Element index.
        index: usize,
    },
    /// A branch page without elements leads nowhere.
    #[error("bbolt: {loc} is a branch page without elements")]
    EmptyBranch {
        /// The page.
        loc: Loc,
    },
    /// Keys of a bucket must be strictly ascending in a walk.
    #[error("bbolt: {loc} element {index} has key {key}, not after the key before it")]
    KeyOrder {
        /// The page.
        loc: Loc,
        /// Element index.
        index: usize,
        /// The key, shown.
        key: String,
    },
    /// A page reached twice from the same tree (a cycle or shared subtree).
    #[error("bbolt: page {id} is referenced twice")]
    ReferencedTwice {
        /// The page id.
        id: u64,
    },
    /// A tree deeper than any bbolt builds (it would need more pages than exist).
    #[error("bbolt: the tree under {loc} is more than {max} levels deep")]
    TooDeep {
        /// The tree's root.
        loc: Loc,
        /// The bound.
        max: usize,
    },
    /// Buckets nested deeper than the reader follows.
    #[error("bbolt: buckets are nested more than {max} deep")]
    NestedTooDeep {
        /// The bound.
        max: usize,
    },
    /// A key of the root bucket that is plain data: the root may hold only buckets.
    #[error("bbolt: top-level key {key} is not a bucket")]
    NotABucket {
        /// The key, shown.
        key: String,
    },
    /// A nested bucket where etcd keeps only plain keys.
    #[error("bbolt: key {key} is a nested bucket, which etcd never writes")]
    NestedBucket {
        /// The key, shown.
        key: String,
    },
    /// A bucket value too short for its header or its inline page.
    #[error("bbolt: bucket {key} has a malformed header")]
    BadBucket {
        /// The bucket name, shown.
        key: String,
    },
    /// A key of etcd's `key` bucket too short for a revision.
    #[error("bbolt: key bucket has key {key}, shorter than a revision")]
    ShortRevision {
        /// The key, shown.
        key: String,
    },
    /// `tx.Check()` found problems; the message is etcdctl's, word for word.
    #[error("snapshot file integrity check failed. {count} errors found.\n{}", problems.join("\n"))]
    Integrity {
        /// How many problems there were in all.
        count: usize,
        /// The first of them, in Go's words.
        problems: Vec<String>,
    },
}
