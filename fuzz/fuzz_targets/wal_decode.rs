//! Fuzzes WAL recovery: arbitrary bytes split into up to three segments (with or without
//! a valid header) must never panic, read out of bounds or accept data that does not
//! re-encode to exactly the frames it came from.

#![no_main]

use keel_core::wal::{decode_frame, recover, Frame, SegmentHeader, SegmentName, SEGMENT_HEADER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: how to cut the input into segments and whether to prepend headers.
    let Some((&ctl, rest)) = data.split_first() else { return };
    let parts = 1 + usize::from(ctl & 3) % 3;
    let with_headers = ctl & 4 != 0;
    let chunk = rest.len() / parts + 1;
    let mut files = Vec::new();
    for (i, piece) in rest.chunks(chunk).enumerate() {
        let name = SegmentName { seq: i as u64, first_index: 1 };
        let mut bytes = Vec::new();
        if with_headers {
            let h = SegmentHeader { cluster_id: 1, member_id: 1, seq: i as u64, first_index: 1, prev_crc: 0 };
            bytes.extend_from_slice(&h.encode());
        }
        bytes.extend_from_slice(piece);
        files.push((name, bytes));
    }
    let views: Vec<(SegmentName, &[u8])> = files.iter().map(|(n, b)| (*n, &b[..])).collect();
    let _ = recover(&views, None);
    // Every frame the decoder accepts re-encodes to the same bytes.
    if let Some((_, first)) = files.first() {
        let mut off = if with_headers { SEGMENT_HEADER } else { 0 };
        let mut prev = 0;
        while let Frame::Record { record, crc, len } = decode_frame(&first[off..], prev) {
            let mut again = Vec::new();
            assert_eq!(record.encode(prev, &mut again), crc);
            assert_eq!(&again[..], &first[off..off + len]);
            off += len;
            prev = crc;
        }
    }
});
