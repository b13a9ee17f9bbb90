//! Serving the router on a TCP listener, with the limits a public listener
//! needs: a webhook path answers anyone, and `axum::serve` sets no timer,
//! so a client sending its headers a byte at a time (slowloris) would hold
//! a connection, a task and a file descriptor for as long as it liked, and
//! enough such clients would leave none for senders, or for the database.
//!
//! - A request's headers must arrive within [`HEADER_TIMEOUT`] (an idle
//!   keep-alive connection is closed after it too).
//! - At most [`MAX_CONNECTIONS`] connections are served at once; beyond,
//!   new ones wait in the kernel's backlog until one ends.
//! - Webhook bodies have their own deadline ([`BODY_TIMEOUT`], in the
//!   handler).
//! - On stop: no new connections; each open one finishes the request it is
//!   in, then closes.
//! - Over TLS ([`serve_tls`]), the handshake must be done within
//!   [`HEADER_TIMEOUT`] too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// How long a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client has to send a webhook delivery's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Serves `router` on `listener` until `stop` resolves, then lets the
/// requests in progress finish. Handlers see each connection's peer as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(listener: TcpListener, router: Router, stop: impl Future<Output = ()>) {
    serve_with(
        listener,
        router,
        stop,
        HEADER_TIMEOUT,
        MAX_CONNECTIONS,
        None,
    )
    .await;
}

/// [`serve`] over TLS, with `config`'s certificate.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()>,
    config: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    serve_with(
        listener,
        router,
        stop,
        HEADER_TIMEOUT,
        MAX_CONNECTIONS,
        Some(acceptor),
    )
    .await;
}

/// [`serve`] with its limits given (tests give short ones), over TLS with
/// `tls`.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()>,
    header_timeout: Duration,
    max_connections: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let (closing, closed) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        // Beyond the cap, accepting waits: new clients queue in the backlog.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a client gone before it
                    // was accepted: wait a moment rather than spin.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let service =
            TowerToHyperService::new(router.clone().layer(axum::Extension(ConnectInfo(peer))));
        let closed = closed.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Some(tls) = tls else {
                return drive(stream, service, header_timeout, closed, peer).await;
            };
            // A client that never finishes its handshake is one sending its
            // headers a byte at a time.
            match tokio::time::timeout(header_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => drive(stream, service, header_timeout, closed, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake not done in {header_timeout:?}"),
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    // Every connection holds a permit until it has ended.
    let _ = permits.acquire_many(max_connections as u32).await;
}

/// Serves one connection until it ends, or, once the host stops, until
/// the request it is in is answered.
async fn drive<S>(
    stream: S,
    service: TowerToHyperService<Router>,
    header_timeout: Duration,
    mut closed: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            return;
        }
        _ = closed.wait_for(|closed| *closed) => {}
    }
    connection.as_mut().graceful_shutdown();
    if let Err(e) = connection.await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::time::Instant;

    async fn started(
        header_timeout: Duration,
        max_connections: usize,
    ) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/peer",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.ip().to_string()
            }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with(
            listener,
            router,
            async {
                let _ = stopped.await;
            },
            header_timeout,
            max_connections,
            None,
        ));
        (addr, stop)
    }

    fn get(addr: SocketAddr) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_slow_with_its_headers_is_cut_off_and_the_others_are_served() {
        let (addr, _stop) = started(Duration::from_millis(300), 64).await;
        let answer = tokio::task::spawn_blocking(move || get(addr))
            .await
            .unwrap();
        assert!(answer.ends_with("127.0.0.1"), "the peer is known: {answer}");
        let cut = tokio::task::spawn_blocking(move || {
            let mut slow = std::net::TcpStream::connect(addr).unwrap();
            slow.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            slow.write_all(b"POST /hooks/crm HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            let started = Instant::now();
            let mut rest = Vec::new();
            // The server ends the connection (a 408, or just the close).
            let _ = slow.read_to_end(&mut rest);
            started.elapsed()
        })
        .await
        .unwrap();
        assert!(cut < Duration::from_secs(5), "cut after {cut:?}");
        // One that connects and says nothing at all, the same.
        let cut = tokio::task::spawn_blocking(move || {
            let mut silent = std::net::TcpStream::connect(addr).unwrap();
            silent
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let started = Instant::now();
            let _ = silent.read_to_end(&mut Vec::new());
            started.elapsed()
        })
        .await
        .unwrap();
        assert!(
            cut < Duration::from_secs(5),
            "a silent one cut after {cut:?}"
        );
        // And a kept-alive one idle after its answer.
        let cut = tokio::task::spawn_blocking(move || {
            let mut kept = std::net::TcpStream::connect(addr).unwrap();
            kept.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            kept.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut answer = [0u8; 512];
            let n = kept.read(&mut answer).unwrap();
            assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
            let started = Instant::now();
            let _ = kept.read_to_end(&mut Vec::new());
            started.elapsed()
        })
        .await
        .unwrap();
        assert!(
            cut < Duration::from_secs(5),
            "an idle kept-alive one cut after {cut:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_never_finishes_its_tls_handshake_is_cut_off() {
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tls");
        let certificate = Arc::new(
            super::super::tls::Certificate::load(
                &fixtures.join("server.pem"),
                &fixtures.join("server.key"),
            )
            .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(certificate.server_config().unwrap());
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with(
            listener,
            Router::new(),
            async {
                let _ = stopped.await;
            },
            Duration::from_millis(300),
            64,
            Some(acceptor),
        ));
        // Half a ClientHello's record header, then nothing.
        let cut = tokio::task::spawn_blocking(move || {
            let mut slow = std::net::TcpStream::connect(addr).unwrap();
            slow.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            slow.write_all(&[0x16, 0x03, 0x01]).unwrap();
            let started = Instant::now();
            let _ = slow.read_to_end(&mut Vec::new());
            started.elapsed()
        })
        .await
        .unwrap();
        assert!(cut < Duration::from_secs(5), "cut after {cut:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_cap_wait_until_one_ends() {
        let (addr, _stop) = started(Duration::from_secs(30), 1).await;
        let first = tokio::task::spawn_blocking(move || {
            // Holds the one slot: connected, and saying nothing yet.
            let mut held = std::net::TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            // Until now it held the slot; its connection ends after this.
            let asked = Instant::now();
            held.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            let _ = held.read_to_string(&mut answer);
            (answer, asked)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = tokio::task::spawn_blocking(move || (get(addr), Instant::now()));
        let (first, first_asked) = first.await.unwrap();
        let (second, second_done) = second.await.unwrap();
        assert!(first.ends_with("127.0.0.1") && second.ends_with("127.0.0.1"));
        assert!(
            second_done > first_asked,
            "the second was answered while the first held the one slot"
        );
    }

    #[tokio::test]
    async fn a_stop_lets_the_request_in_progress_finish() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (entered, mut entered_rx) = tokio::sync::mpsc::channel::<()>(1);
        let router = Router::new().route(
            "/slow",
            axum::routing::get(move || {
                let entered = entered.clone();
                async move {
                    let _ = entered.send(()).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }
            }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, async {
            let _ = stopped.await;
        }));
        let client = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer
        });
        entered_rx.recv().await.unwrap();
        let _ = stop.send(());
        server.await.unwrap();
        let answer = client.await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}"
        );
    }
}
