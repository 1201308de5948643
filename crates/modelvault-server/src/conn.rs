//! Connections: the accept loop both listeners (plain HTTP and TLS) share,
//! and the bounds that keep a crowd of clients from starving the server.
//! 1,100 idle connections once used up the process's 1,024 open files and
//! `/healthz` went unanswered for as long as they stayed. Now:
//!
//! - at most `server.max_connections` connections are served at once,
//!   capped below the open-file limit ([`ConnLimits::capped`]). At the cap
//!   the server logs one line, asks every open connection to close as soon
//!   as it is idle (HTTP/1.1 between requests, HTTP/2 with no stream open),
//!   and the next client waits for the first free slot; clients after it
//!   wait in the kernel's accept queue, holding no descriptor of ours;
//! - a request head must arrive within `header_read_timeout_secs`: hyper's
//!   HTTP/1 header read timeout, which also bounds a kept-alive connection
//!   waiting for its next request; the TLS handshake has the same bound;
//! - a connection that moves no byte for `idle_timeout_secs` is closed once
//!   no request is in progress (HTTP/2 has no header timeout);
//! - a write that makes no progress for `send_timeout_secs` (a client that
//!   stopped reading a download) fails, which closes the connection;
//! - a request body that delivers no byte for `receive_timeout_secs` (a
//!   client that stopped sending mid-upload) fails with [`BodyStalled`]:
//!   the request is answered 408 `request_timeout` (uploads and JSON
//!   bodies) and, its body unread, the connection closes;
//! - an HTTP/1 request with both `Content-Length` and `Transfer-Encoding` is
//!   answered 400 `invalid_request`: hyper would read it as chunked and
//!   close the connection, but a proxy in front may have framed it by its
//!   length (request smuggling).
//!
//! Plain HTTP speaks HTTP/1.1 only; TLS picks HTTP/2 or HTTP/1.1 by ALPN.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Resource, Rlimit};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use axum_server::accept::Accept as _;
use axum_server::tls_rustls::RustlsAcceptor;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::Service as _;

use crate::ApiError;
use crate::config::ServerConfig;

/// Descriptors kept out of the connection budget for the store, keyring,
/// audit trail, policy cache, logs and the runtime itself.
const RESERVED_FDS: u64 = 64;

/// A request body that delivered no byte for the receive timeout: the
/// error its reader gets ([`StallGuard`]); a route finds it in the body's
/// error, or in a rejection caused by it, with [`BodyStalled::find`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyStalled(pub Duration);

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body delivered no byte for {} s",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for BodyStalled {}

impl BodyStalled {
    /// The stalled body that `e` is, or was caused by, if any.
    pub fn find(e: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut cur = Some(e);
        while let Some(e) = cur {
            if let Some(s) = e.downcast_ref::<BodyStalled>() {
                return Some(*s);
            }
            cur = e.source();
        }
        None
    }
}

impl From<BodyStalled> for ApiError {
    fn from(e: BodyStalled) -> Self {
        ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            e.to_string(),
        )
    }
}

/// A request body that fails with [`BodyStalled`] when it has been
/// waited on, with nothing arriving, for `timeout`. The clock runs only
/// while the body's reader waits for it: a handler busy with other work
/// between two reads is not timed. Sizes and the end of the body pass
/// through unchanged.
struct StallGuard<B> {
    inner: B,
    timeout: Duration,
    /// The current wait's deadline; allocated at the first wait, reused.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the last poll found nothing (a wait is under way).
    waiting: bool,
}

impl<B> StallGuard<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: None,
            waiting: false,
        }
    }
}

impl<B> hyper::body::Body for StallGuard<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                // A new wait starts the clock again; a wait that goes on
                // keeps its deadline.
                let until = tokio::time::Instant::now() + this.timeout;
                if !this.waiting
                    && let Some(d) = this.deadline.as_mut()
                {
                    d.as_mut().reset(until);
                }
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                this.waiting = true;
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(this.timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// How long connections in flight get to finish after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// At most one "connection limit reached" line in this long.
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(60);

/// The connection bounds, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to receive a whole request head (and the TLS handshake).
    pub header_read_timeout: Duration,
    /// Time a connection may move no byte before it is closed when idle.
    pub idle_timeout: Duration,
    /// Time a write may make no progress before the connection is closed.
    pub send_timeout: Duration,
    /// Time a request body may deliver no byte before it fails.
    pub receive_timeout: Duration,
}

