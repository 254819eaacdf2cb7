//! etcd v2 store semantics over the MVCC keyspace: reads, write plans, and the v2 event
//! each MVCC revision of the v2 keyspace stands for.
//!
//! A write is planned against the keyspace as read at some revision, and the plan is a
//! transaction whose compares hold only if every key the decision looked at is still
//! as read (same mod revision, or still absent). If they fail, something changed in
//! between and the caller plans again; so each v2 write applies atomically, exactly
//! as decided, in one revision — which is also what lets a watcher recover the v2 event
//! from that revision's MVCC events.

use std::collections::HashMap;

use bytes::Bytes;
use keel_core::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, Event as KvEvent, EventKind,
    KeyValue, KvStore, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use super::json::{Event, Node};
use super::keys::{self, CREATE, IMPLICIT, SET};

/// A v2 error: etcd's error code, its cause and the store index it reports.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct V2Error {
    /// etcd's error code (100 key not found, ...).
    pub code: u32,
    /// etcd's `cause` (usually the path concerned).
    pub cause: String,
    /// etcd's `index` (the store index, 0 for request errors).
    pub index: i64,
}

impl V2Error {
    /// An error with `code`.
    pub fn new(code: u32, cause: impl Into<String>, index: i64) -> V2Error {
        V2Error {
            code,
            cause: cause.into(),
            index,
        }
    }

    /// etcd's message for the code.
    pub fn message(&self) -> &'static str {
        match self.code {
            100 => "Key not found",
            101 => "Compare failed",
            102 => "Not a file",
            104 => "Not a directory",
            105 => "Key already exists",
            107 => "Root is read only",
            108 => "Directory not empty",
            110 => "The request requires user authentication",
            201 => "PrevValue is Required in POST form",
            202 => "The given TTL in POST form is not a number",
            203 => "The given index in POST form is not a number",
            209 => "Invalid field",
            210 => "Invalid POST form",
            211 => "Value provided on refresh",
            212 => "A TTL must be provided on refresh",
            300 => "Raft Internal Error",
            301 => "During Leader Election",
            401 => "The event in requested index is outdated and cleared",
            _ => "",
        }
    }

    /// etcd's HTTP status for the code.
    pub fn status(&self) -> u16 {
        match self.code {
            100 => 404,
            110 => 401,
            102 | 108 => 403,
            101 | 105 => 412,
            300 | 301 => 500,
            _ => 400,
        }
    }
}

/// A write the v2 API asks for.
#[derive(Clone, Debug)]
pub enum Write {
    /// PUT: a file with `value`, or a directory; `create` is `prevExist=false`.
    Set {
        /// The file's value (ignored for a directory, as etcd does).
        value: Bytes,
        /// `dir=true`.
        dir: bool,
        /// `prevExist=false`.
        create: bool,
    },
    /// DELETE; `recursive` implies `dir`.
    Delete {
        /// `dir=true`.
        dir: bool,
        /// `recursive=true`.
        recursive: bool,
    },
}

/// A planned write: the transaction to propose and how to report it once applied.
#[derive(Debug)]
pub struct Plan {
    /// Succeeds only if the keyspace is still as the plan read it.
    pub txn: TxnRequest,
    /// The event, less the revision the write will get.
    pub done: Done,
}

/// What a planned write reports once it applied at some revision.
#[derive(Debug)]
pub struct Done {
    action: &'static str,
    key: String,
    dir: bool,
    value: Option<Bytes>,
    /// createdIndex of a deleted node (a set node is created at its own revision).
    deleted_created: i64,
    prev: Option<Node>,
}

impl Done {
    /// The event of the write, applied at revision `rev`.
    pub fn event(self, rev: i64) -> Event {
        let created = if self.action == "delete" {
            self.deleted_created
        } else {
            rev
        };
        Event {
            action: self.action,
            node: Some(Node {
                key: self.key,
                dir: self.dir,
                value: self.value,
                nodes: Vec::new(),
                modified: rev,
                created,
            }),
            prev: self.prev,
        }
    }
}

fn get_one(kv: &KvStore, key: Bytes) -> Option<KeyValue> {
    let r = RangeRequest {
        key,
        ..RangeRequest::default()
    };
    kv.range(&r).ok().and_then(|r| r.kvs.into_iter().next())
}

