//! The HTTP/1 accept loop: one task per connection, a deadline for each request's headers,
//! and a graceful stop.
//!
//! `axum::serve` has no deadline for request headers, so a client that sends its headers a
//! byte at a time (slowloris), or opens a connection and sends nothing, holds a task and a
//! file descriptor for ever. Here every connection must deliver each request's headers within
//! [`ServerConfig::header_timeout`](crate::ServerConfig) of the server starting to wait for
//! them, or it is closed; that also closes keep-alive connections left idle that long. A
//! connection that has sent nothing yet holds no HTTP buffers, so thousands of idle ones cost
//! little.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How many connections the kernel may hold for the server before it accepts them. Tokio's
/// `TcpListener::bind` leaves 128, and a burst of connections beyond that (10,000 clients
/// reconnecting after a restart) has its SYNs dropped and retried a second later.
const ACCEPT_BACKLOG: u32 = 4096;

/// A listener on `addr` with a deep accept backlog (address reuse on, as `bind` has it).
pub async fn listen(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, asks every
/// connection to finish its request in flight and close, and waits for them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let closing = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    pause_after_accept_error(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (router, closing) = (router.clone(), closing.clone());
        connections.spawn(async move {
            // Until its first byte a connection costs a small task and a socket: the HTTP
            // state (hyper's buffers, the service) is boxed and made only for a connection
            // that sends something in time.
            // (`readable()` would not do: a fresh socket counts as ready until a read says
            // otherwise. A peek waits for a byte and consumes nothing.)
            let mut first = [0u8; 1];
            tokio::select! {
                peeked = tokio::time::timeout(header_timeout, stream.peek(&mut first)) => {
                    // Nothing in time, the end, or an error: close.
                    if !matches!(peeked, Ok(Ok(1))) {
                        return;
                    }
                }
                () = closing.cancelled() => return,
            }
            Box::pin(serve_connection(stream, router, header_timeout, closing)).await;
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Serves HTTP/1 on one connection until it ends, or until `closing`, when the request in
/// flight is finished first.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    header_timeout: Duration,
    closing: CancellationToken,
) {
    let service = TowerToHyperService::new(
        router.map_request(|request: Request<Incoming>| request.map(axum::body::Body::new)),
    );
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::trace!("connection ended: {err}");
            }
        }
        () = closing.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A failed accept: a connection reset before it was accepted is nothing; anything else
/// (out of file descriptors, most often) is logged and the loop pauses a second, letting
/// connections close, instead of spinning.
async fn pause_after_accept_error(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accepting a connection failed: {err}; trying again in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
