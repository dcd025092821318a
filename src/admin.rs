//! Admin HTTP: `/healthz` (process alive), `/ready` (config loaded, gRPC serving, not
//! draining; the body also reports the limits store: `limits: memory|up|down`) and
//! `/metrics` (Prometheus text) and, only with `server.debug_state: true`, `/debug/state`
//! (JSON: open ext_proc streams, live runtime tasks, outstanding limit reservations — what
//! `make soak` checks returns to its baseline after load; the reservation sum scans every
//! key, so it is not a metric). Off by default: it is an unauthenticated, Redis-scanning
//! endpoint; and when on, it answers loopback peers only (404 to anyone else), so the
//! metrics Service, which forwards to this port, never reaches it.
//!
//! A Redis outage does not make the replica unready: with fail-open it keeps serving (the
//! body says `limits: down`), with fail-closed it answers 503 per request itself — taking
//! every replica out of the load balancer at once would turn a Redis outage into a total one.

use crate::limits::{Health, Limiter};
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Readiness flags flipped by the app.
#[derive(Default)]
pub struct Readiness {
    grpc_serving: AtomicBool,
    draining: AtomicBool,
    limiter: parking_lot::RwLock<Option<Arc<dyn Limiter>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.is_ready())
            .field("limits", &self.limits().label())
            .finish()
    }
}

impl Readiness {
    /// The gRPC listener is bound and serving.
    pub fn set_serving(&self) {
        self.grpc_serving.store(true, Ordering::SeqCst);
    }

    /// Shutdown started: stop taking new work.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Reports this store's health on `/ready`.
    pub fn set_limiter(&self, limiter: Arc<dyn Limiter>) {
        *self.limiter.write() = Some(limiter);
    }

    /// The limits store's health.
    pub fn limits(&self) -> Health {
        self.limiter
            .read()
            .as_ref()
            .map_or(Health::Local, |l| l.health())
    }

    /// Ready for traffic.
    pub fn is_ready(&self) -> bool {
        self.grpc_serving.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The admin router; `/debug/state` only when `debug_state` (404 otherwise).
pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>, debug_state: bool) -> Router {
    let r = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text));
    let r = if debug_state {
        r.route("/debug/state", get(self::debug_state))
    } else {
        r
    };
    r.with_state(AdminState { metrics, readiness })
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    let limits = s.readiness.limits();
    s.metrics.store_up(limits != Health::Down);
    let limits = limits.label();
    if s.readiness.is_ready() {
        (StatusCode::OK, format!("ready\nlimits: {limits}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\nlimits: {limits}\n"),
        )
    }
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    s.metrics.store_up(s.readiness.limits() != Health::Down);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn debug_state(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    State(s): State<AdminState>,
) -> axum::response::Response {
    if !peer.ip().is_loopback() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let limiter = s.readiness.limiter.read().clone();
    let outstanding = match limiter {
        Some(l) => match l.outstanding("").await {
            Ok(n) => serde_json::json!(n),
            Err(e) => serde_json::json!(format!("unavailable: {e}")),
        },
        None => serde_json::Value::Null,
    };
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    axum::Json(serde_json::json!({
        "streams_active": s.metrics.streams_active(),
        "runtime_alive_tasks": tasks,
        "limits_outstanding": outstanding,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::Request;
    use std::net::SocketAddr;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str, peer: &str) -> StatusCode {
        let peer: SocketAddr = peer.parse().unwrap_or_else(|_| unreachable!());
        let mut req = Request::get(path)
            .body(Body::empty())
            .unwrap_or_else(|_| unreachable!());
        req.extensions_mut().insert(ConnectInfo(peer));
        match router.oneshot(req).await {
            Ok(r) => r.status(),
            Err(e) => match e {},
        }
    }

    fn ready_router(debug_state: bool) -> Router {
        let readiness = Arc::new(Readiness::default());
        readiness.set_serving();
        router(Arc::new(Metrics::new()), readiness, debug_state)
    }

    #[tokio::test]
    async fn debug_state_is_off_by_default_and_loopback_only_when_on() {
        let off = ready_router(false);
        assert_eq!(
            get(off.clone(), "/debug/state", "127.0.0.1:5").await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(off.clone(), "/metrics", "10.1.2.3:5").await,
            StatusCode::OK
        );
        assert_eq!(get(off, "/ready", "10.1.2.3:5").await, StatusCode::OK);
        let on = ready_router(true);
        assert_eq!(
            get(on.clone(), "/debug/state", "127.0.0.1:5").await,
            StatusCode::OK
        );
        assert_eq!(
            get(on.clone(), "/debug/state", "[::1]:5").await,
            StatusCode::OK
        );
        // What the metrics Service forwards comes from a pod or node address.
        assert_eq!(
            get(on.clone(), "/debug/state", "10.1.2.3:5").await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(on, "/debug/state", "[fd00::1]:5").await,
            StatusCode::NOT_FOUND
        );
    }
}
