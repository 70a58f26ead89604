//! Serving the router on a TCP listener with the connection timeouts `axum::serve` leaves
//! unset: hyper's HTTP/1 server with a timer, so a connection that does not complete a
//! request head in time — a half-sent header, or an idle keep-alive connection between two
//! requests — is closed ([`HttpTimeouts`]). `axum::serve` builds hyper's connection without a
//! timer, which disables hyper's header-read timeout: 1,100 idle anonymous connections locked
//! legitimate clients out at 1,024 file descriptors (issue 19, item 5).
//!
//! HTTP/1.1 only (with upgrades, for WebSockets): pop has no TLS listener, and browsers and
//! the clients here speak HTTP/2 only over TLS. (The auto-detecting builder would also wait
//! without a timeout for a silent connection's first bytes.) hyper and hyper-util are what
//! axum itself runs on, so this adds no crate to the build.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a connection may take to send a complete request head, counted from when it
/// connects or from its previous response. A client sends its head at once; 10 s is far
/// beyond any real client's need on a slow link while a half-sent header or an idle
/// keep-alive connection costs a file descriptor for no more than that.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an open keep-alive connection may sit idle between two requests. Clients keep
/// a pooled connection for about a minute at most (reqwest 90 s, browsers 60–300 s) and
/// reconnect when the server closed it, so closing after 60 s idle costs them a handshake.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The connection timeouts of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts { header_read: HEADER_READ_TIMEOUT, idle: IDLE_TIMEOUT }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets every
/// connection finish the request it is serving (graceful shutdown) and returns once all are
/// closed. Upgraded connections (WebSockets) are not waited for: they are on their own once
/// upgraded.
pub async fn serve<F>(listener: TcpListener, router: Router, timeouts: HttpTimeouts, shutdown: F)
where
    F: Future<Output = ()> + Send,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(timeouts.header_read);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (open_tx, open_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: wait a
                    // little instead of spinning, as axum::serve does.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (io, idle) = idle::Tracked::new(TokioIo::new(stream));
        let service = {
            let (router, idle) = (router.clone(), std::sync::Arc::clone(&idle));
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                // A request being served keeps its connection from counting as idle.
                let busy = idle.busy();
                let (request, body) = unread::watched(request);
                let response = tower::ServiceExt::oneshot(router.clone(), request);
                async move {
                    let mut response = response.await;
                    drop(busy);
                    if let Ok(response) = &mut response {
                        unread::close_if_unread(&body, response);
                    }
                    response
                }
            })
        };
        let connection = builder.serve_connection(io, service).with_upgrades();
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        let limit = timeouts.idle;
        tokio::spawn(async move {
            let _open = open;
            tokio::pin!(connection);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "an HTTP connection ended with an error");
                        }
                        return;
                    }
                    () = async { drop(stop.wait_for(|s| *s).await) }, if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    () = idle.exceeded(limit) => {
                        tracing::debug!(?limit, "closing an idle HTTP connection");
                        return;
                    }
                }
            }
        });
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(open_rx);
    open_tx.closed().await;
}

/// A request whose body was answered before it was read to its end (a 401 or 405 decided by
/// the head, a body over the limit): hyper then closes the connection without saying so, and
/// a client's next request on it fails with a broken pipe (popclient21: Apache HttpClient's
/// and Python's pools do not retry it). The answer says `Connection: close`.
mod unread {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll};

    use axum::http::{HeaderValue, header};
    use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};

    /// A request body that records when it was read to its end.
    pub struct Watched {
        inner: Incoming,
        ended: Arc<AtomicBool>,
    }

    /// The request with its body watched, and whether that body ended.
    pub fn watched(
        request: hyper::Request<Incoming>,
    ) -> (hyper::Request<Watched>, Arc<AtomicBool>) {
        let ended = Arc::new(AtomicBool::new(request.body().is_end_stream()));
        let watched = Arc::clone(&ended);
        (request.map(|inner| Watched { inner, ended: watched }), ended)
    }

    /// Says `Connection: close` on an answer given before its request's body ended.
    pub fn close_if_unread<B>(ended: &AtomicBool, response: &mut hyper::Response<B>) {
        if !ended.load(Ordering::Acquire)
            && response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS
        {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }

    impl Body for Watched {
        type Data = Bytes;
        type Error = hyper::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            let polled = Pin::new(&mut self.inner).poll_frame(cx);
            if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
                self.ended.store(true, Ordering::Release);
            }
            polled
        }

        fn is_end_stream(&self) -> bool {
            self.inner.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.inner.size_hint()
        }
    }
}

/// Idle tracking: the time of a connection's last read or write, and whether a request is
/// being served (a long poll or a slow handler is not idle).
mod idle {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::time::Instant;

    /// An IO that stamps every read and write with the time.
    pub struct Tracked<T> {
        inner: T,
        activity: Arc<Activity>,
    }

    pub struct Activity {
        start: Instant,
        /// Milliseconds since `start` of the last read or write.
        last: AtomicU64,
        /// Requests being served.
        busy: AtomicU64,
    }

    /// One request being served on the connection.
    pub struct Busy(Arc<Activity>);

    impl Drop for Busy {
        fn drop(&mut self) {
            self.0.busy.fetch_sub(1, Ordering::AcqRel);
            self.0.touch();
        }
    }

    impl Activity {
        pub fn busy(self: &Arc<Self>) -> Busy {
            self.busy.fetch_add(1, Ordering::AcqRel);
            Busy(Arc::clone(self))
        }

        fn touch(&self) {
            let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(now, Ordering::Relaxed);
        }

        /// Resolves once nothing was read or written for `limit`.
        pub async fn exceeded(&self, limit: Duration) {
            loop {
                let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
                let deadline = last + limit;
                let busy = self.busy.load(Ordering::Acquire) > 0;
                if Instant::now() >= deadline && !busy {
                    return;
                }
                let deadline = if busy { Instant::now() + limit } else { deadline };
                tokio::time::sleep_until(deadline).await;
            }
        }
    }

    impl<T> Tracked<T> {
        pub fn new(inner: T) -> (Tracked<T>, Arc<Activity>) {
            let activity = Arc::new(Activity {
                start: Instant::now(),
                last: AtomicU64::new(0),
                busy: AtomicU64::new(0),
            });
            (Tracked { inner, activity: Arc::clone(&activity) }, activity)
        }
    }

    impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Tracked<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: hyper::rt::ReadBufCursor<'_>,
        ) -> Poll<std::io::Result<()>> {
            let result = Pin::new(&mut self.inner).poll_read(cx, buf);
            if result.is_ready() {
                self.activity.touch();
            }
            result
        }
    }

    impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Tracked<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let result = Pin::new(&mut self.inner).poll_write(cx, buf);
            if result.is_ready() {
                self.activity.touch();
            }
            result
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            if result.is_ready() {
                self.activity.touch();
            }
            result
        }
    }
}