impl ConnLimits {
    /// The limits a config sets.
    pub fn from_config(c: &ServerConfig) -> Self {
        Self {
            max_connections: c.max_connections.max(1),
            header_read_timeout: Duration::from_secs(c.header_read_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs.max(1)),
            send_timeout: Duration::from_secs(c.send_timeout_secs.max(1)),
            receive_timeout: Duration::from_secs(c.receive_timeout_secs.max(1)),
        }
    }

    /// The most connections a process with `open_files` descriptors can
    /// serve: each connection may hold a second descriptor (the store file
    /// or the S3 connection of a download), and [`RESERVED_FDS`] stay free.
    pub fn fd_budget(open_files: u64) -> usize {
        let budget = open_files.saturating_sub(RESERVED_FDS) / 2;
        usize::try_from(budget).unwrap_or(usize::MAX).max(1)
    }

    /// These limits with `max_connections` lowered to the budget of
    /// `open_files` (the soft `RLIMIT_NOFILE`) when that is smaller.
    pub fn capped(mut self, open_files: Option<u64>) -> Self {
        if let Some(n) = open_files {
            self.max_connections = self.max_connections.min(Self::fd_budget(n));
        }
        self
    }
}

/// The open-file limit before and after [`raise_open_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// The soft `RLIMIT_NOFILE`, when it can be read and is finite.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(Resource::Nofile).current
}

/// The soft and hard `RLIMIT_NOFILE`; `None` is unlimited.
fn get_nofile() -> (Option<u64>, Option<u64>) {
    let lim = rustix::process::getrlimit(Resource::Nofile);
    (lim.current, lim.maximum)
}

/// Raises the soft open-file limit to the hard limit (the default soft
/// limit, often 1,024, is far below what a server with many clients needs;
/// the hard limit is what the operator allows). An unlimited hard limit is
/// taken as `/proc/sys/fs/nr_open` (else 1,048,576), the kernel's ceiling.
pub fn raise_open_file_limit() -> io::Result<OpenFileLimit> {
    let (before, hard) = get_nofile();
    let target = match hard {
        Some(hard) => hard,
        None => std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20),
    };
    let before = before.unwrap_or(u64::MAX);
    if before < target {
        rustix::process::setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: hard,
            },
        )
        .map_err(io::Error::from)?;
    }
    let (soft, hard) = get_nofile();
    Ok(OpenFileLimit {
        before,
        soft: soft.unwrap_or(u64::MAX),
        hard: hard.unwrap_or(u64::MAX),
    })
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until
/// `shutdown` resolves; connections in flight then get ten seconds.
pub async fn serve(
    listener: TcpListener,
    tls: Option<RustlsAcceptor>,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let tls = tls.map(|t| t.handshake_timeout(limits.header_read_timeout));
    let mut h1 = auto::Builder::new(TokioExecutor::new()).http1_only();
    h1.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
    h2.http2().timer(TokioTimer::new());
    let shared = Arc::new(Shared {
        router,
        draining: std::sync::atomic::AtomicBool::new(false),
        limits,
        tls,
        h1,
        h2,
    });
    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    // Every connection whose number is below the watermark closes as soon
    // as it is idle; the stop flag closes all of them.
    let (shed_tx, shed_rx) = watch::channel(0u64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next_id = 0u64;
    let mut limit_log = RateLimited::default();
    let mut fd_log = RateLimited::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) if out_of_descriptors(&e) => {
                // Below the cap this should not happen; closing idle
                // connections frees descriptors fastest.
                fd_log.warn(|more| {
                    tracing::warn!(error = %e, "accept failed: out of file descriptors; closing idle connections{more}")
                });
                shed_tx.send_replace(next_id);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                limit_log.warn(|more| {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: {} connections open (server.max_connections); closing idle connections, new connections wait for a free slot{more}",
                        limits.max_connections
                    )
                });
                shed_tx.send_replace(next_id);
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let id = next_id;
        next_id += 1;
        Conn::spawn(
            id,
            peer,
            &shared,
            stop_rx.clone(),
            shed_rx.clone(),
            permit,
            tcp,
        );
    }
    // Draining: connections close once their request in flight is
    // answered; until every one has (at most SHUTDOWN_GRACE), the listener
    // stays open and answers each new request 503 `shutting_down` with
    // `Connection: close`, so a client or load balancer retries elsewhere.
    shared
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    stop_tx.send_replace(true);
    tracing::info!(
        "shutdown: draining (requests in flight get {}s; new requests are answered 503)",
        SHUTDOWN_GRACE.as_secs()
    );
    // Connections accepted while draining get a stop signal that never
    // fires, so each is read and answered (503) before it closes.
    let (_drain_tx, drain_rx) = watch::channel(false);
    // They hold slots of their own: the connection slots are all being
    // gathered to see the requests in flight end.
    let drain_slots = Arc::new(Semaphore::new(256));
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    let mut all_done = std::pin::pin!(slots.clone().acquire_many_owned(max));
    loop {
        tokio::select! {
            _ = &mut all_done => break,
            () = tokio::time::sleep_until(deadline) => {
                tracing::info!(
                    "shutdown: connections still open after {}s are dropped",
                    SHUTDOWN_GRACE.as_secs()
                );
                break;
            }
            a = listener.accept() => {
                let Ok((tcp, peer)) = a else {
                    // (Out of descriptors, say: do not spin.)
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let Ok(permit) = drain_slots.clone().try_acquire_owned() else { continue };
                let id = next_id;
                next_id += 1;
                Conn::spawn(id, peer, &shared, drain_rx.clone(), shed_rx.clone(), permit, tcp);
            }
        }
    }
    drop(listener);
    Ok(())
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(c) if c == Errno::MFILE.raw_os_error() || c == Errno::NFILE.raw_os_error()
    )
}

