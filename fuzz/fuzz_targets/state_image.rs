//! Fuzzes the state-snapshot readers: the state machine's image (what a restart and a
//! snapshot install from the leader decode), the snapshot file around it, and the member
//! table. The first byte picks the reader. The image's CRC is computed over the
//! fuzzer's bytes so the parser behind the checksum is reached. Nothing may panic; what
//! decodes must re-encode to something that decodes the same.

#![no_main]

use keel_core::node::{decode_members, write_members, StateMachine};
use keel_core::wal::{decode_snapshot_file, encode_snapshot_file};
use libfuzzer_sys::fuzz_target;

const QUOTA: u64 = 1 << 30;
const MIN_TTL: i64 = 2;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            // MAGIC + fuzzer bytes + a valid CRC.
            let empty = StateMachine::new(QUOTA, MIN_TTL, []).snapshot();
            let mut image = empty[..8].to_vec();
            image.extend_from_slice(rest);
            image.extend_from_slice(&crc32fast::hash(&image).to_le_bytes());
            let Ok(sm) = StateMachine::restore(&image, QUOTA, MIN_TTL) else {
                return;
            };
            let again = sm.snapshot();
            let sm2 = StateMachine::restore(&again, QUOTA, MIN_TTL).expect("an image decodes");
            assert_eq!(sm2.snapshot(), again);
        }
        1 => {
            let Ok(s) = decode_snapshot_file(rest) else {
                return;
            };
            let again = encode_snapshot_file(&s);
            assert_eq!(
                decode_snapshot_file(&again).expect("a snapshot file decodes"),
                s
            );
        }
        _ => {
            let Ok(members) = decode_members(rest) else {
                return;
            };
            let mut again = Vec::new();
            write_members(&mut again, members.iter());
            assert_eq!(
                decode_members(&again).expect("a member table decodes"),
                members
            );
        }
    }
});
