//! Shared by the decoder tests that measure allocation: a lock that serialises them
//! (the counting allocator is process-wide), a proptest runner that holds it for a whole
//! property, and byte-level mutations of valid encodings.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// Allocation is counted process-wide, so every test of a file holds this lock for its
/// whole run, case generation included: nothing else allocates during a measurement.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a property over `cases` values of `strategy` under [`serial`] (what `proptest!`
/// does, minus the per-case granularity that would let other tests generate values while
/// one measures). `source_file` is the calling test's `file!()`, for proptest's
/// regression file.
pub fn check<S: Strategy>(
    source_file: &'static str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let _g = serial();
    let config = ProptestConfig {
        source_file: Some(source_file),
        ..ProptestConfig::with_cases(cases)
    };
    if let Err(e) = TestRunner::new(config).run(&strategy, test) {
        panic!("{e}");
    }
}

/// One change to an encoding; positions wrap around the buffer's length.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Overwrite one byte.
    Set(usize, u8),
    /// Overwrite 4 bytes with a little-endian u32 (a count or length).
    Len(usize, u32),
    /// Overwrite 8 bytes with a little-endian u64.
    Word(usize, u64),
    /// Insert one byte.
    Insert(usize, u8),
    /// Remove one byte.
    Remove(usize),
    /// Cut the buffer.
    Truncate(usize),
}

/// Applies `muts` in order.
pub fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let at = |i: usize| i % b.len().max(1);
        match *m {
            Mutation::Set(i, v) => {
                let i = at(i);
                if let Some(x) = b.get_mut(i) {
                    *x = v;
                }
            }
            Mutation::Len(i, v) => {
                let i = at(i);
                if i + 4 <= b.len() {
                    b[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            Mutation::Word(i, v) => {
                let i = at(i);
                if i + 8 <= b.len() {
                    b[i..i + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            Mutation::Insert(i, v) => {
                let i = at(i).min(b.len());
                b.insert(i, v);
            }
            Mutation::Remove(i) => {
                let i = at(i);
                if i < b.len() {
                    b.remove(i);
                }
            }
            Mutation::Truncate(i) => {
                let i = at(i);
                b.truncate(i);
            }
        }
    }
    b
}
