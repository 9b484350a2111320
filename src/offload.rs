//! Waiting, from plain blocking code, for a future that runs on a runtime
//! of our own (the HTTP client's, Redis's). `Runtime::block_on` cannot be
//! used for that: the calling thread may itself be inside a runtime (INIT
//! runs while the server starts, on a thread that drives the server's
//! runtime), and tokio refuses to nest them. The future runs as a task on
//! its runtime; this thread only sleeps on a channel.

use std::future::Future;

use tokio::runtime::Handle;

/// Run `future` on `runtime` and block this thread until it is done. None
/// if the runtime stopped before it finished.
pub fn wait<T: Send + 'static>(runtime: &Handle, future: impl Future<Output = T> + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_from_inside_another_runtime() {
        let ours = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let handle = ours.handle().clone();
        let outer = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = outer.block_on(async move {
            wait(&handle, async {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                42
            })
        });
        assert_eq!(got, Some(42));
        ours.shutdown_background();
    }
}
