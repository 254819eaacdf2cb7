//! A request's form the way Go's `Request.ParseForm` builds it for etcd: the
//! urlencoded body's pairs first, then the query's, so a body value wins; Go's
//! `strconv.ParseBool` and `ParseUint` for flags and indexes, and Go's error texts.

/// Decoded name/value pairs, in Go's order.
#[derive(Debug, Default)]
pub struct Form {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Form {
    /// The form of a request with this query and (urlencoded) body. Like Go, every
    /// decodable pair is kept; the first decoding error is returned beside it.
    pub fn parse(query: Option<&str>, body: Option<&[u8]>) -> (Form, Option<String>) {
        let mut form = Form::default();
        let mut err = None;
        if let Some(b) = body {
            parse_into(b, &mut form.pairs, &mut err);
        }
        if let Some(q) = query {
            parse_into(q.as_bytes(), &mut form.pairs, &mut err);
        }
        (form, err)
    }

    /// The first value of `key` (Go's `FormValue`, without the empty default).
    pub fn first(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Whether `key` is present at all.
    pub fn has(&self, key: &str) -> bool {
        self.first(key).is_some()
    }

    /// etcd's `getBool`: false when absent, Go's `ParseBool` of the first value.
    pub fn bool(&self, key: &str) -> Result<bool, ()> {
        match self.first(key) {
            None => Ok(false),
            Some(v) => parse_bool(v),
        }
    }

    /// etcd's `getUint64`: 0 when absent, Go's `ParseUint(v, 10, 64)` of the first value.
    pub fn uint(&self, key: &str) -> Result<u64, ()> {
        match self.first(key) {
            None => Ok(0),
            Some(v) => parse_uint(v),
        }
    }
}

fn parse_bool(v: &[u8]) -> Result<bool, ()> {
    match v {
        b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => Ok(true),
        b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => Ok(false),
        _ => Err(()),
    }
}

fn parse_uint(v: &[u8]) -> Result<u64, ()> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(());
    }
    std::str::from_utf8(v)
        .map_err(|_| ())?
        .parse::<u64>()
        .map_err(|_| ())
}

/// Go's `url.ParseQuery`: `&`-separated pairs, `;` refused, `+` as space.
fn parse_into(s: &[u8], pairs: &mut Vec<(Vec<u8>, Vec<u8>)>, err: &mut Option<String>) {
    for part in s.split(|b| *b == b'&') {
        if part.contains(&b';') {
            err.get_or_insert_with(|| "invalid semicolon separator in query".into());
            continue;
        }
        if part.is_empty() {
            continue;
        }
        let (k, v) = match part.iter().position(|b| *b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &b""[..]),
        };
        let k = match unescape(k, true) {
            Ok(k) => k,
            Err(e) => {
                err.get_or_insert(e);
                continue;
            }
        };
        let v = match unescape(v, true) {
            Ok(v) => v,
            Err(e) => {
                err.get_or_insert(e);
                continue;
            }
        };
        pairs.push((k, v));
    }
}

/// Go's `url.unescape`: `%XX` escapes, and `+` as a space in query components. The
/// error is Go's `EscapeError` text.
pub fn unescape(s: &[u8], query: bool) -> Result<Vec<u8>, String> {
    let hex = |b: u8| -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let pair = (
                    s.get(i + 1).and_then(|b| hex(*b)),
                    s.get(i + 2).and_then(|b| hex(*b)),
                );
                let (Some(hi), Some(lo)) = pair else {
                    let bad = &s[i..s.len().min(i + 3)];
                    return Err(format!("invalid URL escape {}", go_quote(bad)));
                };
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Go's `strconv.Quote` for the short strings in error texts.
fn go_quote(s: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_ascii_graphic() || c == ' ' => out.push(c),
                c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_values_win_over_the_query() {
        let (f, err) = Form::parse(Some("value=fromq&prevExist=false"), Some(b"value=frombody"));
        assert!(err.is_none());
        assert_eq!(f.first("value"), Some(&b"frombody"[..]));
        assert_eq!(f.bool("prevExist"), Ok(false));
        assert!(f.has("prevExist") && !f.has("dir"));
    }

    #[test]
    fn decodes_escapes_and_plus() {
        let (f, _) = Form::parse(Some("value=a+b%26c%3D%C3%A9&x"), None);
        assert_eq!(f.first("value"), Some("a b&c=é".as_bytes()));
        assert_eq!(f.first("x"), Some(&b""[..]));
    }

    #[test]
    fn reports_go_errors_and_keeps_good_pairs() {
        let (f, err) = Form::parse(Some("a=%zz&b=1"), None);
        assert_eq!(err.as_deref(), Some("invalid URL escape \"%zz\""));
        assert_eq!(f.first("b"), Some(&b"1"[..]));
        let (_, err) = Form::parse(Some("a=1;b=2"), None);
        assert_eq!(err.as_deref(), Some("invalid semicolon separator in query"));
        let (_, err) = Form::parse(Some("a=%4"), None);
        assert_eq!(err.as_deref(), Some("invalid URL escape \"%4\""));
    }

    #[test]
    fn flags_and_indexes_parse_like_go() {
        let (f, _) = Form::parse(
            Some("r=True&s=0&w=maybe&i=42&j=-1&k=18446744073709551616&l="),
            None,
        );
        assert_eq!(f.bool("r"), Ok(true));
        assert_eq!(f.bool("s"), Ok(false));
        assert_eq!(f.bool("w"), Err(()));
        assert_eq!(f.bool("absent"), Ok(false));
        assert_eq!(f.uint("i"), Ok(42));
        assert_eq!(f.uint("j"), Err(()));
        assert_eq!(f.uint("k"), Err(()), "overflows u64");
        assert_eq!(f.uint("l"), Err(()));
        assert_eq!(f.uint("absent"), Ok(0));
    }
}
