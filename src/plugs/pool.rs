//! The threads plugs run on: the blocking pool of a runtime of our own, so
//! its threads get a stack sized for the script engine's recursion limits
//! whatever runtime the server itself runs on (a stack overflow would abort
//! the whole process, so it must be impossible, not unlikely).

use tokio::runtime::{Builder, Runtime};

/// Stack of each plug thread. Virtual memory: only touched pages cost RSS.
/// Sized for `engine::MAX_CALL_LEVELS` nested calls in an unoptimized build.
pub const STACK_BYTES: usize = 16 * 1024 * 1024;

/// Most plug threads at once (threads sleeping in `sleep` count).
pub const MAX_THREADS: usize = 512;

pub struct PlugPool {
    /// `Option` only so `Drop` can take it: a runtime dropped inside an async
    /// context must be shut down in the background.
    runtime: Option<Runtime>,
}

impl PlugPool {
    pub fn new() -> std::io::Result<PlugPool> {
        let runtime = Builder::new_current_thread()
            .thread_name("ssocket-plug")
            .thread_stack_size(STACK_BYTES)
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
