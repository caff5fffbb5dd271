//! The accept loop: HTTP/1.1 through hyper with the limits `axum::serve` does not set.
//!
//! `axum::serve` sets no timer, so hyper's header timeout never fires: a client that
//! opens a connection and never finishes its headers holds it (and a file descriptor)
//! forever, and 500 of them starve everyone else under a low descriptor limit. Here:
//! - the request head must arrive within `header_timeout` — measured from when the
//!   connection starts waiting for it, so an idle keep-alive connection is closed after
//!   the same time;
//! - a request body must arrive within `body_timeout` (enforced where bodies are read,
//!   [`crate::routes`]);
//! - at most `max_connections` connections are served at once; past that a new one gets
//!   a `503` JSON answer and is closed, with a log line at most every 10 s;
//! - running out of file descriptors in `accept` is logged and retried, not fatal.

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Connection limits of the API server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
    /// How long shutdown waits for connections still open after their requests ended.
    pub(crate) drain_timeout: Duration,
}

const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 88\r\n\r\n\
{\"error\":{\"code\":\"overloaded\",\"message\":\"too many open connections: retry in a moment\"}}";

/// Serve `app` on `listener` until `shutdown` completes; then stop accepting, let each
/// connection finish its request in flight and close, waiting at most `drain_timeout`.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut last_full_log: Option<Instant> = None;
    let mut last_accept_log: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE/ENFILE and aborted handshakes: not fatal; back off a little
                    // so a descriptor shortage does not spin.
                    if every_10s(&mut last_accept_log) {
                        eprintln!("runwarden api: accepting a connection failed: {e} (retrying)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if every_10s(&mut last_full_log) {
                eprintln!(
                    "runwarden api: {} connections open, the limit ([api] max_connections): \
                     answering new ones 503 until some close",
                    limits.max_connections
                );
            }
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = stream.write_all(OVERLOADED).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = app
            .clone()
            .map_request(|req: hyper::Request<Incoming>| req.map(Body::new));
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await;
    Ok(())
}

/// True at most once every 10 s (per `last`), for log lines that could otherwise flood.
fn every_10s(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)) {
        return false;
    }
    *last = Some(now);
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_overloaded_answer_declares_its_body_length() {
        let text = std::str::from_utf8(super::OVERLOADED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(declared, body.len());
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "overloaded");
    }
}
