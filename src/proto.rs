//! The only module that names envoy-types paths; everything else imports from here.

pub use envoy_types::pb::envoy::config::core::v3::{
    HeaderMap, HeaderValue, HeaderValueOption, Metadata, header_value_option::HeaderAppendAction,
};
pub use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{
    ProcessingMode, processing_mode::BodySendMode, processing_mode::HeaderSendMode,
};
pub use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody,
    HttpHeaders, HttpTrailers, ImmediateResponse, ProcessingRequest, ProcessingResponse,
    ProtocolConfiguration, TrailersResponse, body_mutation, common_response,
    external_processor_client::ExternalProcessorClient,
    external_processor_server::{ExternalProcessor, ExternalProcessorServer},
    processing_request, processing_response,
};
pub use envoy_types::pb::envoy::r#type::v3::HttpStatus;
pub use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind as ValueKind};
