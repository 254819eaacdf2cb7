//! etcd v2's JSON, byte for byte: the field order and `omitempty` rules of its Go
//! structs (`NodeExtern`, `Event`, `v2error.Error`), Go's string escaping (with HTML
//! escaping, as `encoding/json` does by default) and the newline `json.Encoder` adds.

use bytes::Bytes;

/// A node as etcd's `NodeExtern` shows it.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Node {
    /// The v2 path; empty for the root (which etcd shows without a key).
    pub key: String,
    /// Whether it is a directory.
    pub dir: bool,
    /// A file's value (None for directories and deleted nodes).
    pub value: Option<Bytes>,
    /// A listed directory's children.
    pub nodes: Vec<Node>,
    /// modifiedIndex (0: omitted).
    pub modified: i64,
    /// createdIndex (0: omitted).
    pub created: i64,
}

/// An event as etcd's `Event` shows it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Event {
    /// get, set, create or delete.
    pub action: &'static str,
    /// The node acted on (None with `noValueOnSuccess`).
    pub node: Option<Node>,
    /// The node before a set over it or its delete.
    pub prev: Option<Node>,
}

impl Event {
    /// The JSON body, newline included.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push_str("{\"action\":");
        push_str(&mut out, self.action.as_bytes());
        if let Some(n) = &self.node {
            out.push_str(",\"node\":");
            push_node(&mut out, n);
        }
        if let Some(n) = &self.prev {
            out.push_str(",\"prevNode\":");
            push_node(&mut out, n);
        }
        out.push_str("}\n");
        out
    }

    /// Whether etcd answers it with 201 Created: a create, or a set of a new node.
    pub fn is_created(&self) -> bool {
        self.action == "create" || (self.action == "set" && self.prev.is_none())
    }
}

/// An error body (`v2error.Error`), newline included.
pub fn error_json(code: u32, message: &str, cause: &str, index: i64) -> String {
    let mut out = String::with_capacity(96);
    out.push_str("{\"errorCode\":");
    out.push_str(&code.to_string());
    out.push_str(",\"message\":");
    push_str(&mut out, message.as_bytes());
    if !cause.is_empty() {
        out.push_str(",\"cause\":");
        push_str(&mut out, cause.as_bytes());
    }
    out.push_str(",\"index\":");
    out.push_str(&index.to_string());
    out.push_str("}\n");
    out
}

fn push_node(out: &mut String, n: &Node) {
    out.push('{');
    let mut sep = "";
    if !n.key.is_empty() {
        out.push_str("\"key\":");
        push_str(out, n.key.as_bytes());
        sep = ",";
    }
    if let Some(v) = &n.value {
        out.push_str(sep);
        out.push_str("\"value\":");
        push_str(out, v);
        sep = ",";
    }
    if n.dir {
        out.push_str(sep);
        out.push_str("\"dir\":true");
        sep = ",";
    }
    if !n.nodes.is_empty() {
        out.push_str(sep);
        out.push_str("\"nodes\":[");
        for (i, c) in n.nodes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_node(out, c);
        }
        out.push(']');
        sep = ",";
    }
    if n.modified != 0 {
        out.push_str(sep);
        out.push_str("\"modifiedIndex\":");
        out.push_str(&n.modified.to_string());
        sep = ",";
    }
    if n.created != 0 {
        out.push_str(sep);
        out.push_str("\"createdIndex\":");
        out.push_str(&n.created.to_string());
    }
    out.push('}');
}

