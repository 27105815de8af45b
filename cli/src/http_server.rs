//! The HTTP/1.1 server under `keel serve`: accepts connections, bounds how
//! long a client may take to send a request or leave a connection idle, and
//! shuts down within a deadline without cutting a commit short.
//!
//! Timeouts (each a flag of `keel serve`, see [`Timeouts`]):
//! - headers: a request's head must arrive within `header` of the
//!   connection's start or of the previous response (hyper's
//!   `header_read_timeout`); else the connection is closed.
//! - body: each read of a request body must bring data within `body`
//!   (tower-http's [`TimeoutBody`]); else reading the body fails, the request
//!   is refused and the connection closed.
//! - idle: a keep-alive connection that neither sends nor receives for
//!   `idle` is closed.
//!
//! Shutdown: on the signal the listener closes and every connection is told
//! to finish its request in progress and close. After `shutdown` the
//! connections still open (a stalled client, a slow request) are dropped.
//! A request's commit runs as a task of its own, so dropping its connection
//! does not stop it; the server returns only once [`CommitsInFlight`] says
//! every transaction that wrote is committed or aborted.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::Request};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
    task::JoinSet,
};
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutBody;

/// Read timeouts and the shutdown deadline of the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// Time allowed to receive a request's complete head.
    pub(crate) header: Duration,
    /// Time allowed between two reads of a request body.
    pub(crate) body: Duration,
    /// Time a connection may stay without traffic between requests.
    pub(crate) idle: Duration,
    /// Time in-flight requests get after the shutdown signal.
    pub(crate) shutdown: Duration,
}

/// Counts the transactions that wrote and are not yet committed or aborted,
/// so that shutdown can wait for their commits. A [`CommitGuard`] is one of
/// them.
#[derive(Debug, Default)]
pub(crate) struct CommitsInFlight {
    count: AtomicUsize,
    settled: Notify,
}

impl CommitsInFlight {
    /// Count one transaction until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> CommitGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        CommitGuard {
            commits: Arc::clone(self),
        }
    }

    /// How many are counted now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Resolves once none is counted.
    pub(crate) async fn settled(&self) {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One transaction counted by [`CommitsInFlight`], until dropped.
#[derive(Debug)]
pub(crate) struct CommitGuard {
    commits: Arc<CommitsInFlight>,
}

impl Drop for CommitGuard {
    fn drop(&mut self) {
        if self.commits.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.commits.settled.notify_waiters();
        }
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then shut down as
/// the module says. Accept errors are logged and retried, as axum does.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    commits: Arc<CommitsInFlight>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .keep_alive(true);
    let (close, closing) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // NOTE: as axum's `serve` in its examples: responses are
                    // small, and Nagle's delay would add to every one.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(
                        builder.clone(),
                        stream,
                        peer,
                        app.clone(),
                        timeouts,
                        closing.clone(),
                    ));
                }
                Err(err) => accept_failed(err).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = close.send(true);
    let all_closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(timeouts.shutdown, all_closed)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "closing the connections still open {} s after the shutdown signal",
            timeouts.shutdown.as_secs_f64()
        );
        connections.shutdown().await;
    }
    if commits.count() > 0 {
        tracing::info!(
            commits = commits.count(),
            "waiting for the commits in flight"
        );
        commits.settled().await;
    }
}

/// Log an accept error; after one that is not about the connection itself
/// (say, out of file descriptors), wait a second before accepting again.
async fn accept_failed(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept error: {err}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serve one connection until it closes: by the client, by a timeout, or
/// when `closing` turns true and its request in progress is answered.
async fn connection(
    builder: http1::Builder,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    timeouts: Timeouts,
    mut closing: watch::Receiver<bool>,
) {
    let body_timeout = timeouts.body;
    let service = TowerToHyperService::new(app.map_request(move |request: Request<Incoming>| {
        let mut request = request.map(|body| Body::new(TimeoutBody::new(body_timeout, body)));
        // The client's address, as axum's `ConnectInfo` (the admin API
        // limits failed authentications per address).
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        request
    }));
    let stream = Watched::new(stream);
    let traffic = Arc::clone(&stream.traffic);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closed = false;
    loop {
        let idle_until = traffic.last() + timeouts.idle;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!("connection ended: {err}");
                }
                return;
            }
            () = tokio::time::sleep_until(idle_until.into()), if !closed => {
                // NOTE: a connection busy with a request sends nothing
                // meanwhile; told to close, it still answers that request.
                if traffic.last() + timeouts.idle <= Instant::now() {
                    conn.as_mut().graceful_shutdown();
                    closed = true;
                }
            }
            _ = closing.wait_for(|closing| *closing), if !closed => {
                conn.as_mut().graceful_shutdown();
                closed = true;
            }
        }
    }
}

/// When a connection last sent or received bytes.
#[derive(Debug)]
struct Traffic {
    start: Instant,
    /// Nanoseconds after `start`.
    last: AtomicU64,
}

impl Traffic {
    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    fn record(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos, Ordering::Relaxed);
    }
}

/// A TCP stream that records its [`Traffic`], for the idle timeout.
#[derive(Debug)]
struct Watched {
    stream: TcpStream,
    traffic: Arc<Traffic>,
}

impl Watched {
    fn new(stream: TcpStream) -> Self {
        Watched {
            stream,
            traffic: Arc::new(Traffic {
                start: Instant::now(),
                last: AtomicU64::new(0),
            }),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.traffic.record();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.traffic.record();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.traffic.record();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        sync::atomic::AtomicBool,
    };

    use axum::routing::post;

    use super::*;

    const SHORT: Timeouts = Timeouts {
        header: Duration::from_secs(60),
        body: Duration::from_secs(60),
        idle: Duration::from_secs(60),
        shutdown: Duration::from_millis(300),
    };

    /// Start [`serve`] on a loopback port with a `/commit` route whose
    /// "commit" (a task holding a [`CommitGuard`]) takes `commit_time` and
    /// then sets the returned flag; the handler itself never answers, as if
    /// its client were gone. Returns the address, the flag, the trigger of
    /// the shutdown and the server's task.
    async fn start(
        timeouts: Timeouts,
        commit_time: Duration,
    ) -> (
        std::net::SocketAddr,
        Arc<AtomicBool>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let commits = Arc::new(CommitsInFlight::default());
        let done = Arc::new(AtomicBool::new(false));
        let app = Router::new().route(
            "/commit",
            post({
                let commits = Arc::clone(&commits);
                let done = Arc::clone(&done);
                move || async move {
                    let guard = commits.enter();
                    tokio::spawn(async move {
                        tokio::time::sleep(commit_time).await;
                        done.store(true, Ordering::SeqCst);
                        drop(guard);
                    });
                    std::future::pending::<()>().await;
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, timeouts, commits, async move {
            let _ = stopped.await;
        }));
        (addr, done, stop, server)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_waits_for_a_commit_in_flight_past_the_deadline() {
        let commit_time = Duration::from_millis(1500);
        let (addr, done, stop, server) = start(SHORT, commit_time).await;
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client
            .write_all(b"POST /commit HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        stop.send(()).unwrap();
        server.await.unwrap();
        assert!(
            done.load(Ordering::SeqCst),
            "the server returned after {:?}, before the commit in flight finished",
            started.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_request_head_does_not_hold_shutdown_past_the_deadline() {
        let (addr, _done, stop, server) = start(SHORT, Duration::ZERO).await;
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("no return within 10 s of the shutdown signal")
            .unwrap();
        assert!(started.elapsed() >= SHORT.shutdown);
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        assert!(matches!(client.read_to_end(&mut rest), Ok(0)));
    }
}
