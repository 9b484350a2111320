//! The SYNC diff (`protocol::sync`). Input layout: two bytes (little-endian
//! u16) give a split point `n` (clamped to what follows); `a` is the next `n`
//! bytes and `b` the rest.
//!
//! 1. `apply(a, b as patch text)` must never panic, whatever the text.
//! 2. Structured: `apply(a, diff(a, b)) == b`, and the patch text `diff`
//!    produces reads back (`Patch::from_json`) to the same patch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssocket::protocol::sync::{apply, diff, Patch};

/// Patches asking for a result between this and 4 GiB are only parsed, not
/// applied: the format allows messages up to 4 GiB, so such a patch is valid,
/// and allocating that much is the harness's problem, not a finding (even
/// 1 MiB costs ~0.6 ms a run under ASan, against ~40 us for a small input;
/// inputs are at most a few KiB, so larger results reach no new code). Sizes
/// past 4 GiB (or past i64) are still applied: they must be refused without
/// allocating and without overflowing.
const MAX_APPLIED_SIZE: i64 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    let (a, b) = rest.split_at(n.min(rest.len()));

    // 1. Arbitrary patch text against arbitrary old bytes.
    let text = String::from_utf8_lossy(b);
    let parsed = Patch::from_json(&text);
    let size = parsed.as_ref().ok().and_then(|p| p.size_delta.checked_add(a.len() as i64));
    let huge_but_valid = size.is_some_and(|size| size > MAX_APPLIED_SIZE && size <= u32::MAX as i64);
    if !huge_but_valid {
        if let Ok(out) = apply(a, &text) {
            let size_delta = parsed.expect("apply accepted a patch from_json refuses").size_delta;
            assert_eq!(out.len() as i64, a.len() as i64 + size_delta);
        }
    }

    // 2. Round trip on the same split.
    let patch = diff(a, b);
    assert_eq!(apply(a, &patch).as_deref(), Ok(b), "apply(a, diff(a, b)) != b; patch {patch}");
    assert_eq!(Patch::from_json(&patch).unwrap(), Patch::compute(a, b), "patch text does not read back");
});
