//! The threads that run policy evaluations: a fixed number (by default one
//! per core), kept apart from the async executor and its blocking pool, so
//! a plugin that burns its whole time limit occupies at most these threads
//! and never the ones that serve other requests or do file I/O.
//!
//! The pool does not queue work of its own accord: its user admits at most
//! [`EvaluationPool::threads`] jobs at once (the server does so with an
//! async semaphore), so a submitted job starts at once.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// One unit of work.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Errors of the evaluation pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A thread could not be started.
    #[error("evaluation thread: {0}")]
    Spawn(std::io::Error),
    /// Every thread has ended (none takes work any more).
    #[error("the evaluation threads have stopped")]
    Stopped,
}

/// Fixed threads running evaluation jobs.
pub struct EvaluationPool {
    tx: Mutex<mpsc::Sender<Job>>,
    threads: usize,
}

impl std::fmt::Debug for EvaluationPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvaluationPool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// The number of evaluation threads for a setting of `configured` (0: one
/// per core the process may use).
pub fn evaluation_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Lowers the calling thread's scheduling priority by `nice` (Linux; a
/// no-op elsewhere or for 0). Failure only costs the isolation it buys.
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // On Linux, PRIO_PROCESS with a thread id applies to that thread alone.
        let tid = rustix::thread::gettid();
        let rc = rustix::process::setpriority_process(Some(tid), nice.min(19));
        if let Err(error) = rc {
            tracing::warn!(
                nice,
                error = %std::io::Error::from(error),
                "could not lower the priority of a policy evaluation thread"
            );
        }
    }
}

impl EvaluationPool {
    /// Starts `threads` threads (at least one), each at `nice` (0..=19)
    /// below normal scheduling priority.
    pub fn new(threads: usize, nice: i32) -> Result<Self, PoolError> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("policy-eval-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    loop {
                        // The lock is held only while waiting for a job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            // A job that panics loses its answer (its
                            // caller then denies), not the thread.
                            Ok(job) => {
                                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                                    .is_err()
                                {
                                    tracing::error!("a policy evaluation panicked");
                                }
                            }
                            // The pool was dropped.
                            Err(_) => return,
                        }
                    }
                })
                .map_err(PoolError::Spawn)?;
        }
        Ok(Self {
            tx: Mutex::new(tx),
            threads,
        })
    }

    /// How many jobs run at once.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Hands `job` to a thread.
    pub fn submit(&self, job: Job) -> Result<(), PoolError> {
        self.tx
            .lock()
            .map_err(|_| PoolError::Stopped)?
            .send(job)
            .map_err(|_| PoolError::Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_jobs_on_at_most_its_threads() {
        let pool = EvaluationPool::new(2, 0).unwrap();
        assert_eq!(pool.threads(), 2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..8 {
            let (running, peak, done) = (running.clone(), peak.clone(), done_tx.clone());
            pool.submit(Box::new(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                assert!(
                    std::thread::current()
                        .name()
                        .is_some_and(|n| n.starts_with("policy-eval-"))
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
                done.send(()).unwrap();
            }))
            .unwrap();
        }
        for _ in 0..8 {
            done_rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 2);
        assert!(evaluation_threads(0) >= 1);
        assert_eq!(evaluation_threads(3), 3);
    }
}
