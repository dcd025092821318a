//! The ext_proc gRPC service: one [`exchange::Exchange`] per stream.
//!
//! The response stream is an `unfold` over the inbound messages that owns the exchange,
//! so hyper's per-stream task drives it, and when Envoy cancels or resets the stream the
//! exchange is dropped with it — nothing to leak, no extra task or channel per request.
//!
//! A body message of [`OFFLOAD_BYTES`] or more, and the last chunk of a response of that
//! size in all (where a buffered answer is masked whole), are answered on the blocking pool
//! instead: masking is
//! linear in the body, but a 4 MiB body costs tens of milliseconds, and on the
//! current-thread runtime (one CPU) that time would stall every other stream and the admin
//! health endpoint. Other messages (streamed chunks) stay on the reactor, where bounded
//! work per message keeps each one cheap.

pub mod attempt;
pub mod endpoint;
pub mod exchange;
pub mod grpc;
pub mod listen;
pub mod reply;
pub mod token;

use crate::config::Snapshot;
use crate::metrics::Metrics;
use crate::observe::{Discard, RecordSink};
use crate::proto::{ExternalProcessor, ProcessingRequest, ProcessingResponse};
use crate::stages::limits::Services;
use arc_swap::ArcSwap;
use exchange::Exchange;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// Body messages at least this large are processed off the reactor.
pub const OFFLOAD_BYTES: usize = 256 * 1024;

/// Whether answering `msg` may mask a large body: a large body message, or the last chunk of
/// a large response (`response_seen`: its bytes before this message), where the guard masks
/// a whole buffered (non-streamed) answer at once. Small answers stay on the reactor: a hop to
/// the blocking pool costs more than masking them.
fn heavy(msg: &ProcessingRequest, response_seen: usize) -> bool {
    use crate::proto::processing_request::Request as R;
    match &msg.request {
        Some(R::RequestBody(b)) => b.body.len() >= OFFLOAD_BYTES,
        Some(R::ResponseBody(b)) => {
            b.body.len() >= OFFLOAD_BYTES
                || (b.end_of_stream && response_seen.saturating_add(b.body.len()) >= OFFLOAD_BYTES)
        }
        _ => false,
    }
}

/// Response body bytes in `msg` (0 for other messages).
fn response_bytes(msg: &ProcessingRequest) -> usize {
    match &msg.request {
        Some(crate::proto::processing_request::Request::ResponseBody(b)) => b.body.len(),
        _ => 0,
    }
}

/// The ext_proc service.
#[derive(Clone)]
pub struct ExtProc {
    store: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    svc: Arc<Services>,
    sink: Arc<dyn RecordSink>,
    caller: Arc<endpoint::CallerCheck>,
    token_key: Arc<token::TokenKey>,
}

impl ExtProc {
    /// Serves requests with the snapshot current when each stream starts; `svc` holds the
    /// limits store. Finished-request records are discarded until [`ExtProc::with_sink`]
    /// names a sink.
    pub fn new(store: Arc<ArcSwap<Snapshot>>, metrics: Arc<Metrics>, svc: Arc<Services>) -> Self {
        Self {
            store,
            metrics,
            svc,
            sink: Arc::new(Discard),
            caller: Arc::new(endpoint::CallerCheck::open()),
            token_key: Arc::new(token::TokenKey::random()),
        }
    }

    /// Requires the per-deployment secret of `auth` on every stream, and keys attempt tokens
    /// with it (the same on every replica). Without a secret: every caller passes (mTLS or a
    /// local listener guards the endpoint) and the token key stays per-process random.
    pub fn with_grpc_auth(mut self, auth: &crate::config::GrpcAuth) -> Self {
        if let Some(secret) = &auth.secret {
            self.caller = Arc::new(endpoint::CallerCheck::new(secret));
            self.token_key = Arc::new(token::TokenKey::from_secret(secret.expose().as_bytes()));
        }
        self
    }