/// The node a stored key-value stands for. A v2 set replaces a file with a new node,
/// so a file's createdIndex is the revision of its last write (the only writes here
/// are sets and creates); a directory is written once per life.
fn node_of(path: &str, dir: bool, kv: &KeyValue) -> Node {
    if dir {
        Node {
            key: path.to_string(),
            dir: true,
            modified: kv.mod_revision,
            created: kv.create_revision,
            ..Node::default()
        }
    } else {
        Node {
            key: path.to_string(),
            value: Some(keys::decode_value(&kv.value).1),
            modified: kv.mod_revision,
            created: kv.mod_revision,
            ..Node::default()
        }
    }
}

/// Walks the ancestors of `path` as etcd's store walk does: a file on the way is
/// "Not a directory", a missing directory "Key not found" (both naming that ancestor).
fn walk(kv: &KvStore, path: &str, rev: i64) -> Result<(), V2Error> {
    for a in keys::ancestors(path) {
        if get_one(kv, keys::file_key(a)).is_some() {
            return Err(V2Error::new(104, a, rev));
        }
        if get_one(kv, keys::dir_key(a)).is_none() {
            return Err(V2Error::new(100, a, rev));
        }
    }
    Ok(())
}

/// A GET of `path` (`recursive` lists nested directories; `sorted` orders children by
/// key, otherwise by createdIndex, the order discovery reads registrations in).
pub fn get(kv: &KvStore, path: &str, recursive: bool, sorted: bool) -> Result<Event, V2Error> {
    let rev = kv.revision();
    let node = if path == "/" {
        Node {
            dir: true,
            nodes: list(kv, "/", recursive, sorted),
            ..Node::default()
        }
    } else {
        walk(kv, path, rev)?;
        if let Some(f) = get_one(kv, keys::file_key(path)) {
            node_of(path, false, &f)
        } else if let Some(d) = get_one(kv, keys::dir_key(path)) {
            let mut n = node_of(path, true, &d);
            n.nodes = list(kv, path, recursive, sorted);
            n
        } else {
            return Err(V2Error::new(100, path, rev));
        }
    };
    Ok(Event {
        action: "get",
        node: Some(node),
        prev: None,
    })
}

/// The visible children of the directory `dir` (nested ones too when `recursive`).
fn list(kv: &KvStore, dir: &str, recursive: bool, sorted: bool) -> Vec<Node> {
    let (key, range_end) = keys::subtree(dir);
    let r = RangeRequest {
        key,
        range_end,
        ..RangeRequest::default()
    };
    let Ok(res) = kv.range(&r) else {
        return Vec::new();
    };
    let mut by_parent: HashMap<String, Vec<Node>> = HashMap::new();
    for kv in &res.kvs {
        let Some((path, is_dir)) = keys::decode_key(&kv.key) else {
            continue;
        };
        if path == dir || keys::is_hidden_name(&path) {
            continue;
        }
        let parent = keys::parent(&path);
        if !recursive && parent != dir {
            continue;
        }
        by_parent
            .entry(parent.to_string())
            .or_default()
            .push(node_of(&path, is_dir, kv));
    }
    assemble(dir, &mut by_parent, recursive, sorted)
}

fn assemble(
    dir: &str,
    by_parent: &mut HashMap<String, Vec<Node>>,
    recursive: bool,
    sorted: bool,
) -> Vec<Node> {
    let mut nodes = by_parent.remove(dir).unwrap_or_default();
    if sorted {
        nodes.sort_by(|a, b| a.key.cmp(&b.key));
    } else {
        nodes.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.key.cmp(&b.key)));
    }
    if recursive {
        for n in nodes.iter_mut().filter(|n| n.dir) {
            // A hidden directory's subtree was never collected under a visible parent.
            n.nodes = assemble(&n.key.clone(), by_parent, recursive, sorted);
        }
    }
    nodes
}

