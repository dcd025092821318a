//! The floor of the design: an ext_proc server that answers every message at once with a
//! "continue" of the matching kind and no mutation, in the processing modes Envoy's filter
//! announces (tollgate's own: headers SEND, request body BUFFERED, response headers SEND,
//! response body NONE). Envoy + this server costs what any ext_proc gateway costs before it
//! does any work; `make bench` compares tollgate against it.
//!
//! `--stream-sse` mirrors tollgate's `mode_override` for SSE responses when guard or usage
//! read them (response body STREAMED): `make bench`'s `phases` scenario measures what that
//! costs Envoy per event. TCP_NODELAY is set on every accepted connection (`--nagle` leaves it
//! off, only to measure the difference).

use clap::Parser;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{
    ProcessingMode, processing_mode::BodySendMode,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeadersResponse, ProcessingRequest, ProcessingResponse,
    TrailersResponse,
    external_processor_server::{ExternalProcessor, ExternalProcessorServer},
    processing_request::Request as In,
    processing_response::Response as Out,
};
use futures::StreamExt;
use std::net::SocketAddr;
use std::pin::Pin;
use tonic::{Request, Response, Status, Streaming};

#[derive(Parser)]
#[command(about = "Empty ext_proc server: answers every message with no mutation")]
struct Args {
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Switch SSE response bodies to STREAMED (as tollgate does when it reads them).
    #[arg(long)]
    stream_sse: bool,
    /// Leave Nagle's algorithm on (no TCP_NODELAY): only to measure what it costs.
    #[arg(long)]
    nagle: bool,
}

#[derive(Clone)]
struct Null {
    stream_sse: bool,
}

fn answer(req: ProcessingRequest, stream_sse: bool) -> Option<ProcessingResponse> {
    let common = || Some(CommonResponse::default());
    let mut mode_override = None;
    let response = match req.request? {
        In::RequestHeaders(_) => Out::RequestHeaders(HeadersResponse { response: common() }),
        In::RequestBody(_) => Out::RequestBody(BodyResponse { response: common() }),
        In::RequestTrailers(_) => Out::RequestTrailers(TrailersResponse::default()),
        In::ResponseHeaders(h) => {
            let sse = h.headers.as_ref().is_some_and(|m| {
                m.headers.iter().any(|hv| {
                    hv.key == "content-type"
                        && (hv.value.starts_with("text/event-stream")
                            || hv.raw_value.starts_with(b"text/event-stream"))
                })
            });
            if stream_sse && sse && !h.end_of_stream {
                mode_override = Some(ProcessingMode {
                    response_body_mode: BodySendMode::Streamed as i32,
                    ..Default::default()
                });
            }
            Out::ResponseHeaders(HeadersResponse { response: common() })
        }
        In::ResponseBody(_) => Out::ResponseBody(BodyResponse { response: common() }),
        In::ResponseTrailers(_) => Out::ResponseTrailers(TrailersResponse::default()),
    };
    Some(ProcessingResponse {
        response: Some(response),
        mode_override,
        ..Default::default()
    })
}

type Replies = Pin<Box<dyn futures::Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for Null {
    type ProcessStream = Replies;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let stream_sse = self.stream_sse;
        let replies =
            futures::stream::unfold(request.into_inner(), move |mut inbound| async move {
                match inbound.message().await {
                    Ok(Some(msg)) => match answer(msg, stream_sse) {
                        Some(r) => Some((Ok(r), inbound)),
                        None => Some((Err(Status::invalid_argument("empty message")), inbound)),
                    },
                    _ => None,
                }
            });
        Ok(Response::new(Box::pin(replies)))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("null-extproc listening on {}", listener.local_addr()?);
    // TCP_NODELAY unless told otherwise: with Nagle on, a small answer written while the previous
    // one is unacknowledged waits for Envoy's delayed ACK (up to 40 ms), and a floor that stalls
    // like that would flatter every latency compared with it.
    let nodelay = !args.nagle;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |conn| {
        conn.inspect(|tcp| {
            let _ = tcp.set_nodelay(nodelay);
        })
    });
    let svc = ExternalProcessorServer::new(Null {
        stream_sse: args.stream_sse,
    });
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
