//! The SYNC difference (SPEC section 5): a reply that carries only the bytes
//! that changed since the previous full message.
//!
//! Patch text: `[[size_delta], [start, b0, b1, ...], ...]`. To apply, resize
//! the previous message by `size_delta` (keeping the common prefix, new bytes
//! zero), then write each run at its start. Runs keep zero bytes (the
//! original dropped them and corrupted the result).

use std::fmt::Write as _;

/// Identical bytes between two runs that are cheaper to resend than to
/// start a new run for: a new run costs `],[index,` (up to ~12 characters),
/// a byte at most 4 (`255,`).
const MERGE_GAP: usize = 2;

/// Why a patch could not be applied (only a client applies patches, so this
/// is for the shipped client, tests and the fuzz target).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("patch is not a JSON array of arrays of integers")]
    BadShape,
    #[error("patch would make the message length negative")]
    NegativeLength,
    #[error("patch would make the message longer than the 4294967295 bytes the format can carry")]
    TooLong,
    #[error("run at {start} with {len} bytes does not fit in {size} bytes")]
    RunOutOfBounds { start: usize, len: usize, size: usize },
}

/// A computed difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub size_delta: i64,
    pub runs: Vec<(usize, Vec<u8>)>,
}

impl Patch {
    /// The runs that turn `old` (resized to `new.len()`) into `new`.
    pub fn compute(old: &[u8], new: &[u8]) -> Patch {
        let size_delta = new.len() as i64 - old.len() as i64;
        let before = |i: usize| old.get(i).copied().unwrap_or(0);
        let mut runs: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut i = 0;
        while i < new.len() {
            if new[i] == before(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < new.len() && new[i] != before(i) {
                i += 1;
            }
            match runs.last_mut() {
                Some((s, bytes)) if start - (*s + bytes.len()) <= MERGE_GAP => {
                    bytes.extend_from_slice(&new[*s + bytes.len()..i]);
                }
                _ => runs.push((start, new[start..i].to_vec())),
            }
        }
        Patch { size_delta, runs }
    }

    /// The patch as the JSON text sent in a SYNC payload.
    pub fn to_json(&self) -> String {
        let bytes: usize = self.runs.iter().map(|(_, b)| b.len()).sum();
        let mut out = String::with_capacity(16 + bytes * 4 + self.runs.len() * 12);
        let _ = write!(out, "[[{}]", self.size_delta);
        for (start, run) in &self.runs {
            let _ = write!(out, ",[{start}");
            for b in run {
                let _ = write!(out, ",{b}");
            }
            out.push(']');
        }
        out.push(']');
        out
    }

    /// Read a patch from its JSON text.
    pub fn from_json(text: &str) -> Result<Patch, SyncError> {
        let rows: Vec<Vec<i64>> = serde_json::from_str(text).map_err(|_| SyncError::BadShape)?;
        let mut rows = rows.into_iter();
        let size_delta = match rows.next().as_deref() {
            Some([d]) => *d,
            _ => return Err(SyncError::BadShape),
        };
        let runs = rows
            .map(|row| {
                let (start, bytes) = row.split_first().ok_or(SyncError::BadShape)?;
                let start = usize::try_from(*start).map_err(|_| SyncError::BadShape)?;
                let bytes = bytes.iter().map(|b| u8::try_from(*b).map_err(|_| SyncError::BadShape));
                Ok((start, bytes.collect::<Result<Vec<u8>, _>>()?))
            })
            .collect::<Result<_, SyncError>>()?;
        Ok(Patch { size_delta, runs })
    }

    /// Turn `old` into the new message. The size is checked before anything
    /// is allocated: a message is at most `u32::MAX` bytes (its length field),
    /// so a patch asking for more is refused rather than allocated (fuzzing
    /// found `[[8888888888]]` aborting on allocation, and `[[i64::MAX]]`
    /// overflowing the addition).
    pub fn apply(&self, old: &[u8]) -> Result<Vec<u8>, SyncError> {
        let size = (old.len() as i64).checked_add(self.size_delta).ok_or(SyncError::TooLong)?;
        let size = usize::try_from(size).map_err(|_| SyncError::NegativeLength)?;
        if size > u32::MAX as usize {
            return Err(SyncError::TooLong);
        }
        let mut out = old[..old.len().min(size)].to_vec();
        out.resize(size, 0);
        for (start, run) in &self.runs {
            let end = start.checked_add(run.len()).filter(|end| *end <= size);
            let end = end.ok_or(SyncError::RunOutOfBounds { start: *start, len: run.len(), size })?;
            out[*start..end].copy_from_slice(run);
        }
        Ok(out)
    }
}

/// The SYNC payload that turns `old` into `new`.
pub fn diff(old: &[u8], new: &[u8]) -> String {
    Patch::compute(old, new).to_json()
}

/// Apply a SYNC payload to the previous message.
pub fn apply(old: &[u8], patch_json: &str) -> Result<Vec<u8>, SyncError> {
    Patch::from_json(patch_json)?.apply(old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn identical_messages_need_no_runs() {
        assert_eq!(diff(b"abc", b"abc"), "[[0]]");
    }

    #[test]
    fn growth_shrink_and_zero_bytes() {
        assert_eq!(diff(b"ab", b"abcd"), "[[2],[2,99,100]]");
        assert_eq!(diff(b"abcd", b"ab"), "[[-2]]");
        // A zero byte inside a run is kept; the original dropped it.
        let old = [1, 1, 1, 1];
        let new = [2, 0, 2, 1];
        assert_eq!(diff(&old, &new), "[[0],[0,2,0,2]]");
        assert_eq!(apply(&old, &diff(&old, &new)).unwrap(), new);
        // Growth with zero bytes: the resized copy already has them.
        assert_eq!(apply(b"a", &diff(b"a", &[b'a', 0, 0, 7])).unwrap(), vec![b'a', 0, 0, 7]);
    }

    #[test]
    fn near_runs_merge_far_runs_do_not() {
        let p = Patch::compute(b"aaaaaaaaaa", b"baabaaaaab");
        assert_eq!(p.runs, vec![(0, b"baab".to_vec()), (9, b"b".to_vec())]);
    }

    #[test]
    fn bad_patches_are_errors_not_panics() {
        assert_eq!(apply(b"ab", "{}"), Err(SyncError::BadShape));
        assert_eq!(apply(b"ab", "[]"), Err(SyncError::BadShape));
        assert_eq!(apply(b"ab", "[[-3]]"), Err(SyncError::NegativeLength));
        assert_eq!(apply(b"ab", "[[0],[]]"), Err(SyncError::BadShape));
        assert_eq!(apply(b"ab", "[[0],[1,300]]"), Err(SyncError::BadShape));
        assert!(matches!(apply(b"ab", "[[0],[1,1,1]]"), Err(SyncError::RunOutOfBounds { .. })));
        assert!(matches!(apply(b"ab", &format!("[[0],[{},1]]", u64::MAX / 2)), Err(SyncError::RunOutOfBounds { .. })));
    }

    /// Regressions found by `cargo fuzz run sync_apply` (fuzz/README.md): a
    /// size the format cannot carry was allocated (abort), and a size delta
    /// near i64::MAX overflowed the addition (panic with overflow checks).
    #[test]
    fn sizes_past_the_format_are_refused_without_allocating() {
        assert_eq!(apply(b"ab", "[[8888888888]]"), Err(SyncError::TooLong));
        assert_eq!(apply(b"a", &format!("[[{}]]", i64::MAX)), Err(SyncError::TooLong));
        assert_eq!(apply(b"", &format!("[[{}]]", i64::MAX)), Err(SyncError::TooLong));
        assert_eq!(apply(b"", &format!("[[{}]]", u32::MAX as i64 + 1)), Err(SyncError::TooLong));
        assert_eq!(apply(b"ab", &format!("[[{}]]", i64::MIN)), Err(SyncError::NegativeLength));
    }

    proptest! {
        #[test]
        fn apply_inverts_diff(old in prop::collection::vec(any::<u8>(), 0..400),
                              new in prop::collection::vec(any::<u8>(), 0..400)) {
            prop_assert_eq!(apply(&old, &diff(&old, &new)).unwrap(), new);
        }

        #[test]
        fn apply_inverts_diff_for_small_edits(old in prop::collection::vec(0u8..3, 0..400),
                                              edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3), 0..20),
                                              grow in -50i64..50) {
            let mut new = old.clone();
            for (at, b) in edits {
                if !new.is_empty() { let i = at.index(new.len()); new[i] = b; }
            }
            let len = (new.len() as i64 + grow).max(0) as usize;
            new.resize(len, 0);
            prop_assert_eq!(apply(&old, &diff(&old, &new)).unwrap(), new);
        }

        #[test]
        fn apply_never_panics(old in prop::collection::vec(any::<u8>(), 0..50), text in ".{0,80}") {
            let _ = apply(&old, &text);
        }

        #[test]
        fn apply_never_panics_on_any_size_delta(old in prop::collection::vec(any::<u8>(), 0..50),
                                                delta in prop_oneof![any::<i64>(), (u32::MAX as i64 - 60)..(u32::MAX as i64 + 60)]) {
            // Sizes up to u32::MAX are valid (and allocated), so only ask for
            // the ones that must be refused.
            let size = (old.len() as i128) + delta as i128;
            prop_assume!(size < 0 || size > u32::MAX as i128);
            let patch = format!("[[{}]]", delta);
            prop_assert!(apply(&old, &patch).is_err());
        }
    }
}