/// Plans `w` on `path` against the keyspace as it is now.
pub fn plan(kv: &KvStore, path: &str, w: &Write) -> Result<Plan, V2Error> {
    let rev = kv.revision();
    if path == "/" {
        return Err(V2Error::new(107, "/", rev));
    }
    let mut compare = Vec::new();
    let mut ops = Vec::new();
    // Reads a key and makes the transaction depend on it staying as read.
    let mut observe = |key: Bytes| -> Option<KeyValue> {
        let got = get_one(kv, key.clone());
        compare.push(Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Mod(got.as_ref().map_or(0, |k| k.mod_revision)),
            key,
            range_end: Bytes::new(),
        });
        got
    };
    for a in keys::ancestors(path) {
        if observe(keys::file_key(a)).is_some() {
            return Err(V2Error::new(104, a, rev));
        }
        if observe(keys::dir_key(a)).is_none() {
            match w {
                Write::Set { .. } => ops.push(put(keys::dir_key(a), IMPLICIT, b"")),
                Write::Delete { .. } => return Err(V2Error::new(100, a, rev)),
            }
        }
    }
    let file = observe(keys::file_key(path));
    let marker = observe(keys::dir_key(path));
    let done = match w {
        Write::Set { value, dir, create } => {
            let tag = if *create { CREATE } else { SET };
            if marker.is_some() || (file.is_some() && *create) {
                let code = if *create { 105 } else { 102 };
                return Err(V2Error::new(code, path, rev));
            }
            let prev = file.as_ref().map(|f| node_of(path, false, f));
            if *dir {
                if file.is_some() {
                    // etcd's set replaces a file with the new directory.
                    ops.push(RequestOp::DeleteRange(DeleteRangeRequest {
                        key: keys::file_key(path),
                        ..DeleteRangeRequest::default()
                    }));
                }
                ops.push(put(keys::dir_key(path), tag, b""));
            } else {
                ops.push(put(keys::file_key(path), tag, value));
            }
            Done {
                action: if *create { "create" } else { "set" },
                key: path.to_string(),
                dir: *dir,
                value: (!*dir).then(|| value.clone()),
                deleted_created: 0,
                prev,
            }
        }
        Write::Delete { dir, recursive } => {
            let (prev, range) = if let Some(f) = &file {
                // A file goes whatever the flags say, as in etcd.
                (
                    node_of(path, false, f),
                    (keys::file_key(path), Bytes::new()),
                )
            } else if let Some(d) = &marker {
                if !*dir && !*recursive {
                    return Err(V2Error::new(102, path, rev));
                }
                let (start, end) = keys::subtree(path);
                if !*recursive {
                    let children = RangeRequest {
                        key: keys::children_start(path),
                        range_end: end.clone(),
                        count_only: true,
                        ..RangeRequest::default()
                    };
                    if kv.range(&children).map_or(0, |r| r.count) > 0 {
                        return Err(V2Error::new(108, path, rev));
                    }
                    // Still empty when applied: nothing below was written since.
                    compare.push(Compare {
                        result: CompareResult::Less,
                        target: CompareTarget::Mod(rev + 1),
                        key: keys::children_start(path),
                        range_end: end.clone(),
                    });
                }
                (node_of(path, true, d), (start, end))
            } else {
                return Err(V2Error::new(100, path, rev));
            };
            ops.push(RequestOp::DeleteRange(DeleteRangeRequest {
                key: range.0,
                range_end: range.1,
                prev_kv: false,
            }));
            Done {
                action: "delete",
                key: path.to_string(),
                dir: prev.dir,
                value: None,
                deleted_created: prev.created,
                prev: Some(prev),
            }
        }
    };
    Ok(Plan {
        txn: TxnRequest {
            compare,
            success: ops,
            failure: Vec::new(),
        },
        done,
    })
}

fn put(key: Bytes, tag: u8, value: &[u8]) -> RequestOp {
    RequestOp::Put(PutRequest {
        key,
        value: keys::encode_value(tag, value),
        ..PutRequest::default()
    })
}

/// The v2 event one revision's MVCC events in the v2 keyspace stand for.
#[derive(Clone, Debug)]
pub struct Change {
    /// The event as v2 reports it.
    pub event: Event,
    /// Every node removed (for a delete): their watchers are told too.
    pub removed: Vec<String>,
}

impl Change {
    fn key(&self) -> &str {
        self.event.node.as_ref().map_or("", |n| n.key.as_str())
    }

