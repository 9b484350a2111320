//! The threads plugs run on: the blocking pool of a runtime of our own, so
//! its threads get a stack sized for the script engine's recursion limits
//! whatever runtime the server itself runs on (a stack overflow would abort
//! the whole process, so it must be impossible, not unlikely), and the
//! stack size every other thread that runs plug code must have.

use tokio::runtime::{Builder, Runtime};

use crate::config::Limits;

/// Stack for plug calls nested as deep as `limits.maxCallDepth` allows
/// (256 at most) in an unoptimized build.
const CALL_STACK_BYTES: usize = 16 * 1024 * 1024;

/// Stack per level of nested arrays and maps. Rhai walks nested values
/// recursively (to copy, compare, print, size-check or drop them) and has
/// no limit of its own on how deep they go. Measured: printing or
/// comparing a nested map takes 1.6 KiB per level in a release build and
/// 8.3 KiB in a debug one (others take 0.1–0.4 KiB); these leave 2.5× and
/// 2× of margin.
const STACK_PER_LEVEL: usize = if cfg!(debug_assertions) { 16 * 1024 } else { 4 * 1024 };

/// The most stack a thread gets, for when nesting has no bound.
const MAX_STACK_BYTES: usize = 1024 * 1024 * 1024;

/// How deeply a plug's values can nest, if the limits bound it: a chain of
/// d nested arrays and maps holds at least d items, and Rhai counts the
/// items of nested arrays and maps towards `limits.maxArraySize` and
/// `limits.maxMapSize` (0 = no limit, so no bound).
pub fn nesting_bound(limits: &Limits) -> Option<usize> {
    if limits.max_array_size == 0 || limits.max_map_size == 0 {
        return None;
    }
    Some(limits.max_array_size.saturating_add(limits.max_map_size))
}

/// The stack of every thread that runs plug code: the plug threads, the
/// async workers (plugs run inline there), the reload thread and the one
/// that starts the server (INIT.rhai, module code). Virtual memory: a page
/// costs RSS only once a plug has used it. The `ssocket` binary builds its
/// runtime with it; a program embedding the library must do the same for
/// the runtime it serves on.
pub fn stack_bytes(limits: &Limits) -> usize {
    match nesting_bound(limits) {
        Some(depth) => depth.saturating_mul(STACK_PER_LEVEL).saturating_add(CALL_STACK_BYTES).min(MAX_STACK_BYTES),
        None => MAX_STACK_BYTES,
    }
}

/// Most plug threads at once (threads sleeping in `sleep` count).
pub const MAX_THREADS: usize = 512;

pub struct PlugPool {
    /// `Option` only so `Drop` can take it: a runtime dropped inside an async
    /// context must be shut down in the background.
    runtime: Option<Runtime>,
}

impl PlugPool {
    pub fn new(limits: &Limits) -> std::io::Result<PlugPool> {
        let runtime = Builder::new_current_thread()
            .thread_name("ssocket-plug")
            .thread_stack_size(stack_bytes(limits))
            .max_blocking_threads(MAX_THREADS)
            .enable_time()
            .build()?;
        Ok(PlugPool { runtime: Some(runtime) })
    }

    /// Run `job` on a plug thread.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        if let Some(rt) = &self.runtime {
            rt.spawn_blocking(job);
        }
    }
}

impl Drop for PlugPool {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn stack_covers_the_nesting_the_size_limits_allow() {
        let mut limits = Settings::default().limits;
        assert_eq!(nesting_bound(&limits), Some(110_000), "the documented defaults");
        // Debug builds need 4x the stack per level, more than the cap.
        assert_eq!(stack_bytes(&limits), (110_000 * STACK_PER_LEVEL + CALL_STACK_BYTES).min(MAX_STACK_BYTES));
        if !cfg!(debug_assertions) {
            assert_eq!(stack_bytes(&limits), 467_337_216, "release: about 446 MiB per thread");
        }

        limits.max_array_size = 10;
        limits.max_map_size = 5;
        assert_eq!(stack_bytes(&limits), 15 * STACK_PER_LEVEL + CALL_STACK_BYTES);

        // No limit on either size: no bound, so the largest stack.
        limits.max_map_size = 0;
        assert_eq!((nesting_bound(&limits), stack_bytes(&limits)), (None, MAX_STACK_BYTES));
        limits.max_map_size = usize::MAX;
        assert_eq!(stack_bytes(&limits), MAX_STACK_BYTES, "no overflow past the cap");
    }
}
