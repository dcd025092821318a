//! The ext_proc gRPC endpoint with codec buffers sized for ext_proc messages.
//!
//! Same routing and behaviour as envoy-types' generated `ExternalProcessorServer` (one method,
//! `/envoy.service.ext_proc.v3.ExternalProcessor/Process`, anything else `UNIMPLEMENTED`),
//! but the prost codec starts each stream's encode and decode buffers at 1 KiB instead of
//! tonic's 8 KiB: headers messages and replies are a few hundred bytes, buffers still grow
//! for big bodies, and an open stream held 16 KiB of empty buffer otherwise — half of the
//! 32 KiB-per-open-stream budget (`make bench`, held streams).

use crate::proto::{ExternalProcessor, ProcessingRequest, ProcessingResponse};
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The one method Envoy calls.
pub const PROCESS_PATH: &str = "/envoy.service.ext_proc.v3.ExternalProcessor/Process";

/// Initial codec buffer; tonic grows it by this much at a time when a message is larger.
const BUFFER: usize = 1024;
/// Bytes encoded before the encoder yields (tonic's default).
const YIELD: usize = 32 * 1024;

/// Prost codec with small initial buffers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmallBufferCodec;

impl Codec for SmallBufferCodec {
    type Encode = ProcessingResponse;
    type Decode = ProcessingRequest;
    type Encoder = ProstEncoder<ProcessingResponse>;
    type Decoder = ProstDecoder<ProcessingRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(BUFFER, YIELD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(BUFFER, YIELD))
    }
}

/// The gRPC service for [`tonic::transport::Server::add_service`].
#[derive(Debug)]
pub struct ExtProcServer<T> {
    inner: Arc<T>,
    max_decoding: usize,
    max_encoding: usize,
}

impl<T> Clone for ExtProcServer<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            max_decoding: self.max_decoding,
            max_encoding: self.max_encoding,
        }
    }
}

impl<T: ExternalProcessor> ExtProcServer<T> {
    /// Serves `inner`, refusing messages over the given sizes.
    pub fn new(inner: T, max_decoding: usize, max_encoding: usize) -> Self {
        Self {
            inner: Arc::new(inner),
            max_decoding,
            max_encoding,
        }
    }
}

impl<T> tonic::server::NamedService for ExtProcServer<T> {
    const NAME: &'static str = "envoy.service.ext_proc.v3.ExternalProcessor";
}

struct ProcessSvc<T>(Arc<T>);

impl<T: ExternalProcessor> tonic::server::StreamingService<ProcessingRequest> for ProcessSvc<T> {
    type Response = ProcessingResponse;
    type ResponseStream = T::ProcessStream;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;

    fn call(
        &mut self,
        request: tonic::Request<tonic::Streaming<ProcessingRequest>>,
    ) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.process(request).await })
    }
}

impl<T, B> Service<http::Request<B>> for ExtProcServer<T>
where
    T: ExternalProcessor,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != PROCESS_PATH {
            return Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    tonic::Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let svc = ProcessSvc(self.inner.clone());
        let (dec, enc) = (self.max_decoding, self.max_encoding);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(SmallBufferCodec)
                .apply_max_message_size_config(Some(dec), Some(enc));
            Ok(grpc.streaming(svc, req).await)
        })
    }
}
