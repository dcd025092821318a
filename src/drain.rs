//! `tollgate drain-envoy`: the sidecar pod's preStop hook for Envoy.
//!
//! Envoy exits at once on SIGTERM, cutting streams in flight. Before Kubernetes sends it,
//! this asks Envoy's admin API (loopback, shared network namespace) to fail its health check
//! (`/ready` answers 503, so the pod leaves load balancers that probe it) and to drain its
//! listeners gracefully (`--drain-time-s`, `--drain-strategy`), then waits until Envoy has no
//! active downstream requests or the timeout passes. Envoy's own preStop (a sleep) keeps it alive meanwhile; tollgate's SIGTERM comes
//! after this returns, so tollgate outlives the requests it serves.
//!
//! Plain HTTP/1.1 over a TCP socket: the admin API is on loopback and needs nothing more.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why the drain could not be requested.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// Envoy's admin API did not answer.
    #[error("Envoy admin at {addr}: {source}")]
    Io {
        /// Admin address.
        addr: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// Envoy answered with an error status.
    #[error("Envoy admin at {addr} answered {status} to {path}")]
    Status {
        /// Admin address.
        addr: String,
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
    },
}

/// How the wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// No active requests were left.
    Idle,
    /// The timeout passed with this many requests still active.
    TimedOut(u64),
}

/// Starts Envoy's graceful drain and waits for its requests to finish.
pub async fn drain_envoy(addr: &str, timeout: Duration) -> Result<Drained, DrainError> {
    request(addr, "POST", "/healthcheck/fail").await?;
    request(addr, "POST", "/drain_listeners?graceful&inboundonly").await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let active = active_requests(addr).await?;
        if active == 0 {
            return Ok(Drained::Idle);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Drained::TimedOut(active));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Active downstream requests on every HTTP listener except the admin API itself.
async fn active_requests(addr: &str) -> Result<u64, DrainError> {
    let body = request(addr, "GET", "/stats?filter=downstream_rq_active$").await?;
    Ok(sum_active(&body))
}

/// Sums `http.<prefix>.downstream_rq_active: N` lines, leaving out the admin listener.
pub fn sum_active(stats: &str) -> u64 {
    stats
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| k.starts_with("http.") && k.ends_with(".downstream_rq_active"))
        .filter(|(k, _)| *k != "http.admin.downstream_rq_active")
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

async fn request(addr: &str, method: &str, path: &str) -> Result<String, DrainError> {
    let io = |source| DrainError::Io {
        addr: addr.to_owned(),
        source,
    };
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(4 << 20).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
        .map_err(io)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    if status != 200 {
        return Err(DrainError::Status {
            addr: addr.to_owned(),
            path: path.to_owned(),
            status,
        });
    }
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_listener_requests_but_not_the_admin_api() {
        let stats = "http.admin.downstream_rq_active: 1\n\
                     http.tollgate_ingress.downstream_rq_active: 3\n\
                     http.probes.downstream_rq_active: 1\n\
                     cluster.alpha.upstream_rq_active: 9\n";
        assert_eq!(sum_active(stats), 4);
        assert_eq!(sum_active(""), 0);
    }
}
