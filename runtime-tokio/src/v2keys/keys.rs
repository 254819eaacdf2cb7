//! v2 paths, and where their nodes live in the MVCC keyspace.
//!
//! A v2 path is absolute and clean (`/a/b`, or `/` for the root). Under [`PREFIX`]:
//!
//! - a file `/a/b` is the key `PREFIX + "/a/b"`;
//! - a directory `/a/b` is the marker key `PREFIX + "/a/b/"` (trailing slash, which no
//!   clean path has, so a file and a directory never share a key);
//! - the root is never stored: it always exists.
//!
//! So a directory's marker and everything below it form one key range,
//! `[PREFIX + "/a/b/", PREFIX + "/a/b0")` (`'0'` is the byte after `'/'`): one range
//! deletes a directory recursively, lists it, or checks that it is empty.
//!
//! A value starts with one tag byte saying how the node was written, which v2 reports
//! and MVCC does not keep: [`SET`] (`set` action), [`CREATE`] (`create`, from
//! `prevExist=false`), or [`IMPLICIT`] (a directory made as the parent of something
//! written below it, which has no v2 event of its own). A file's value follows the tag.

use bytes::{BufMut, Bytes, BytesMut};

/// Where the v2 keyspace lives in the MVCC keyspace. The leading NUL sorts it before
/// every printable key, so etcd v3 clients listing `/`-style prefixes never meet it.
pub const PREFIX: &[u8] = b"\0keel/v2";

/// Tag of a node written by a plain set.
pub const SET: u8 = b's';
/// Tag of a node written by a create (`prevExist=false`).
pub const CREATE: u8 = b'c';
/// Tag of a directory created implicitly as a parent.
pub const IMPLICIT: u8 = b'-';

/// Go's `path.Clean("/" + raw)`: the v2 path etcd derives from a request path. `..`
/// never climbs above the root.
pub fn clean(raw: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in raw.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return "/".into();
    }
    let mut out = String::with_capacity(raw.len() + 1);
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    out
}

/// The proper ancestors of a clean path, outermost first, without the root:
/// `/a/b/c` gives `/a`, `/a/b`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/')
        .skip(1)
        .map(move |(i, _)| &path[..i])
}

/// The directory holding a clean path (`/` for top-level nodes and the root).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Whether a node's name starts with `_`: v2 leaves such nodes out of listings.
pub fn is_hidden_name(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|n| n.starts_with('_'))
}

/// etcd's `isHidden(watchPath, keyPath)`: whether a change at `key` is hidden from a
/// watcher of `watch` (some component below the watched path starts with `_`).
pub fn is_hidden(watch: &str, key: &str) -> bool {
    if watch.len() > key.len() {
        return false;
    }
    let after = clean(&key[watch.len()..]);
    after.contains("/_")
}

/// Whether `node` is `dir` or below it (path components, not string prefixes).
pub fn is_within(dir: &str, node: &str) -> bool {
    dir == "/"
        || node == dir
        || (node.len() > dir.len() && node.starts_with(dir) && node.as_bytes()[dir.len()] == b'/')
}

fn key_of(path: &str, suffix: &[u8]) -> Bytes {
    let mut k = BytesMut::with_capacity(PREFIX.len() + path.len() + suffix.len());
    k.put_slice(PREFIX);
    k.put_slice(path.as_bytes());
    k.put_slice(suffix);
    k.freeze()
}

/// The MVCC key of the file at `path` (not the root).
pub fn file_key(path: &str) -> Bytes {
    key_of(path, b"")
}

/// The MVCC key of the directory marker at `path` (for the root, the start of the
/// whole v2 range, where no marker is ever stored).
pub fn dir_key(path: &str) -> Bytes {
    if path == "/" {
        key_of("/", b"")
    } else {
        key_of(path, b"/")
    }
}

/// The range holding the directory at `path`, its marker first, then everything below.
pub fn subtree(path: &str) -> (Bytes, Bytes) {
    let start = dir_key(path);
    let mut end = BytesMut::from(&start[..]);
    if let Some(last) = end.last_mut() {
        // The key ends with '/': the next byte value bounds every key below it.
        *last = b'/' + 1;
    }
    (start, end.freeze())
}

/// The first key after a directory's marker: the start of its children.
pub fn children_start(path: &str) -> Bytes {
    let mut k = BytesMut::from(&dir_key(path)[..]);
    k.put_u8(0);
    k.freeze()
}