/// Emits at most one line per [`LIMIT_LOG_EVERY`], counting the others.
#[derive(Default)]
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    fn warn(&mut self, emit: impl FnOnce(&str)) {
        if self.last.is_some_and(|t| t.elapsed() < LIMIT_LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        let more = if self.suppressed > 0 {
            format!(" ({} more times since the last report)", self.suppressed)
        } else {
            String::new()
        };
        emit(&more);
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

struct Shared {
    router: Router,
    /// Set once shutdown starts: every request not yet answered gets a 503
    /// `shutting_down` (and its connection closes).
    draining: std::sync::atomic::AtomicBool,
    limits: ConnLimits,
    tls: Option<RustlsAcceptor>,
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

/// One accepted connection; holds its slot until it ends.
struct Conn {
    id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    shed: watch::Receiver<u64>,
    /// Whether `shed` can still change.
    shed_open: bool,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    /// Serves an accepted connection on its own task.
    fn spawn(
        id: u64,
        peer: SocketAddr,
        shared: &Arc<Shared>,
        stop: watch::Receiver<bool>,
        shed: watch::Receiver<u64>,
        slot: OwnedSemaphorePermit,
        tcp: TcpStream,
    ) {
        let conn = Conn {
            id,
            peer,
            shared: shared.clone(),
            stop,
            shed,
            shed_open: true,
            _slot: slot,
        };
        tokio::spawn(conn.run(tcp));
    }

    async fn run(mut self, tcp: TcpStream) {
        // Small responses must not wait on Nagle's algorithm and the peer's
        // delayed ACK (~40 ms a request).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::new());
        let io = Guarded::new(tcp, activity.clone(), self.shared.limits.send_timeout);
        let shared = self.shared.clone();
        match &shared.tls {
            None => self.serve(io, false, activity).await,
            Some(acceptor) => {
                // A client that has sent nothing yet is idle: at the limit
                // it goes like an idle HTTP connection.
                let mut handshake = std::pin::pin!(acceptor.accept(io, ()));
                let handshake = loop {
                    tokio::select! {
                        r = &mut handshake => break r,
                        _ = self.stop.changed() => return,
                        shed = self.shed.changed(), if self.shed_open => {
                            if shed.is_err() {
                                self.shed_open = false;
                            } else if self.id < *self.shed.borrow_and_update() && !activity.heard() {
                                return;
                            }
                        }
                    }
                };
                match handshake {
                    Ok((tls, _)) => {
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                        self.serve(tls, h2, activity).await;
                    }
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    }
                }
            }
        }
    }

    async fn serve<I>(&mut self, io: I, h2: bool, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let framing = Arc::new(Framing::new());
        let io = Sniffed {
            io,
            tracker: (!h2).then(|| Tracker::new(framing.clone())),
        };
        let peer = self.peer;
        let router = self.shared.router.clone();
        let shared = self.shared.clone();
        let receive_timeout = self.shared.limits.receive_timeout;
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let refused = framing.refuses(&req);
            let draining = shared.draining.load(std::sync::atomic::Ordering::SeqCst);
            let mut router = router.clone();
            async move {
                if draining {
                    return Ok::<_, Infallible>(shutting_down());
                }
                if refused {
                    tracing::warn!(%peer, method = %req.method(), path = %req.uri().path(), "refused a request with both Content-Length and Transfer-Encoding");
                    return Ok::<_, Infallible>(ambiguous_framing());
                }
                router
                    .call(req.map(|body| StallGuard::new(body, receive_timeout)))
                    .await
            }
        });
        let builder = if h2 { &self.shared.h2 } else { &self.shared.h1 };
        let conn = builder.serve_connection(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        let idle = self.shared.limits.idle_timeout;
        let idle_check = tokio::time::sleep(idle);
        let mut idle_check = std::pin::pin!(idle_check);
        let mut closing = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(peer = %peer, error = %e, "connection ended");
                    }
                    break;
                }
                _ = self.stop.changed(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                r = self.shed.changed(), if !closing && self.shed_open => {
                    if r.is_err() {
                        self.shed_open = false;
                    } else if self.id < *self.shed.borrow_and_update() {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                () = &mut idle_check, if !closing => {
                    let quiet = activity.quiet_for();
                    if quiet >= idle {
                        tracing::debug!(peer = %peer, "closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    } else {
                        idle_check.as_mut().reset(tokio::time::Instant::now() + (idle - quiet));
                    }
                }
            }
        }
    }
}

/// The answer to a request that arrives while the server shuts down.
fn shutting_down() -> Response {
    let mut resp = ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "this server is shutting down; retry on another",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// The answer to a request framed both by length and by chunks.
fn ambiguous_framing() -> Response {
    let mut resp =
        ApiError::bad_request("a request may not carry both Content-Length and Transfer-Encoding")
            .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// When a connection last moved a byte.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    heard: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            heard: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the peer has sent anything yet.
    fn heard(&self) -> bool {
        self.heard.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = self.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}

/// The TCP stream with the send timeout and activity tracking.
struct Guarded {
    tcp: TcpStream,
    activity: Arc<Activity>,
    send_timeout: Duration,
    /// Armed while a write waits for the peer to read; fails the write when
    /// it fires. Allocated once, reset at each new wait.
    stall: Pin<Box<tokio::time::Sleep>>,
    stalled: bool,
}

impl Guarded {
    fn new(tcp: TcpStream, activity: Arc<Activity>, send_timeout: Duration) -> Self {
        Self {
            tcp,
            activity,
            send_timeout,
            stall: Box::pin(tokio::time::sleep(send_timeout)),
            stalled: false,
        }
    }

    fn wrote(
        &mut self,
        r: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.stalled = false;
                    self.activity.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if !self.stalled {
                    self.stalled = true;
                    let deadline = tokio::time::Instant::now() + self.send_timeout;
                    self.stall.as_mut().reset(deadline);
                }
                match self.stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "send timeout: the client read nothing for {}s",
                            self.send_timeout.as_secs()
                        ),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
            this.activity.heard.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write(cx, data);
        this.wrote(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.wrote(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The plaintext stream hyper reads, shown to the framing [`Tracker`]
/// (HTTP/1 only).
struct Sniffed<I> {
    io: I,
    tracker: Option<Tracker>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Sniffed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(t)) = (&r, this.tracker.as_mut()) {
            t.feed(&buf.filled()[before..]);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Sniffed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What the tracker learned, read by the connection's service: the number
/// of the first request (0-based, in connection order) whose head carried
/// both framing headers.
struct Framing {
    ambiguous: AtomicU64,
    served: AtomicU64,
}

impl Framing {
    fn new() -> Self {
        Self {
            ambiguous: AtomicU64::new(u64::MAX),
            served: AtomicU64::new(0),
        }
    }

    /// Called for each request hyper hands over, in order. hyper keeps
    /// `Transfer-Encoding` (and drops `Content-Length`) of such a request,
    /// and closes the connection after it, so no later request follows.
    fn refuses<B>(&self, req: &Request<B>) -> bool {
        let n = self.served.fetch_add(1, Ordering::Relaxed);
        self.ambiguous.load(Ordering::Relaxed) <= n
            && req.headers().contains_key(header::TRANSFER_ENCODING)
    }
}

/// Follows HTTP/1 message framing on the bytes hyper reads, to see each
/// request head as sent (hyper removes one of the two headers before the
/// service sees the request). Anything it does not understand turns it off:
/// hyper then decides alone, as before.
struct Tracker {
    framing: Arc<Framing>,
    state: Track,
    buf: Vec<u8>,
    heads: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Off,
}

/// Longest request head (or chunk-size line, or trailer block) followed.
const TRACK_MAX: usize = 64 * 1024;

enum Parsed {
    Partial,
    /// This many bytes of the buffer were one whole item.
    Done(usize),
    Bad,
}

impl Tracker {
    fn new(framing: Arc<Framing>) -> Self {
        Self {
            framing,
            state: Track::Head,
            buf: Vec::new(),
            heads: 0,
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.state != Track::Off {
            let used = self.step(data).min(data.len());
            data = &data[used..];
        }
    }

    /// Consumes a prefix of `data`; returns its length.
    fn step(&mut self, data: &[u8]) -> usize {
        let len = data.len() as u64;
        match self.state {
            Track::Off => data.len(),
            Track::Body(n) | Track::ChunkData(n) => {
                let used = n.min(len);
                let left = n - used;
                self.state = match (self.state, left) {
                    (Track::Body(_), 0) => Track::Head,
                    (Track::Body(_), l) => Track::Body(l),
                    (_, 0) => Track::ChunkEnd,
                    (_, l) => Track::ChunkData(l),
                };
                used as usize
            }
            Track::Head | Track::ChunkSize | Track::ChunkEnd | Track::Trailers => {
                // Whatever completes the item lies in `data`: the buffer
                // alone did not.
                let held = self.buf.len();
                self.buf.extend_from_slice(data);
                match self.parse() {
                    Parsed::Partial => {
                        if self.buf.len() > TRACK_MAX {
                            self.off();
                        }
                        data.len()
                    }
                    Parsed::Done(n) if n > held => {
                        self.buf.clear();
                        n - held
                    }
                    Parsed::Done(_) | Parsed::Bad => {
                        self.off();
                        data.len()
                    }
                }
            }
        }
    }

    fn off(&mut self) {
        self.state = Track::Off;
        self.buf = Vec::new();
    }

    fn parse(&mut self) -> Parsed {
        match self.state {
            Track::Head => self.parse_head(),
            Track::ChunkSize => match httparse::parse_chunk_size(&self.buf) {
                Ok(httparse::Status::Complete((n, 0))) => {
                    self.state = Track::Trailers;
                    Parsed::Done(n)
                }
                Ok(httparse::Status::Complete((n, size))) => {
                    self.state = Track::ChunkData(size);
                    Parsed::Done(n)
                }
                Ok(httparse::Status::Partial) => Parsed::Partial,
                Err(_) => Parsed::Bad,
            },
            Track::ChunkEnd => match self.buf.get(..2) {
                None if self.buf.first().is_none_or(|b| *b == b'\r') => Parsed::Partial,
                Some(b"\r\n") => {
                    self.state = Track::ChunkSize;
                    Parsed::Done(2)
                }
                _ => Parsed::Bad,
            },
            Track::Trailers => {
                let end = if self.buf.starts_with(b"\r\n") {
                    Some(2)
                } else {
                    find(&self.buf, b"\r\n\r\n").map(|i| i + 4)
                };
                match end {
                    Some(n) => {
                        self.state = Track::Head;
                        Parsed::Done(n)
                    }
                    None => Parsed::Partial,
                }
            }
            Track::Body(_) | Track::ChunkData(_) | Track::Off => Parsed::Bad,
        }
    }

    fn parse_head(&mut self) -> Parsed {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        let n = match req.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Bad,
        };
        let index = self.heads;
        self.heads += 1;
        let mut te: Option<&[u8]> = None;
        let mut lengths: Vec<&[u8]> = Vec::new();
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = Some(h.value);
            } else if h.name.eq_ignore_ascii_case("content-length") {
                lengths.push(h.value);
            }
        }
        if te.is_some() && !lengths.is_empty() {
            self.framing.ambiguous.fetch_min(index, Ordering::Relaxed);
        }
        // hyper refuses the second itself; after the first (which the
        // router never accepts) the connection might stop being HTTP.
        if req.method == Some("CONNECT") || (te.is_some() && req.version != Some(1)) {
            return Parsed::Bad;
        }
        self.state = match (te, lengths.as_slice()) {
            (Some(te), _) if last_coding_is_chunked(te) => Track::ChunkSize,
            (Some(_), _) => return Parsed::Bad,
            (None, []) => Track::Head,
            (None, [first, rest @ ..]) => match parse_length(first) {
                Some(l) if rest.iter().all(|v| parse_length(v) == Some(l)) => {
                    if l == 0 {
                        Track::Head
                    } else {
                        Track::Body(l)
                    }
                }
                _ => return Parsed::Bad,
            },
        };
        Parsed::Done(n)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn last_coding_is_chunked(te: &[u8]) -> bool {
    te.rsplit(|b| *b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(chunks: &[&[u8]]) -> (Tracker, Arc<Framing>) {
        let framing = Arc::new(Framing::new());
        let mut t = Tracker::new(framing.clone());
        for c in chunks {
            t.feed(c);
        }
        (t, framing)
    }

    fn ambiguous(f: &Framing) -> u64 {
        f.ambiguous.load(Ordering::Relaxed)
    }

    #[test]
    fn both_framing_headers_flag_their_request() {
        let (_, f) = track(&[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]);
        assert_eq!(ambiguous(&f), 1);
        let (_, f) = track(&[
            b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n",
        ]);
        assert_eq!(ambiguous(&f), 0);
    }

    #[test]
    fn bodies_are_skipped_whatever_they_hold() {
        // A body that looks like a request with both headers is not one.
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut fixed =
            format!("PUT /f HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        fixed.extend_from_slice(body);
        fixed.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        // Byte by byte, and all at once.
        let one_by_one: Vec<&[u8]> = fixed.chunks(1).collect();
        for chunks in [vec![fixed.as_slice()], one_by_one] {
            let (t, f) = track(&chunks);
            assert_eq!(ambiguous(&f), u64::MAX);
            assert_eq!((t.heads, t.state), (2, Track::Head));
        }

        let mut chunked = b"PUT /f HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec();
        chunked.extend_from_slice(format!("{:x};ext=1\r\n", body.len()).as_bytes());
        chunked.extend_from_slice(body);
        chunked.extend_from_slice(b"\r\n0\r\nX-Trailer: y\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
        let one_by_one: Vec<&[u8]> = chunked.chunks(1).collect();
        for chunks in [vec![chunked.as_slice()], one_by_one] {
            let (t, f) = track(&chunks);
            assert_eq!(ambiguous(&f), u64::MAX);
            assert_eq!((t.heads, t.state), (2, Track::Head));
        }
    }

    #[test]
    fn what_it_does_not_follow_turns_it_off() {
        for input in [
            &b"CONNECT a:443 HTTP/1.1\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let (t, _) = track(&[input]);
            assert_eq!(t.state, Track::Off, "{}", String::from_utf8_lossy(input));
        }
        let (t, _) = track(&[&vec![b'a'; TRACK_MAX + 1]]);
        assert_eq!(t.state, Track::Off);
    }

    #[test]
    fn refuses_only_the_flagged_request_with_transfer_encoding() {
        let f = Framing::new();
        f.ambiguous.store(1, Ordering::Relaxed);
        let plain = Request::new(());
        let mut chunked = Request::new(());
        chunked.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(!f.refuses(&chunked)); // request 0
        assert!(!f.refuses(&plain)); // request 1 lacks the header: hyper disagrees
        assert!(f.refuses(&chunked)); // request 2
    }

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_after_the_send_timeout() {
        use tokio::io::AsyncWriteExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let activity = Arc::new(Activity::new());
        let mut io = Guarded::new(server, activity.clone(), Duration::from_millis(300));
        let chunk = vec![0u8; 1 << 16];
        let mut stalled_at = None;
        let err = loop {
            match tokio::time::timeout(Duration::from_secs(10), io.write(&chunk)).await {
                Ok(Ok(_)) => stalled_at = Some(Instant::now()),
                Ok(Err(e)) => break e,
                Err(_) => panic!("the write hung past the send timeout"),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        let waited = stalled_at.map(|t| t.elapsed()).unwrap_or_default();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(activity.quiet_for() >= Duration::from_millis(250));
        drop(peer);
    }

    #[test]
    fn the_connection_budget_stays_below_the_open_file_limit() {
        assert_eq!(ConnLimits::fd_budget(1024), 480);
        assert_eq!(ConnLimits::fd_budget(10), 1);
        let l = ConnLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            receive_timeout: Duration::from_secs(1),
        };
        assert_eq!(l.capped(Some(1024)).max_connections, 480);
        assert_eq!(l.capped(Some(1 << 20)).max_connections, 1024);
        assert_eq!(l.capped(None).max_connections, 1024);
    }
}
