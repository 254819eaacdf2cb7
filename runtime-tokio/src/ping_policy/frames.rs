//! HTTP/2 framing, as much as ping policing needs: the client preface, frame headers
//! found incrementally in a byte stream cut anywhere, the 8 bytes of a PING, and the two
//! frames the policer writes itself (PING ACK and GOAWAY). Payloads other than a PING's
//! are skipped unread.

/// What a plaintext HTTP/2 client sends first (RFC 9113 §3.4).
pub const CLIENT_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const HEADER_LEN: usize = 9;

/// The frame types the policy looks at (RFC 9113 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// DATA.
    Data,
    /// HEADERS.
    Headers,
    /// RST_STREAM.
    RstStream,
    /// PING.
    Ping,
    /// Any other type.
    Other(u8),
}

impl Kind {
    fn from_byte(b: u8) -> Kind {
        match b {
            0x0 => Kind::Data,
            0x1 => Kind::Headers,
            0x3 => Kind::RstStream,
            0x6 => Kind::Ping,
            b => Kind::Other(b),
        }
    }
}

/// END_STREAM on DATA and HEADERS.
pub const END_STREAM: u8 = 0x1;
/// ACK on PING (and SETTINGS).
pub const ACK: u8 = 0x1;
/// GOAWAY's error code ENHANCE_YOUR_CALM (RFC 9113 §7).
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A whole frame as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame type.
    pub kind: Kind,
    /// The flags byte.
    pub flags: u8,
    /// The stream identifier (reserved bit cleared).
    pub stream: u32,
    /// A PING's opaque data (zeros for other frames and for malformed PINGs, whose
    /// length the peer's HTTP/2 library refuses anyway).
    pub ping_data: [u8; 8],
}

impl Frame {
    /// Whether this frame carries END_STREAM.
    pub fn ends_stream(&self) -> bool {
        matches!(self.kind, Kind::Data | Kind::Headers) && self.flags & END_STREAM != 0
    }
}

/// Finds frame boundaries in one direction of a connection, fed its bytes in the order
/// they pass, in pieces of any size.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameScanner {
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// Payload bytes of the current frame not yet seen.
    payload_left: usize,
    ping_data: [u8; 8],
    ping_len: usize,
}

impl FrameScanner {
    /// Whether the bytes fed so far end exactly at the end of a frame.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0
    }

    /// Feeds `bytes`, calling `on_frame` for each frame completed by them.
    pub fn feed(&mut self, bytes: &[u8], mut on_frame: impl FnMut(Frame)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let used = self.step(rest, &mut on_frame);
            rest = &rest[used..];
        }
    }

    /// How many leading bytes of `bytes` can pass before the stream they continue
    /// reaches a frame boundary: 0 when already at one, all of them when no boundary
    /// is reached within them.
    pub fn len_to_boundary(&self, bytes: &[u8]) -> usize {
        if self.at_boundary() {
            return 0;
        }
        let mut probe = *self;
        let mut used = 0;
        while used < bytes.len() {
            used += probe.step(&bytes[used..], &mut |_| {});
            if probe.at_boundary() {
                break;
            }
        }
        used
    }

    /// Consumes the start of `bytes` up to the end of the current header or payload;
    /// returns how many bytes it took (at least one).
    fn step(&mut self, bytes: &[u8], on_frame: &mut impl FnMut(Frame)) -> usize {
        if self.header_len < HEADER_LEN {
            let take = (HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            if self.header_len == HEADER_LEN {
                let h = &self.header;
                self.payload_left =
                    usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.ping_len = 0;
                if self.payload_left == 0 {
                    self.finish(on_frame);
                }
            }
            return take;
        }
        let take = self.payload_left.min(bytes.len());
        if Kind::from_byte(self.header[3]) == Kind::Ping {
            let copy = take.min(8 - self.ping_len.min(8));
            self.ping_data[self.ping_len..self.ping_len + copy].copy_from_slice(&bytes[..copy]);
            self.ping_len += copy;
        }
        self.payload_left -= take;
        if self.payload_left == 0 {
            self.finish(on_frame);
        }
        take
    }

    fn finish(&mut self, on_frame: &mut impl FnMut(Frame)) {
        let h = &self.header;
        let kind = Kind::from_byte(h[3]);
        let ping_data = if kind == Kind::Ping && self.ping_len == 8 {
            self.ping_data
        } else {
            [0; 8]
        };
        on_frame(Frame {
            kind,
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            ping_data,
        });
        self.header_len = 0;
    }
}

/// Tells an HTTP/2 connection from another protocol by the client's first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preface {
    /// This many bytes of the preface seen so far, all matching.
    Matching(usize),
    /// The whole preface came: frames follow.
    Http2,
    /// Not HTTP/2 (HTTP/1 on the shared port): nothing to police.
    Other,
}

