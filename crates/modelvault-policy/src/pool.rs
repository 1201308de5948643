//! The threads that run policy evaluations: a fixed number (by default one
//! per core), kept apart from the async executor and its blocking pool, so
//! a plugin that burns its whole time limit occupies at most these threads
//! and never the ones that serve other requests or do file I/O.
//!
//! The pool does not queue work of its own accord: its user admits at most
//! [`EvaluationPool::threads`] jobs at once (the server does so with an
//! async semaphore), so a submitted job starts at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

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

/// The jobs waiting for a thread. A submitted job wakes exactly one idle
/// thread (one futex wake per decision: a shared channel behind a mutex
/// woke a second thread to take over the wait).
#[derive(Default)]
struct Queue {
    jobs: Mutex<Jobs>,
    ready: Condvar,
    /// Threads still taking jobs.
    alive: AtomicUsize,
}

#[derive(Default)]
struct Jobs {
    waiting: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    /// The next job, or `None` once the pool is dropped and the queue is
    /// empty.
    fn next(&self) -> Option<Job> {
        let mut jobs = self.jobs.lock().ok()?;
        loop {
            if let Some(job) = jobs.waiting.pop_front() {
                return Some(job);
            }
            if jobs.closed {
                return None;
            }
            jobs = self.ready.wait(jobs).ok()?;
        }
    }
}

/// Counts a thread out of [`Queue::alive`] however it ends.
struct Alive(Arc<Queue>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Fixed threads running evaluation jobs.
pub struct EvaluationPool {
    queue: Arc<Queue>,
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
        let queue = Arc::new(Queue::default());
        let pool = Self {
            queue: queue.clone(),
            threads,
        };
        for i in 0..threads {
            queue.alive.fetch_add(1, Ordering::SeqCst);
            let alive = Alive(queue.clone());
            // On a spawn error the closure (and its `Alive`) drops, and so
            // does `pool`, which ends the threads already started.
            std::thread::Builder::new()
                .name(format!("policy-eval-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    while let Some(job) = alive.0.next() {
                        // A job that panics loses its answer (its caller
                        // then denies), not the thread.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            tracing::error!("a policy evaluation panicked");
                        }
                    }
                })
                .map_err(PoolError::Spawn)?;
        }
        Ok(pool)
    }

    /// How many jobs run at once.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Hands `job` to a thread.
    pub fn submit(&self, job: Job) -> Result<(), PoolError> {
        if self.queue.alive.load(Ordering::SeqCst) == 0 {
            return Err(PoolError::Stopped);
        }
        self.queue
            .jobs
            .lock()
            .map_err(|_| PoolError::Stopped)?
            .waiting
            .push_back(job);
        self.queue.ready.notify_one();
        Ok(())
    }
}

impl Drop for EvaluationPool {
    /// The threads finish the jobs already submitted, then end.
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.queue.jobs.lock() {
            jobs.closed = true;
        }
        self.queue.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

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

    #[test]
    fn a_panicking_job_keeps_its_thread_and_dropping_the_pool_ends_them() {
        let pool = EvaluationPool::new(1, 0).unwrap();
        pool.submit(Box::new(|| panic!("a hostile evaluation")))
            .unwrap();
        let (tx, rx) = mpsc::channel();
        pool.submit(Box::new(move || tx.send(()).unwrap())).unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        let queue = pool.queue.clone();
        drop(pool);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while queue.alive.load(Ordering::SeqCst) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "threads still running"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