    /// Sends each finished request's record to `sink` (audit, spans, GenAI metrics).
    pub fn with_sink(mut self, sink: Arc<dyn RecordSink>) -> Self {
        self.sink = sink;
        self
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

impl ExtProc {
    /// The stream of the upstream-level filter (one fallback-chain attempt).
    fn attempt_stream(&self, inbound: Streaming<ProcessingRequest>) -> ReplyStream {
        let exchange = attempt::Attempt::new(
            self.store.load_full(),
            self.svc.clone(),
            self.token_key.clone(),
            self.metrics.clone(),
        );
        let metrics = self.metrics.clone();
        Box::pin(futures::stream::unfold(
            Some((inbound, exchange)),
            move |state| {
                let metrics = metrics.clone();
                async move {
                    let (mut inbound, mut exchange) = state?;
                    match inbound.message().await {
                        Ok(Some(msg)) => {
                            let started = Instant::now();
                            let phase = msg.request.as_ref().map(reply::Kind::of);
                            let reply = exchange
                                .log_span()
                                .clone()
                                .in_scope(|| exchange.on_message(msg));
                            if let Some(p) = phase {
                                metrics.message_handled(p.label(), started.elapsed());
                            }
                            Some((Ok(reply), Some((inbound, exchange))))
                        }
                        Ok(None) | Err(_) => None,
                    }
                }
            },
        ))
    }
}

#[tonic::async_trait]
impl ExternalProcessor for ExtProc {
    type ProcessStream = ReplyStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        // Before anything is read: a caller without the secret gets no stream at all.
        let presented = request
            .metadata()
            .get(endpoint::SECRET_METADATA_KEY)
            .map(|v| v.as_bytes());
        if let Err(e) = self.caller.check(presented) {
            self.metrics.endpoint_refused(e.label());
            tracing::warn!(error = %e, "ext_proc stream refused");
            return Err(Status::unauthenticated(e.to_string()));
        }
        let upstream_level = request
            .metadata()
            .get(attempt::FILTER_METADATA_KEY)
            .is_some_and(|v| v.as_bytes() == attempt::FILTER_UPSTREAM.as_bytes());
        let inbound = request.into_inner();
        if upstream_level {
            return Ok(Response::new(self.attempt_stream(inbound)));
        }
        let exchange = Exchange::new(
            self.store.load_full(),
            self.metrics.clone(),
            self.svc.clone(),
            self.sink.clone(),
        )
        .with_token_key(self.token_key.clone());
        let metrics = self.metrics.clone();
        let replies = futures::stream::unfold(Some((inbound, exchange, 0usize)), move |state| {
            let metrics = metrics.clone();
            async move {
                let (mut inbound, mut exchange, mut response_seen) = state?;
                match inbound.message().await {
                    Ok(Some(msg)) => {
                        let started = Instant::now();
                        let phase = msg.request.as_ref().map(reply::Kind::of);
                        // Log lines written while answering carry the request and trace ids.
                        let span = exchange.log_span().clone();
                        let is_heavy = heavy(&msg, response_seen);
                        response_seen = response_seen.saturating_add(response_bytes(&msg));
                        let answered = if is_heavy {
                            let rt = tokio::runtime::Handle::current();
                            let job = tokio::task::spawn_blocking(move || {
                                let r = rt.block_on(exchange.on_message(msg).instrument(span));
                                (exchange, r)
                            });
                            match job.await {
                                Ok((ex, r)) => {
                                    exchange = ex;
                                    r
                                }
                                // The job panicked or the runtime is shutting down.
                                Err(_) => return None,
                            }
                        } else {
                            exchange.on_message(msg).instrument(span).await
                        };
                        match answered {
                            Ok(reply) => {
                                if let Some(p) = phase {
                                    metrics.message_handled(p.label(), started.elapsed());
                                }
                                Some((Ok(reply), Some((inbound, exchange, response_seen))))
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "ext_proc protocol error; closing the stream");
                                Some((Err(Status::invalid_argument(e.to_string())), None))
                            }
                        }
                    }
                    // Envoy closed its side: the request is complete.
                    Ok(None) => None,
                    Err(status) => {
                        tracing::debug!(code = ?status.code(), "ext_proc stream ended by Envoy: {}", status.message());
                        None
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::HttpBody;
    use crate::proto::processing_request::Request as In;

    fn body(request: bool, len: usize, end_of_stream: bool) -> ProcessingRequest {
        let b = HttpBody {
            body: vec![b':'; len],
            end_of_stream,
            ..Default::default()
        };
        ProcessingRequest {
            request: Some(if request {
                In::RequestBody(b)
            } else {
                In::ResponseBody(b)
            }),
            ..Default::default()
        }
    }

    #[test]
    fn large_bodies_and_a_large_responses_last_chunk_leave_the_reactor() {
        assert!(heavy(&body(true, OFFLOAD_BYTES, true), 0));
        assert!(!heavy(&body(true, OFFLOAD_BYTES - 1, true), 0));
        assert!(heavy(&body(false, OFFLOAD_BYTES, false), 0));
        // The last chunk of a large response may mask a whole buffered answer...
        assert!(heavy(&body(false, 10, true), OFFLOAD_BYTES - 10));
        // ...that of a small one stays on the reactor.
        assert!(!heavy(&body(false, 10, true), OFFLOAD_BYTES - 11));
        assert!(!heavy(&body(false, 10, true), 0));
        // Streamed chunks stay on the reactor.
        assert!(!heavy(&body(false, 10, false), OFFLOAD_BYTES));
        assert!(!heavy(&ProcessingRequest::default(), 0));
        assert_eq!(response_bytes(&body(false, 7, false)), 7);
        assert_eq!(response_bytes(&body(true, 7, false)), 0);
    }
}
