//! The discovery service: the subset of etcd's v2 keys API that v2 discovery uses, over
//! one discovery directory, as a pure store (the simulated node around it is in `run`).
//!
//! - `GET <dir>/_config/size`: the size key.
//! - `GET <dir>`: the directory listing (children in no particular order, as etcd's
//!   `sorted=false` returns them), with `X-Etcd-Index`.
//! - `PUT <dir>/<id>?prevExist=false` with `value=...`: create only; `201`, or `412` with
//!   error 105 "Key already exists".
//! - `GET <key>?wait=true&waitIndex=N[&recursive=true]`: the first event at index `N` or
//!   later on the key (or under it), at once if it is in the history, else when it
//!   happens (`waitIndex=0`: the next one).
//!
//! Every write increments the store's index, as etcd's v2 store does; the whole store
//! (index, keys, event history) is what the service persists across crashes.

use std::collections::BTreeMap;

/// The directory every scenario discovers under (the discovery URL's path after
/// `/v2/keys`).
pub const DIR: &str = "/_etcd/registry/keel-token";

/// An HTTP request as the simulated network carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// `true` for `PUT`, `false` for `GET`.
    pub put: bool,
    /// Path and query (`/v2/keys/...?...`).
    pub path_and_query: String,
    /// Form body of a `PUT`.
    pub form: Option<String>,
}

/// An HTTP response as the simulated network carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `X-Etcd-Index`.
    pub etcd_index: Option<String>,
    /// JSON body.
    pub body: Vec<u8>,
}

/// A long-poll waiting for an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    key: String,
    recursive: bool,
    since: u64,
}

/// What the store does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Answer now.
    Now(HttpResponse),
    /// Answer when a matching event happens ([`Store::answer_watch`]).
    Wait(Watch),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    key: String,
    value: String,
    index: u64,
}

/// The persisted state of the discovery service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    index: u64,
    size: Node,
    dir_index: u64,
    /// Registrations by full key.
    nodes: BTreeMap<String, Node>,
    /// Every create, in index order (etcd keeps the last 1000; runs make far fewer).
    events: Vec<Node>,
}

impl Store {
    /// A directory whose `_config/size` is `size`, created at `base_index` (other keys
    /// of the service took the indexes before).
    pub fn new(size: u64, base_index: u64) -> Store {
        let size = Node {
            key: format!("{DIR}/_config/size"),
            value: size.to_string(),
            index: base_index + 1,
        };
        Store {
            index: base_index + 1,
            dir_index: base_index,
            events: vec![size.clone()],
            size,
            nodes: BTreeMap::new(),
        }
    }

    /// The registrations: (last key segment, value, createdIndex = modifiedIndex).
    pub fn registrations(&self) -> Vec<(String, String, u64)> {
        self.nodes
            .values()
            .map(|n| (base(&n.key).to_owned(), n.value.clone(), n.index))
            .collect()
    }

    /// Handles a request; `shuffle` orders a listing's children (etcd does not sort
    /// them). Returns the answer or the long-poll to park, and whether it was a create.
    pub fn handle(
        &mut self,
        req: &HttpRequest,
        shuffle: impl FnOnce(&mut Vec<String>),
    ) -> (Handled, bool) {
        let (path, query) = req
            .path_and_query
            .split_once('?')
            .unwrap_or((&req.path_and_query, ""));
        let Some(key) = path.strip_prefix("/v2/keys") else {
            return (Handled::Now(self.plain(404, "404 page not found\n")), false);
        };
        let key = if key.len() > 1 {
            key.trim_end_matches('/')
        } else {
            key
        };
        let q = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
        };
        if req.put {
            if q("prevExist") != Some("false") {
                return (
                    Handled::Now(self.error(400, 209, "Invalid field", "prevExist")),
                    false,
                );
            }
            let value = req
                .form
                .as_deref()
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "value")
                .map(|(_, v)| form_unescape(v));
            let Some(value) = value else {
                return (
                    Handled::Now(self.error(400, 200, "Value is Required in POST form", "")),
                    false,
                );
            };
            let parent = key.rsplit_once('/').map_or("", |(p, _)| p);
            if parent != DIR || base(key) == "_config" {
                return (
                    Handled::Now(self.error(403, 107, "Root is read only", key)),
                    false,
                );
            }
            if self.nodes.contains_key(key) {
                return (
                    Handled::Now(self.error(412, 105, "Key already exists", key)),
                    false,
                );
            }
            self.index += 1;
            let node = Node {
                key: key.to_owned(),
                value,
                index: self.index,
            };
            self.nodes.insert(key.to_owned(), node.clone());
            self.events.push(node.clone());
            return (Handled::Now(self.event(201, "create", &node)), true);
        }
        if q("wait") == Some("true") {
            let since = match q("waitIndex").map(str::parse::<u64>) {
                None | Some(Ok(0)) => self.index + 1,
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    return (
                        Handled::Now(self.error(
                            400,
                            203,
                            "The given index in POST form is not a number",
                            "waitIndex",
                        )),
                        false,
                    )
                }
            };
            let watch = Watch {
                key: key.to_owned(),
                recursive: q("recursive") == Some("true"),
                since,
            };
            return match self.answer_watch(&watch) {
                Some(resp) => (Handled::Now(resp), false),
                None => (Handled::Wait(watch), false),
            };
        }
        let resp = if key == self.size.key {
            self.event(200, "get", &self.size.clone())
        } else if key == DIR {
            let mut children: Vec<String> = self.nodes.values().map(node_json).collect();
            children.push(format!(
                r#"{{"key":{},"dir":true,"modifiedIndex":{i},"createdIndex":{i}}}"#,
                json_str(&format!("{DIR}/_config")),
                i = self.size.index
            ));
            shuffle(&mut children);
            let body = format!(
                r#"{{"action":"get","node":{{"key":{},"dir":true,"nodes":[{}],"modifiedIndex":{i},"createdIndex":{i}}}}}"#,
                json_str(DIR),
                children.join(","),
                i = self.dir_index
            );
            self.ok(200, body)
        } else if let Some(n) = self.nodes.get(key).cloned() {
            self.event(200, "get", &n)
        } else {
            self.error(404, 100, "Key not found", key)
        };
        (Handled::Now(resp), false)
    }

    /// The answer to `watch` if the history holds a matching event.
    pub fn answer_watch(&self, watch: &Watch) -> Option<HttpResponse> {
        let prefix = format!("{}/", watch.key);
        self.events
            .iter()
            .find(|e| {
                e.index >= watch.since
                    && (e.key == watch.key || watch.recursive && e.key.starts_with(&prefix))
            })
            .map(|e| self.event(200, "create", &e.clone()))
    }

    fn ok(&self, status: u16, body: String) -> HttpResponse {
        HttpResponse {
            status,
            etcd_index: Some(self.index.to_string()),
            body: body.into_bytes(),
        }
    }

    fn plain(&self, status: u16, text: &str) -> HttpResponse {
        HttpResponse {
            status,
            etcd_index: None,
            body: text.as_bytes().to_vec(),
        }
    }

    fn event(&self, status: u16, action: &str, node: &Node) -> HttpResponse {
        self.ok(
            status,
            format!(r#"{{"action":"{action}","node":{}}}"#, node_json(node)),
        )
    }

    fn error(&self, status: u16, code: i64, message: &str, cause: &str) -> HttpResponse {
        self.ok(
            status,
            format!(
                r#"{{"errorCode":{code},"message":{},"cause":{},"index":{}}}"#,
                json_str(message),
                json_str(cause),
                self.index
            ),
        )
    }
}