/// The v2 path of an MVCC key and whether it is a directory marker; None for keys
/// outside the v2 keyspace or not naming a node.
pub fn decode_key(key: &[u8]) -> Option<(String, bool)> {
    let rest = key.strip_prefix(PREFIX)?;
    let s = std::str::from_utf8(rest).ok()?;
    if !s.starts_with('/') || s == "/" {
        return None;
    }
    match s.strip_suffix('/') {
        Some(dir) => Some((dir.to_string(), true)),
        None => Some((s.to_string(), false)),
    }
}

/// A stored value: the tag, then a file's value.
pub fn encode_value(tag: u8, value: &[u8]) -> Bytes {
    let mut v = BytesMut::with_capacity(1 + value.len());
    v.put_u8(tag);
    v.put_slice(value);
    v.freeze()
}

/// The tag and the file value of a stored value. A value without a known tag (written
/// under the prefix by something else) reads as a plain set of the whole value.
pub fn decode_value(v: &Bytes) -> (u8, Bytes) {
    match v.first() {
        Some(&t) if t == SET || t == CREATE || t == IMPLICIT => (t, v.slice(1..)),
        _ => (SET, v.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_follows_go_path_clean() {
        for (raw, want) in [
            ("", "/"),
            ("/", "/"),
            ("/a", "/a"),
            ("a/b/", "/a/b"),
            ("//a//b//", "/a/b"),
            ("/a/./b/../c", "/a/c"),
            ("/../..", "/"),
            ("/a/../../b", "/b"),
            ("/_config/size", "/_config/size"),
        ] {
            assert_eq!(clean(raw), want, "clean({raw:?})");
        }
    }

    #[test]
    fn paths_map_to_disjoint_keys_and_back() {
        assert_eq!(&file_key("/a/b")[..], b"\0keel/v2/a/b");
        assert_eq!(&dir_key("/a/b")[..], b"\0keel/v2/a/b/");
        assert_eq!(&dir_key("/")[..], b"\0keel/v2/");
        assert_eq!(decode_key(&file_key("/a/b")), Some(("/a/b".into(), false)));
        assert_eq!(decode_key(&dir_key("/a/b")), Some(("/a/b".into(), true)));
        assert_eq!(decode_key(&dir_key("/")), None, "the root has no node key");
        assert_eq!(
            decode_key(b"/a/b"),
            None,
            "keys outside the prefix are not v2"
        );
        assert_eq!(decode_key(b"\0keel/v2x"), None);
    }

    #[test]
    fn a_subtree_range_holds_exactly_the_directory_and_what_is_below() {
        let (start, end) = subtree("/a");
        let inside = |k: &Bytes| start <= *k && *k < end;
        assert!(inside(&dir_key("/a")));
        assert!(inside(&file_key("/a/b")));
        assert!(inside(&dir_key("/a/b/c")));
        assert!(inside(&file_key("/a/\u{10ffff}")));
        assert!(
            !inside(&file_key("/a")),
            "the file /a is not the directory /a"
        );
        assert!(!inside(&file_key("/a-b")));
        assert!(!inside(&file_key("/a.b/c")));
        assert!(!inside(&file_key("/ab")));
        assert!(!inside(&dir_key("/b")));
        let (root_start, root_end) = subtree("/");
        assert!(root_start <= file_key("/a") && file_key("/a") < root_end);
        assert!(root_start <= dir_key("/z") && dir_key("/z") < root_end);
        assert!(children_start("/a") > dir_key("/a") && children_start("/a") <= file_key("/a/ "));
    }

    #[test]
    fn ancestors_parents_and_hidden_names() {
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), ["/a", "/a/b"]);
        assert_eq!(ancestors("/a").count(), 0);
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert!(is_hidden_name("/d/_config"));
        assert!(!is_hidden_name("/_d/config"));
        assert!(is_hidden("/d", "/d/_config/size"));
        assert!(!is_hidden("/d/_config", "/d/_config/size"));
        assert!(is_hidden("/", "/_x"));
        assert!(
            !is_hidden("/d/e/f", "/d"),
            "a deeper watcher sees its ancestor's delete"
        );
        assert!(is_within("/a", "/a/b") && is_within("/a", "/a") && is_within("/", "/x"));
        assert!(!is_within("/a", "/ab") && !is_within("/a/b", "/a"));
    }

    #[test]
    fn values_carry_their_tag() {
        let v = encode_value(CREATE, b"n1=http://a");
        assert_eq!(
            decode_value(&v),
            (CREATE, Bytes::from_static(b"n1=http://a"))
        );
        assert_eq!(
            decode_value(&encode_value(IMPLICIT, b"")),
            (IMPLICIT, Bytes::new())
        );
        assert_eq!(
            decode_value(&Bytes::from_static(b"raw")),
            (SET, Bytes::from_static(b"raw"))
        );
    }
}
