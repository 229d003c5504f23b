//! Session threads: each accepted client is handed to one of a few threads,
//! each running its own single-threaded runtime, and stays there.
//!
//! Why not tokio's work-stealing runtime: a session is two sockets and almost
//! no CPU per message, so the cost that dominates is the kernel's, and a
//! work-stealing pool adds to it: a worker that runs dry parks on a futex, the
//! next readiness event has to wake it from another thread, and a session's
//! two directions can be polled from different cores. Measured with pgbench
//! at 1,000 clients that was several times PgBouncer's voluntary context
//! switches per transaction. One thread per session, chosen when it connects,
//! keeps every wakeup of a session on the thread that owns its sockets, as an
//! event loop per core does.
//!
//! A client goes to the thread with the fewest open sessions, so a handful of
//! busy clients spread over the cores instead of landing on one.
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// A session thread's stack: tokio's worker size, what sessions ran on before
/// they had threads of their own, whatever `RUST_MIN_STACK` says. Parsing does
/// not depend on it: the rewriter grows its own stack for that.
const STACK_BYTES: usize = 2 * 1024 * 1024;

/// A fixed set of session threads, stopped by [`SessionThreads::join`] or
/// when dropped.
pub(crate) struct SessionThreads {
    threads: Vec<SessionThread>,
    stop: CancellationToken,
}

struct SessionThread {
    handle: Handle,
    /// Sessions open on this thread.
    open: Arc<AtomicUsize>,
    join: Option<JoinHandle<()>>,
}

/// Counts one session on its thread while alive.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl SessionThreads ===

impl SessionThreads {
    /// Starts `count` threads (at least one).
    ///
    /// # Errors
    /// [`Error::Runtime`] when a runtime or thread cannot be created.
    pub(crate) fn start(count: usize) -> Result<SessionThreads, Error> {
        let stop = CancellationToken::new();
        let mut threads = Vec::with_capacity(count.max(1));
        for i in 0..count.max(1) {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::Runtime)?;
            let handle = runtime.handle().clone();
            let stopped = stop.clone();
            let join = std::thread::Builder::new()
                .name(format!("pgshim-session-{i}"))
                .stack_size(STACK_BYTES)
                .spawn(move || runtime.block_on(stopped.cancelled()))
                .map_err(Error::Runtime)?;
            threads.push(SessionThread {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
                join: Some(join),
            });
        }
        Ok(SessionThreads { threads, stop })
    }

    /// Runs `session` on the least busy thread. `make` receives the client
    /// socket registered with that thread's runtime.
    pub(crate) fn spawn<F, Fut>(&self, tcp: tokio::net::TcpStream, make: F)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self
            .threads
            .iter()
            .min_by_key(|t| t.open.load(Ordering::Relaxed))
        else {
            return;
        };
        // Deregister from the accepting runtime; the session thread registers
        // the socket with its own.
        let std = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand the client socket to a session thread");
                return;
            }
        };
        thread.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(thread.open.clone());
        thread.handle.spawn(async move {
            let _open = open;
            match tokio::net::TcpStream::from_std(std) {
                Ok(tcp) => make(tcp).await,
                Err(e) => tracing::warn!(error = %e, "cannot register the client socket on its session thread"),
            }
        });
    }

    /// Stops the threads once their sessions are gone (the caller waits for
    /// those first) and waits for them to exit.
    pub(crate) fn join(mut self) {
        self.stop.cancel();
        for t in &mut self.threads {
            if let Some(j) = t.join.take() {
                let _ = j.join();
            }
        }
    }
}

impl Drop for SessionThreads {
    /// A server dropped before it finished (its runtime shut down) still ends
    /// its threads, dropping the sessions they hold.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Semaphore;

    use super::*;

    /// Four clients on two threads, each held open: two on each thread.
    #[tokio::test]
    async fn sessions_go_to_the_least_busy_thread_and_stay_there() {
        let threads = SessionThreads::start(2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Semaphore::new(0));
        let started = Arc::new(Semaphore::new(0));
        let done = Arc::new(Semaphore::new(0));
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (tcp, _) = listener.accept().await.unwrap();
            let (seen, release, up, finished) =
                (seen.clone(), release.clone(), started.clone(), done.clone());
            threads.spawn(tcp, move |tcp| async move {
                let name = || std::thread::current().name().map(str::to_owned);
                let first = name();
                up.add_permits(1);
                let _ = release.acquire().await;
                // Still on the thread it started on, with its socket usable.
                assert_eq!(name(), first);
                drop(tcp);
                seen.lock().unwrap().push(first);
                finished.add_permits(1);
            });
            // Counted before the next client is placed.
            started.acquire().await.unwrap().forget();
        }
        release.add_permits(4);
        // As the server does, the threads stop once their sessions are done.
        done.acquire_many(4).await.unwrap().forget();
        tokio::task::spawn_blocking(move || threads.join())
            .await
            .unwrap();
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        let expected = [
            "pgshim-session-0",
            "pgshim-session-0",
            "pgshim-session-1",
            "pgshim-session-1",
        ];
        assert_eq!(seen, expected.map(|n| Some(n.to_owned())));
        drop(clients);
    }
}
