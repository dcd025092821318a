//! Accepted gRPC connections over TCP, with Nagle's algorithm off.
//!
//! Envoy's ext_proc messages are small and each one waits for its answer: with Nagle on, an
//! answer written while an earlier segment is unacknowledged waits for Envoy's delayed ACK
//! (tens of milliseconds; the bench measured the same stall on its empty ext_proc server).
//! tonic sets `TCP_NODELAY` only on listeners it binds itself; tollgate binds its own (to
//! report bind errors and to share the code path with Unix sockets), so it sets it here.

use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};

/// The listener's connections, each with `TCP_NODELAY` set. A connection on which the
/// option cannot be set is still served (a warning is logged): latency, not correctness.
pub fn incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        if let Ok(s) = &conn
            && let Err(e) = s.set_nodelay(true)
        {
            tracing::warn!(error = %e, "could not set TCP_NODELAY on a gRPC connection");
        }
        conn
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = Box::pin(incoming(listener));
        for _ in 0..3 {
            let client = TcpStream::connect(addr).await.unwrap();
            let server = conns.next().await.unwrap().unwrap();
            assert!(server.nodelay().unwrap(), "server side of each connection");
            drop(client);
        }
        // Without this module a plain accept leaves Nagle on: the test can fail.
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = plain.local_addr().unwrap();
        let _c = TcpStream::connect(a).await.unwrap();
        let (s, _) = plain.accept().await.unwrap();
        assert!(!s.nodelay().unwrap());
    }
}