    /// Whether a watcher of `path` (`recursive`) is told of this change, as etcd
    /// decides: from its event history for changes up to `start_index` (the store index
    /// when the watcher was made), and as its watcher hub notifies for later ones.
    pub fn concerns(&self, path: &str, recursive: bool, rev: i64, start_index: i64) -> bool {
        let key = self.key();
        if key == path {
            return true;
        }
        let deleted = self.event.action == "delete";
        if rev <= start_index {
            // etcd's EventHistory.scan: plain string prefixes, hidden nodes included.
            let prefix = if path.ends_with('/') {
                path.to_string()
            } else {
                format!("{path}/")
            };
            let prev_dir = self.event.prev.as_ref().is_some_and(|p| p.dir);
            (recursive && key.starts_with(&prefix))
                || (deleted && prev_dir && path.starts_with(key))
        } else {
            (recursive && keys::is_within(path, key) && !keys::is_hidden(path, key))
                || (deleted && self.removed.iter().any(|r| r == path))
        }
    }
}

/// The v2 change of the MVCC events of one revision (all in the v2 keyspace, with
/// their previous key-values); None if they carry no v2 event.
pub fn change_of(events: &[KvEvent]) -> Option<Change> {
    let rev = events.first()?.rev.main;
    let decoded: Vec<(String, bool, &KvEvent)> = events
        .iter()
        .filter_map(|e| keys::decode_key(&e.kv.key).map(|(p, d)| (p, d, e)))
        .collect();
    // A set or create: the one put that is not an implicit parent directory.
    for (path, dir, e) in &decoded {
        if e.kind != EventKind::Put {
            continue;
        }
        let (tag, _) = keys::decode_value(&e.kv.value);
        if tag == IMPLICIT {
            continue;
        }
        // The node it replaced: a file set again, or a file turned into a directory.
        let replaced = e.prev_kv.as_ref().or_else(|| {
            decoded
                .iter()
                .find(|(p, d, x)| x.kind == EventKind::Delete && !*d && p == path)
                .and_then(|(_, _, x)| x.prev_kv.as_ref())
        });
        return Some(Change {
            event: Event {
                action: if tag == CREATE { "create" } else { "set" },
                node: Some(node_of(path, *dir, &e.kv)),
                prev: replaced.map(|p| node_of(path, false, p)),
            },
            removed: Vec::new(),
        });
    }
    // A delete: its target is the shallowest node removed.
    let (path, dir, e) = decoded
        .iter()
        .filter(|(_, _, e)| e.kind == EventKind::Delete)
        .min_by_key(|(p, _, _)| p.len())?;
    let prev = e.prev_kv.as_ref().map(|p| node_of(path, *dir, p));
    Some(Change {
        event: Event {
            action: "delete",
            node: Some(Node {
                key: path.clone(),
                dir: *dir,
                modified: rev,
                created: prev.as_ref().map_or(0, |p| p.created),
                ..Node::default()
            }),
            prev,
        },
        removed: decoded
            .iter()
            .filter(|(_, _, e)| e.kind == EventKind::Delete)
            .map(|(p, _, _)| p.clone())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::mvcc::{WatchHub, WatchRequest};

    fn set(value: &str) -> Write {
        Write::Set {
            value: Bytes::copy_from_slice(value.as_bytes()),
            dir: false,
            create: false,
        }
    }

    /// Plans and applies a write the way the member does, returning its event.
    fn apply(kv: &mut KvStore, path: &str, w: Write) -> Result<String, V2Error> {
        let p = plan(kv, path, &w)?;
        let r = kv.txn(&p.txn).expect("txn");
        assert!(r.succeeded, "nothing changed between plan and apply");
        Ok(p.done.event(kv.revision()).to_json())
    }

    fn err(code: u32, cause: &str, index: i64) -> Result<String, V2Error> {
        Err(V2Error::new(code, cause, index))
    }

    #[test]
    fn writes_and_reads_follow_v2_rules() {
        let mut kv = KvStore::new();
        let r0 = kv.revision();
        assert_eq!(
            apply(&mut kv, "/d/a/_config/size", set("3")),
            Ok(format!("{{\"action\":\"set\",\"node\":{{\"key\":\"/d/a/_config/size\",\"value\":\"3\",\"modifiedIndex\":{0},\"createdIndex\":{0}}}}}\n", r0 + 1))
        );
        // The hidden _config is not listed; the directory exists since that write.
        assert_eq!(
            get(&kv, "/d/a", true, false).map(|e| e.to_json()),
            Ok(format!("{{\"action\":\"get\",\"node\":{{\"key\":\"/d/a\",\"dir\":true,\"modifiedIndex\":{0},\"createdIndex\":{0}}}}}\n", r0 + 1))
        );
        assert_eq!(apply(&mut kv, "/d/a", set("x")), err(102, "/d/a", r0 + 1));
        assert_eq!(
            apply(&mut kv, "/d/a/_config/size/x", set("x")),
            err(104, "/d/a/_config/size", r0 + 1)
        );
        let create = |v: &str| Write::Set {
            value: Bytes::copy_from_slice(v.as_bytes()),
            dir: false,
            create: true,
        };
        assert!(apply(&mut kv, "/d/a/m1", create("n1")).is_ok());
        assert_eq!(
            apply(&mut kv, "/d/a/m1", create("n1")),
            err(105, "/d/a/m1", r0 + 2)
        );
        assert_eq!(
            get(&kv, "/nope/x", false, false),
            Err(V2Error::new(100, "/nope", r0 + 2))
        );
        assert_eq!(
            apply(
                &mut kv,
                "/d",
                Write::Delete {
                    dir: false,
                    recursive: false
                }
            ),
            err(102, "/d", r0 + 2)
        );
        assert_eq!(
            apply(
                &mut kv,
                "/d",
                Write::Delete {
                    dir: true,
                    recursive: false
                }
            ),
            err(108, "/d", r0 + 2)
        );
        assert_eq!(
            apply(
                &mut kv,
                "/",
                Write::Delete {
                    dir: true,
                    recursive: true
                }
            ),
            err(107, "/", r0 + 2)
        );
        assert_eq!(
            apply(&mut kv, "/d", Write::Delete { dir: false, recursive: true }),
            Ok(format!("{{\"action\":\"delete\",\"node\":{{\"key\":\"/d\",\"dir\":true,\"modifiedIndex\":{0},\"createdIndex\":{1}}},\"prevNode\":{{\"key\":\"/d\",\"dir\":true,\"modifiedIndex\":{1},\"createdIndex\":{1}}}}}\n", r0 + 3, r0 + 1))
        );
        assert_eq!(
            get(&kv, "/d/a/m1", false, false),
            Err(V2Error::new(100, "/d", r0 + 3))
        );
        assert_eq!(
            get(&kv, "/", false, false).map(|e| e.to_json()),
            Ok("{\"action\":\"get\",\"node\":{\"dir\":true}}\n".to_string())
        );
    }

    #[test]
    fn a_stale_plan_does_not_apply() {
        let mut kv = KvStore::new();
        let stale = plan(
            &kv,
            "/d/x",
            &Write::Set {
                value: Bytes::from_static(b"1"),
                dir: false,
                create: true,
            },
        )
        .expect("plan");
        apply(&mut kv, "/d/x", set("other")).expect("set");
        assert!(!kv.txn(&stale.txn).expect("txn").succeeded);
        let empty = plan(
            &kv,
            "/e",
            &Write::Set {
                value: Bytes::new(),
                dir: true,
                create: false,
            },
        )
        .and_then(|p| {
            kv.txn(&p.txn).expect("txn");
            plan(
                &kv,
                "/e",
                &Write::Delete {
                    dir: true,
                    recursive: false,
                },
            )
        })
        .expect("plan delete");
        apply(&mut kv, "/e/child", set("1")).expect("set");
        assert!(
            !kv.txn(&empty.txn).expect("txn").succeeded,
            "a child written since the plan keeps the directory"
        );
    }

    #[test]
    fn listings_nest_and_order_by_created_index() {
        let mut kv = KvStore::new();
        for (p, v) in [
            ("/l/m3", "c"),
            ("/l/m1", "a"),
            ("/l/sub/x", "x"),
            ("/l/m2", "b"),
            ("/l/_h", "h"),
        ] {
            apply(&mut kv, p, set(v)).expect("set");
        }
        let names = |e: Event| -> Vec<String> {
            e.node
                .map(|n| n.nodes.into_iter().map(|c| c.key).collect())
                .unwrap_or_default()
        };
        assert_eq!(
            names(get(&kv, "/l", false, false).expect("get")),
            ["/l/m3", "/l/m1", "/l/sub", "/l/m2"]
        );
        assert_eq!(
            names(get(&kv, "/l", false, true).expect("get")),
            ["/l/m1", "/l/m2", "/l/m3", "/l/sub"]
        );
        let rec = get(&kv, "/l", true, false).expect("get");
        let sub = rec
            .node
            .as_ref()
            .and_then(|n| n.nodes.iter().find(|c| c.key == "/l/sub"))
            .cloned();
        assert_eq!(
            sub.map(|s| s.nodes.into_iter().map(|c| c.key).collect::<Vec<_>>()),
            Some(vec!["/l/sub/x".to_string()])
        );
        assert!(names(get(&kv, "/l", false, false).expect("get"))
            .iter()
            .all(|k| !k.contains("_h")));
    }

    /// Every v2 write, seen through a watcher of the whole v2 keyspace.
    fn changes(kv: &mut KvStore, writes: Vec<(&str, Write)>) -> Vec<(i64, Change)> {
        let mut hub = WatchHub::new(1 << 16, 1 << 20);
        let (key, range_end) = keys::subtree("/");
        hub.create(
            WatchRequest {
                key,
                range_end,
                prev_kv: true,
                ..WatchRequest::default()
            },
            kv,
        );
        for (p, w) in writes {
            apply(kv, p, w).expect("write");
            hub.on_events(&kv.take_events());
        }
        let events: Vec<KvEvent> = hub
            .take_responses(0)
            .into_iter()
            .flat_map(|r| r.events)
            .collect();
        let mut out = Vec::new();
        for group in events.chunk_by(|a, b| a.rev.main == b.rev.main) {
            if let Some(c) = change_of(group) {
                out.push((group[0].rev.main, c));
            }
        }
        out
    }

    #[test]
    fn each_revision_reads_back_as_its_v2_event() {
        let mut kv = KvStore::new();
        let writes = vec![
            ("/w/a/b", set("1")),
            ("/w/a/b", set("2")),
            ("/w/f", set("file")),
            (
                "/w/f",
                Write::Set {
                    value: Bytes::new(),
                    dir: true,
                    create: false,
                },
            ),
            (
                "/w/c",
                Write::Set {
                    value: Bytes::from_static(b"v"),
                    dir: false,
                    create: true,
                },
            ),
            (
                "/w/a",
                Write::Delete {
                    dir: true,
                    recursive: true,
                },
            ),
        ];
        let mut expected = Vec::new();
        {
            let mut probe = KvStore::new();
            for (p, w) in &writes {
                expected.push(apply(&mut probe, p, w.clone()).expect("write"));
            }
        }
        let got = changes(&mut kv, writes);
        let got: Vec<String> = got.iter().map(|(_, c)| c.event.to_json()).collect();
        assert_eq!(got, expected, "a watcher sees what the writer was answered");
    }

    #[test]
    fn watchers_are_told_as_etcd_tells_them() {
        let mut kv = KvStore::new();
        let got = changes(
            &mut kv,
            vec![
                ("/d/_config/size", set("3")),
                ("/d/m1", set("a")),
                ("/d/sub/x", set("x")),
                (
                    "/d",
                    Write::Delete {
                        dir: true,
                        recursive: true,
                    },
                ),
            ],
        );
        let [(r1, hidden), (r2, m1), (_, _), (r4, del)] = &got[..] else {
            panic!("four changes, got {got:?}");
        };
        // Live (after the watcher's start index of 0).
        assert!(
            !hidden.concerns("/d", true, *r1, 0),
            "hidden from the directory watcher"
        );
        assert!(hidden.concerns("/d/_config/size", false, *r1, 0));
        assert!(m1.concerns("/d", true, *r2, 0));
        assert!(!m1.concerns("/d", false, *r2, 0), "not recursive");
        assert!(!m1.concerns("/", false, *r2, 0));
        assert!(
            del.concerns("/d/sub/x", false, *r4, 0),
            "a removed node's watcher"
        );
        assert!(del.concerns("/d/_config", false, *r4, 0));
        assert!(!del.concerns("/d/never", false, *r4, 0));
        assert!(del.concerns("/", true, *r4, 0));
        // From history, etcd matches by prefix and shows hidden nodes.
        assert!(hidden.concerns("/d", true, *r1, *r4));
        assert!(del.concerns("/d/never", false, *r4, *r4));
    }
}
