//! The auth store's binary image, inside node snapshot images.
//!
//! ```text
//! version u8 (1), enabled u8 (0|1), revision u64,
//! n u32, n × user  = name str, password_hash str, no_password u8 (0|1), n u32, n × role str
//! n u32, n × role  = name str, n u32, n × perm
//! perm             = kind u8 (0 read, 1 write, 2 readwrite), key bytes, range_end bytes
//! ```
//!
//! Integers are little-endian; strings and byte strings are a u32 length then the bytes.
//! Users, roles, a user's roles and a role's permissions appear in strictly increasing
//! order (the store's own order), so an accepted image has one meaning.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{AuthStore, PermKind, Permission, Role, User};

const VERSION: u8 = 1;

/// An auth store image that does not parse.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AuthDecodeError {
    /// The data ends inside a field.
    #[error("auth image: truncated")]
    Truncated,
    /// Written by a format version this build does not read.
    #[error("auth image: unsupported version {0}")]
    Version(u8),
    /// A field holds a value the format does not define (bad flag, kind, UTF-8 or order).
    #[error("auth image: malformed {0}")]
    Malformed(&'static str),
}

fn put_u32(w: &mut Vec<u8>, n: usize) {
    w.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_u32(w, b.len());
    w.extend_from_slice(b);
}

impl AuthStore {
    /// Appends the store's image to `w`.
    pub fn encode(&self, w: &mut Vec<u8>) {
        w.push(VERSION);
        w.push(u8::from(self.enabled));
        w.extend_from_slice(&self.revision.to_le_bytes());
        put_u32(w, self.users.len());
        for u in self.users.values() {
            put_bytes(w, u.name.as_bytes());
            put_bytes(w, u.password_hash.as_bytes());
            w.push(u8::from(u.no_password));
            put_u32(w, u.roles.len());
            for r in &u.roles {
                put_bytes(w, r.as_bytes());
            }
        }
        put_u32(w, self.roles.len());
        for r in self.roles.values() {
            put_bytes(w, r.name.as_bytes());
            put_u32(w, r.perms.len());
            for p in &r.perms {
                w.push(p.kind as u8);
                put_bytes(w, &p.key);
                put_bytes(w, &p.range_end);
            }
        }
    }

    /// Parses an image written by [`AuthStore::encode`] at the start of `b`, returning the
    /// store and the bytes consumed. Never panics; allocates in proportion to `b.len()`.
    pub fn decode(b: &[u8]) -> Result<(AuthStore, usize), AuthDecodeError> {
        let mut r = Reader { b, pos: 0 };
        let version = r.u8()?;
        if version != VERSION {
            return Err(AuthDecodeError::Version(version));
        }
        let enabled = r.bool("enabled flag")?;
        let revision = r.u64()?;
        let mut users = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..r.count(4 + 4 + 1 + 4)? {
            let name = r.string()?;
            let password_hash = r.string()?;
            let no_password = r.bool("no_password flag")?;
            let mut roles: Vec<String> = Vec::new();
            for _ in 0..r.count(4)? {
                let role = r.string()?;
                if roles.last().is_some_and(|l| *l >= role) {
                    return Err(AuthDecodeError::Malformed("user role order"));
                }
                roles.push(role);
            }
            if last.as_ref().is_some_and(|l| *l >= name) {
                return Err(AuthDecodeError::Malformed("user order"));
            }
            last = Some(name.clone());
            users.insert(
                name.clone(),
                User {
                    name,
                    password_hash,
                    roles,
                    no_password,
                },
            );
        }
        let mut roles = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..r.count(4 + 4)? {
            let name = r.string()?;
            let mut perms: Vec<Permission> = Vec::new();
            for _ in 0..r.count(1 + 4 + 4)? {
                let kind = match r.u8()? {
                    0 => PermKind::Read,
                    1 => PermKind::Write,
                    2 => PermKind::ReadWrite,
                    _ => return Err(AuthDecodeError::Malformed("permission kind")),
                };
                let key = Bytes::copy_from_slice(r.bytes()?);
                let range_end = Bytes::copy_from_slice(r.bytes()?);
                if perms
                    .last()
                    .is_some_and(|l| (&l.key, &l.range_end) >= (&key, &range_end))
                {
                    return Err(AuthDecodeError::Malformed("permission order"));
                }
                perms.push(Permission {
                    kind,
                    key,
                    range_end,
                });
            }
            if last.as_ref().is_some_and(|l| *l >= name) {
                return Err(AuthDecodeError::Malformed("role order"));
            }
            last = Some(name.clone());
            roles.insert(name.clone(), Role { name, perms });
        }
        let store = AuthStore {
            enabled,
            revision,
            users,
            roles,
        };
        Ok((store, r.pos))
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

type Res<T> = Result<T, AuthDecodeError>;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(AuthDecodeError::Truncated)?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or(AuthDecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Res<u32> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self) -> Res<u64> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn bool(&mut self, what: &'static str) -> Res<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(AuthDecodeError::Malformed(what)),
        }
    }

    /// A count of items each at least `min` bytes long, refused if the rest cannot hold
    /// them (so a hostile count never drives a long loop or a large allocation).
    fn count(&mut self, min: usize) -> Res<u32> {
        let n = self.u32()?;
        let left = self.b.len() - self.pos;
        if usize::try_from(n).map_or(true, |n| n > left / min) {
            return Err(AuthDecodeError::Truncated);
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Res<&'a [u8]> {
        let n = usize::try_from(self.u32()?).map_err(|_| AuthDecodeError::Truncated)?;
        self.take(n)
    }

    fn string(&mut self) -> Res<String> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| AuthDecodeError::Malformed("UTF-8"))
    }
}
