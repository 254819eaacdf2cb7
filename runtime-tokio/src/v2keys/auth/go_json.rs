//! Request bodies read the way etcd's `json.NewDecoder(r.Body).Decode(&v)` reads them
//! into its `User` and `Role` structs: the first JSON value only (whatever follows is
//! never read), object keys matched to fields without regard to case (Go's folding),
//! unknown keys skipped, `null` leaving a field as it was (a list or pointer becomes
//! nil), duplicate keys applied in order, and any value of the wrong type failing the
//! whole decode. Invalid UTF-8 inside strings becomes U+FFFD, as in Go.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::model::{List, Permissions, Role, RwPermission, User};

/// A JSON value with its object members in document order, duplicates kept.
#[derive(Debug)]
enum Value {
    Null,
    /// A bool or a number: only its wrongness as a field value matters here.
    Scalar,
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
                Ok(Value::Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Value, E> {
                Ok(Value::Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Value, E> {
                Ok(Value::Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
                Ok(Value::Scalar)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
                Ok(Value::String(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
                Ok(Value::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = a.next_element()? {
                    items.push(v);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Value>()? {
                    members.push((k, v));
                }
                Ok(Value::Object(members))
            }
        }
        d.deserialize_any(V)
    }
}

/// Any reason Go's decoder returns an error (syntax, end of input, a wrong type).
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid;

/// The first JSON value of `body`.
fn first_value(body: &[u8]) -> Result<Value, Invalid> {
    let text = String::from_utf8_lossy(body);
    let mut values = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    match values.next() {
        Some(Ok(v)) => Ok(v),
        _ => Err(Invalid),
    }
}

/// Whether object key `key` names the Go field whose JSON name is `field` (lowercase
/// ASCII here): equal under Unicode simple case folding, where the Kelvin sign folds to
/// `k` and the long s to `s`, as `encoding/json` matches.
fn names(key: &str, field: &str) -> bool {
    let mut folded = key.chars().map(|c| match c {
        '\u{212a}' => 'k',
        '\u{17f}' => 's',
        c => c.to_ascii_lowercase(),
    });
    field.chars().all(|f| folded.next() == Some(f)) && folded.next().is_none()
}

/// A `string` field: null leaves it.
fn string_into(v: Value, out: &mut String) -> Result<(), Invalid> {
    match v {
        Value::String(s) => *out = s,
        Value::Null => {}
        _ => return Err(Invalid),
    }
    Ok(())
}

/// A `[]string` field: null makes it nil; a null element is "".
fn list_into(v: Value, out: &mut List) -> Result<(), Invalid> {
    match v {
        Value::Null => *out = None,
        Value::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                let mut s = String::new();
                string_into(item, &mut s)?;
                list.push(s);
            }
            *out = Some(list);
        }
        _ => return Err(Invalid),
    }
    Ok(())
}

/// The members of an object, or nothing for null (which leaves a struct as it is).
fn members(v: Value) -> Result<Vec<(String, Value)>, Invalid> {
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Vec::new()),
        _ => Err(Invalid),
    }
}

fn rw_into(v: Value, out: &mut RwPermission) -> Result<(), Invalid> {
    for (k, v) in members(v)? {
        if names(&k, "read") {
            list_into(v, &mut out.read)?;
        } else if names(&k, "write") {
            list_into(v, &mut out.write)?;
        }
    }
    Ok(())
}

fn permissions_into(v: Value, out: &mut Permissions) -> Result<(), Invalid> {
    for (k, v) in members(v)? {
        if names(&k, "kv") {
            rw_into(v, &mut out.kv)?;
        }
    }
    Ok(())
}

/// A `*Permissions` field: null makes it nil, an object fills it (made if nil).
fn pointer_into(v: Value, out: &mut Option<Permissions>) -> Result<(), Invalid> {
    match v {
        Value::Null => *out = None,
        Value::Object(_) => permissions_into(v, out.get_or_insert_with(Permissions::default))?,
        _ => return Err(Invalid),
    }
    Ok(())
}

/// A PUT body as etcd decodes it into a `User`.
pub fn user(body: &[u8]) -> Result<User, Invalid> {
    let mut u = User::default();
    for (k, v) in members(first_value(body)?)? {
        if names(&k, "user") {
            string_into(v, &mut u.user)?;
        } else if names(&k, "password") {
            string_into(v, &mut u.password)?;
        } else if names(&k, "roles") {
            list_into(v, &mut u.roles)?;
        } else if names(&k, "grant") {
            list_into(v, &mut u.grant)?;
        } else if names(&k, "revoke") {
            list_into(v, &mut u.revoke)?;
        }
    }
    Ok(u)
}

/// A PUT body (or a stored value) as etcd decodes it into a `Role`.
pub fn role(body: &[u8]) -> Result<Role, Invalid> {
    let mut r = Role::default();
    for (k, v) in members(first_value(body)?)? {
        if names(&k, "role") {
            string_into(v, &mut r.role)?;
        } else if names(&k, "permissions") {
            permissions_into(v, &mut r.permissions)?;
        } else if names(&k, "grant") {
            pointer_into(v, &mut r.grant)?;
        } else if names(&k, "revoke") {
            pointer_into(v, &mut r.revoke)?;
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(items: &[&str]) -> List {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn users_decode_as_go_does() {
        // Each accepted or refused by etcd 3.4.23 the same way.
        let u = user(br#"{"User":"b","passWord":"p","roles":["z","y","z"]}{garbage"#)
            .expect("first value only");
        assert_eq!(
            (u.user.as_str(), u.password.as_str(), u.roles),
            ("b", "p", some(&["z", "y", "z"]))
        );
        assert_eq!(user(b"null"), Ok(User::default()));
        assert_eq!(user(b""), Err(Invalid));
        assert_eq!(user(b"  "), Err(Invalid));
        assert_eq!(user(b"[]"), Err(Invalid));
        assert_eq!(user(br#"{"user":1}"#), Err(Invalid));
        assert_eq!(user(br#"{"roles":"x"}"#), Err(Invalid));
        assert_eq!(user(br#"{"roles":[1]}"#), Err(Invalid));
        assert_eq!(user(br#"{"user":"a""#), Err(Invalid));
        let nulls =
            user(br#"{"user":"c","password":"p","roles":[null],"grant":null}"#).expect("nulls");
        assert_eq!((nulls.roles, nulls.grant), (some(&[""]), None));
        let dup =
            user(br#"{"user":"a","USER":"b","extra":{"x":[1,2]},"u\u017fer":"c"}"#).expect("dup");
        assert_eq!(dup.user, "c", "later keys win; the long s folds to s");
        let bad_utf8 = user(b"{\"user\":\"a\xffb\"}").expect("lossy");
        assert_eq!(bad_utf8.user, "a\u{fffd}b");
    }

    #[test]
    fn roles_decode_as_go_does() {
        let r = role(br#"{"role":"r","grant":{},"permissions":{"kv":{"read":["/a","/a"]}}}"#)
            .expect("role");
        assert_eq!(r.grant, Some(Permissions::default()));
        assert_eq!(r.permissions.kv.read, some(&["/a", "/a"]));
        assert_eq!(r.permissions.kv.write, None);
        let merged =
            role(br#"{"role":"r","grant":{"kv":{"read":["/x"]}},"grant":{"kv":{"write":["/y"]}}}"#)
                .expect("role");
        let g = merged.grant.expect("grant");
        assert_eq!(
            (g.kv.read, g.kv.write),
            (some(&["/x"]), some(&["/y"])),
            "a repeated struct is decoded into, not replaced"
        );
        assert_eq!(role(br#"{"role":"r","grant":[]}"#), Err(Invalid));
        assert_eq!(
            role(br#"{"role":"r","permissions":{"kv":7}}"#),
            Err(Invalid)
        );
        let nil = role(br#"{"role":"r","grant":{"kv":{}},"grant":null}"#).expect("role");
        assert_eq!(nil.grant, None);
    }
}
