//! A tokio runtime on an OS thread of its own, for the subscribers.
//!
//! On the run's runtime the subscribers share the workers with every publisher task, and
//! publishers that never wait (the throughput scenarios) starve them: in a 1,000 -> 1
//! flood the broker's socket to the subscriber held 3.5 MB unsent and the subscriber's
//! receive buffer 160 KB unread for seconds while the subscriber task waited its turn, and
//! the run counted as the broker's loss what the load tester itself did not read. On a
//! thread of its own the subscribers get the kernel's fair share of a core, whatever the
//! publishers do.

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A current-thread runtime running on its own thread until this is dropped.
#[derive(Debug)]
pub(crate) struct Apart {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl Apart {
    /// Starts the thread, named `name`.
    ///
    /// # Errors
    /// The runtime or the thread could not be started.
    pub(crate) fn start(name: &str) -> std::io::Result<Apart> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Returns when the owner is dropped; the runtime is then dropped here, off
                // any async context, cancelling what is still spawned on it.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Apart {
            handle,
            stop: Some(stop),
        })
    }

    /// Where to spawn the tasks that must not wait behind the run's other tasks.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Apart {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Apart;

    #[tokio::test]
    async fn a_task_spawned_apart_runs_on_the_other_thread_and_is_awaited_here() {
        let apart = Apart::start("apart-test").expect("thread");
        let name = apart
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("task");
        assert_eq!(name.as_deref(), Some("apart-test"));
    }
}