/// A JSON string the way Go's `encoding/json` (Go 1.19, as etcd 3.4 is built) writes
/// it: `<`, `>` and `&` escaped for HTML, control characters as `\u00XX` except `\n`,
/// `\r`, `\t`, U+2028 and U+2029 escaped, and each byte of invalid UTF-8 as `\ufffd`.
pub(crate) fn push_str(out: &mut String, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                    let b = c as u32;
                    out.push_str("\\u00");
                    out.push(HEX[(b >> 4) as usize & 0xf] as char);
                    out.push(HEX[b as usize & 0xf] as char);
                }
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                c => out.push(c),
            }
        }
        for _ in chunk.invalid() {
            out.push_str("\\ufffd");
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &str, value: &str, modified: i64, created: i64) -> Node {
        Node {
            key: key.into(),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            modified,
            created,
            ..Node::default()
        }
    }

    #[test]
    fn events_match_etcd_bytes() {
        // Captured from etcd 3.4.23 with --enable-v2.
        let e = Event {
            action: "set",
            node: Some(file("/discovery/abc/m1", "n1=http://b", 6, 6)),
            prev: Some(file("/discovery/abc/m1", "n1=http://a", 5, 5)),
        };
        assert_eq!(
            e.to_json(),
            "{\"action\":\"set\",\"node\":{\"key\":\"/discovery/abc/m1\",\"value\":\"n1=http://b\",\"modifiedIndex\":6,\"createdIndex\":6},\"prevNode\":{\"key\":\"/discovery/abc/m1\",\"value\":\"n1=http://a\",\"modifiedIndex\":5,\"createdIndex\":5}}\n"
        );
        assert!(!e.is_created());
        let root = Event {
            action: "get",
            node: Some(Node {
                dir: true,
                ..Node::default()
            }),
            prev: None,
        };
        assert_eq!(
            root.to_json(),
            "{\"action\":\"get\",\"node\":{\"dir\":true}}\n"
        );
        let listing = Event {
            action: "get",
            node: Some(Node {
                key: "/n".into(),
                dir: true,
                nodes: vec![
                    Node {
                        key: "/n/a".into(),
                        dir: true,
                        modified: 19,
                        created: 19,
                        ..Node::default()
                    },
                    file("/n/z", "<", 21, 21),
                ],
                modified: 19,
                created: 19,
                ..Node::default()
            }),
            prev: None,
        };
        assert_eq!(
            listing.to_json(),
            "{\"action\":\"get\",\"node\":{\"key\":\"/n\",\"dir\":true,\"nodes\":[{\"key\":\"/n/a\",\"dir\":true,\"modifiedIndex\":19,\"createdIndex\":19},{\"key\":\"/n/z\",\"value\":\"\\u003c\",\"modifiedIndex\":21,\"createdIndex\":21}],\"modifiedIndex\":19,\"createdIndex\":19}}\n"
        );
        let empty = Event {
            action: "set",
            node: Some(file("/e1", "", 25, 25)),
            prev: None,
        };
        assert_eq!(
            empty.to_json(),
            "{\"action\":\"set\",\"node\":{\"key\":\"/e1\",\"value\":\"\",\"modifiedIndex\":25,\"createdIndex\":25}}\n"
        );
        assert!(empty.is_created());
    }

    #[test]
    fn errors_match_etcd_bytes() {
        assert_eq!(
            error_json(100, "Key not found", "/discovery/nope", 6),
            "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/discovery/nope\",\"index\":6}\n"
        );
        assert_eq!(
            error_json(209, "Invalid field", "invalid value for \"recursive\"", 0),
            "{\"errorCode\":209,\"message\":\"Invalid field\",\"cause\":\"invalid value for \\\"recursive\\\"\",\"index\":0}\n"
        );
        assert_eq!(
            error_json(300, "Raft Internal Error", "", 0),
            "{\"errorCode\":300,\"message\":\"Raft Internal Error\",\"index\":0}\n"
        );
    }

    #[test]
    fn strings_escape_like_go() {
        let mut out = String::new();
        // Values etcd 3.4.23 stored from `value=a%26b%3Cc%3E%22d%5Ce%0Af%09g` and
        // `value=caf%C3%A9%FF%E2%82x%00%08%0c%1f%7f`.
        push_str(&mut out, b"a&b<c>\"d\\e\nf\tg");
        assert_eq!(out, r#""a\u0026b\u003cc\u003e\"d\\e\nf\tg""#);
        out.clear();
        push_str(&mut out, b"caf\xc3\xa9\xff\xe2\x82x\x00\x08\x0c\x1f\x7f");
        assert_eq!(
            out,
            "\"café\\ufffd\\ufffd\\ufffdx\\u0000\\u0008\\u000c\\u001f\x7f\""
        );
        out.clear();
        push_str(&mut out, "\r\u{2028}\u{2029}é".as_bytes());
        assert_eq!(out, r#""\r\u2028\u2029é""#);
    }
}