impl Preface {
    /// Reads `bytes` from the client; returns how many of them belonged to the preface
    /// (the rest are frames, if the connection is HTTP/2).
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let Preface::Matching(seen) = *self else {
            return 0;
        };
        let take = (CLIENT_PREFACE.len() - seen).min(bytes.len());
        if bytes[..take] != CLIENT_PREFACE[seen..seen + take] {
            *self = Preface::Other;
            return 0;
        }
        *self = if seen + take == CLIENT_PREFACE.len() {
            Preface::Http2
        } else {
            Preface::Matching(seen + take)
        };
        take
    }
}

fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a control frame's payload is small");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A PING ACK echoing `data`.
pub fn ping_ack(data: [u8; 8]) -> Vec<u8> {
    frame_bytes(0x6, ACK, 0, &data)
}

/// A GOAWAY naming `last_stream` as the last stream processed.
pub fn goaway(last_stream: u32, code: u32, debug: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + debug.len());
    payload.extend_from_slice(&last_stream.to_be_bytes());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(debug);
    frame_bytes(0x7, 0, 0, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut s = FrameScanner::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |f| out.push(f));
        }
        assert!(s.at_boundary());
        out
    }

    #[test]
    fn frames_are_found_whatever_the_cuts() {
        let mut bytes = frame_bytes(0x1, 0x5, 3, b"hpack");
        bytes.extend(ping_ack(*b"12345678"));
        bytes.extend(frame_bytes(0x0, 0x0, 0x8000_0003, &[7; 300]));
        bytes.extend(frame_bytes(0x4, 0x0, 0, b""));
        bytes.extend(goaway(5, ENHANCE_YOUR_CALM, b"too_many_pings"));
        let whole = frames_of(&[&bytes]);
        assert_eq!(
            whole
                .iter()
                .map(|f| (f.kind, f.flags, f.stream))
                .collect::<Vec<_>>(),
            vec![
                (Kind::Headers, 0x5, 3),
                (Kind::Ping, ACK, 0),
                (Kind::Data, 0, 3),
                (Kind::Other(0x4), 0, 0),
                (Kind::Other(0x7), 0, 0),
            ]
        );
        assert_eq!(whole[1].ping_data, *b"12345678");
        assert!(whole[0].ends_stream() && !whole[2].ends_stream());
        for cut in 1..bytes.len() {
            assert_eq!(
                frames_of(&[&bytes[..cut], &bytes[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(frames_of(&bytewise), whole);
    }

    #[test]
    fn the_distance_to_a_boundary_counts_the_rest_of_the_frame_only() {
        let mut bytes = frame_bytes(0x0, 0, 1, &[1; 10]);
        bytes.extend(frame_bytes(0x0, 0, 1, &[2; 10]));
        let mut s = FrameScanner::default();
        assert_eq!(s.len_to_boundary(&bytes), 0);
        for fed in 1..19 {
            let mut s2 = FrameScanner::default();
            s2.feed(&bytes[..fed], |_| {});
            assert_eq!(s2.len_to_boundary(&bytes[fed..]), 19 - fed, "after {fed}");
            // A piece that ends before the boundary passes whole.
            assert_eq!(s2.len_to_boundary(&bytes[fed..18]), 18 - fed);
        }
        s.feed(&bytes[..19], |_| {});
        assert!(s.at_boundary());
    }

    #[test]
    fn the_preface_is_told_from_http1() {
        let mut p = Preface::Matching(0);
        assert_eq!(p.feed(b"PRI * HTTP/2"), 12);
        assert_eq!(p, Preface::Matching(12));
        let mut rest = CLIENT_PREFACE[12..].to_vec();
        rest.extend_from_slice(b"\0\0\0\x04");
        assert_eq!(p.feed(&rest), 12);
        assert_eq!(p, Preface::Http2);
        let mut p = Preface::Matching(0);
        assert_eq!(p.feed(b"GET /health HTTP/1.1\r\n"), 0);
        assert_eq!(p, Preface::Other);
        let mut p = Preface::Matching(0);
        assert_eq!(p.feed(b"PRI * HTTP/1.1"), 0);
        assert_eq!(p, Preface::Other);
    }

    #[test]
    fn a_goaway_is_laid_out_as_rfc_9113_says() {
        assert_eq!(
            goaway(1, ENHANCE_YOUR_CALM, b"too_many_pings"),
            b"\0\0\x16\x07\0\0\0\0\0\0\0\0\x01\0\0\0\x0btoo_many_pings".to_vec()
        );
        assert_eq!(
            ping_ack([9; 8]),
            b"\0\0\x08\x06\x01\0\0\0\0\x09\x09\x09\x09\x09\x09\x09\x09".to_vec()
        );
    }
}