fn node_json(n: &Node) -> String {
    format!(
        r#"{{"key":{},"value":{},"modifiedIndex":{i},"createdIndex":{i}}}"#,
        json_str(&n.key),
        json_str(&n.value),
        i = n.index
    )
}

fn base(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `application/x-www-form-urlencoded` decoding of one value; a `%` not followed by two
/// hex digits stays as it is.
fn form_unescape(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> HttpRequest {
        HttpRequest {
            put: false,
            path_and_query: format!("/v2/keys{path}"),
            form: None,
        }
    }

    fn create(id: &str, value: &str) -> HttpRequest {
        HttpRequest {
            put: true,
            path_and_query: format!("/v2/keys{DIR}/{id}?prevExist=false"),
            form: Some(format!(
                "value={}",
                value
                    .replace('=', "%3D")
                    .replace(':', "%3A")
                    .replace('/', "%2F")
            )),
        }
    }

    fn now(h: (Handled, bool)) -> HttpResponse {
        match h.0 {
            Handled::Now(r) => r,
            Handled::Wait(w) => panic!("parked {w:?}"),
        }
    }

    fn body(r: &HttpResponse) -> String {
        String::from_utf8_lossy(&r.body).into_owned()
    }

    #[test]
    fn create_only_and_listing() {
        let mut s = Store::new(3, 10);
        let r = now(s.handle(&get(&format!("{DIR}/_config/size")), |_| {}));
        assert_eq!((r.status, r.etcd_index.as_deref()), (200, Some("11")));
        assert!(body(&r).contains(r#""value":"3""#), "{}", body(&r));
        let r = now(s.handle(&create("a1", "m1=http://h:1"), |_| {}));
        assert_eq!(r.status, 201);
        assert!(
            body(&r).contains(r#""value":"m1=http://h:1","modifiedIndex":12"#),
            "{}",
            body(&r)
        );
        let r = now(s.handle(&create("a1", "m1=http://h:1"), |_| {}));
        assert_eq!(r.status, 412);
        assert!(body(&r).contains(r#""errorCode":105,"message":"Key already exists""#));
        let r = now(s.handle(&get(DIR), |v| v.reverse()));
        assert_eq!(r.etcd_index.as_deref(), Some("12"));
        assert!(body(&r).contains("_config") && body(&r).contains("a1"));
        assert_eq!(
            s.registrations(),
            vec![("a1".into(), "m1=http://h:1".into(), 12)]
        );
    }

    #[test]
    fn watches_from_history_and_parked() {
        let mut s = Store::new(3, 10);
        now(s.handle(&create("a1", "m1=http://h:1"), |_| {}));
        let w = |i: u64| get(&format!("{DIR}?recursive=true&wait=true&waitIndex={i}"));
        let r = now(s.handle(&w(12), |_| {}));
        assert!(body(&r).contains("a1"));
        let (h, _) = s.handle(&w(13), |_| {});
        let Handled::Wait(watch) = h else { panic!() };
        assert_eq!(s.answer_watch(&watch), None);
        now(s.handle(&create("b2", "m2=http://h:2"), |_| {}));
        let r = s.answer_watch(&watch).map(|r| body(&r)).unwrap_or_default();
        assert!(
            r.contains("b2") && r.contains(r#""modifiedIndex":13"#),
            "{r}"
        );
    }

    #[test]
    fn form_values_decode() {
        assert_eq!(
            form_unescape("m1%3Dhttp%3A%2F%2Fh%3A1+x"),
            "m1=http://h:1 x"
        );
        assert_eq!(form_unescape("a%"), "a%");
        assert_eq!(form_unescape("a%zz"), "a%zz");
    }
}
