//! Builders for ext_proc replies. Only the exchange uses them; stages speak
//! [`crate::stages::Mutations`], never protobuf.

use crate::error::LocalReply;
use crate::proto::*;
use crate::stages::Mutations;

/// Metadata namespace tollgate writes (list it in Envoy's `receiving_namespaces`).
pub const METADATA_NAMESPACE: &str = "io.tollgate";

/// Which message a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Request headers.
    RequestHeaders,
    /// Request body.
    RequestBody,
    /// Request trailers.
    RequestTrailers,
    /// Response headers.
    ResponseHeaders,
    /// Response body.
    ResponseBody,
    /// Response trailers.
    ResponseTrailers,
}

impl Kind {
    /// Phase label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Kind::RequestHeaders => "request_headers",
            Kind::RequestBody => "request_body",
            Kind::RequestTrailers => "request_trailers",
            Kind::ResponseHeaders => "response_headers",
            Kind::ResponseBody => "response_body",
            Kind::ResponseTrailers => "response_trailers",
        }
    }

    /// The kind of an inbound message.
    pub fn of(req: &processing_request::Request) -> Kind {
        use processing_request::Request as R;
        match req {
            R::RequestHeaders(_) => Kind::RequestHeaders,
            R::RequestBody(_) => Kind::RequestBody,
            R::RequestTrailers(_) => Kind::RequestTrailers,
            R::ResponseHeaders(_) => Kind::ResponseHeaders,
            R::ResponseBody(_) => Kind::ResponseBody,
            R::ResponseTrailers(_) => Kind::ResponseTrailers,
        }
    }
}

/// "Continue", applying `m` (the part of it that this kind of reply can carry).
pub fn proceed(kind: Kind, m: Mutations) -> ProcessingResponse {
    use processing_response::Response as R;
    let header_mutation = header_mutation(m.set, m.remove);
    let dynamic_metadata = metadata(&m.metadata, &m.metadata_numbers);
    let mode_override = m.stream_response_body.then(|| ProcessingMode {
        response_body_mode: BodySendMode::Streamed as i32,
        ..Default::default()
    });
    let common = CommonResponse {
        status: common_response::ResponseStatus::Continue as i32,
        header_mutation,
        body_mutation: m.body.map(|b| BodyMutation {
            mutation: Some(body_mutation::Mutation::Body(b)),
        }),
        trailers: None,
        clear_route_cache: m.clear_route_cache,
    };
    let headers = || HeadersResponse {
        response: Some(common.clone()),
    };
    let body = || BodyResponse {
        response: Some(common.clone()),
    };
    let response = match kind {
        Kind::RequestHeaders => R::RequestHeaders(headers()),
        Kind::ResponseHeaders => R::ResponseHeaders(headers()),
        Kind::RequestBody => R::RequestBody(body()),
        Kind::ResponseBody => R::ResponseBody(body()),
        Kind::RequestTrailers => R::RequestTrailers(TrailersResponse {
            header_mutation: common.header_mutation.clone(),
        }),
        Kind::ResponseTrailers => R::ResponseTrailers(TrailersResponse {
            header_mutation: common.header_mutation.clone(),
        }),
    };
    ProcessingResponse {
        response: Some(response),
        dynamic_metadata,
        mode_override,
        ..Default::default()
    }
}

/// An immediate reply with a JSON body.
pub fn immediate_json(
    status: u16,
    body: Vec<u8>,
    request_id: &str,
    extra: &[(&'static str, String)],
    details: &str,
) -> ProcessingResponse {
    let mut set: Vec<(String, Vec<u8>)> = vec![
        ("content-type".into(), b"application/json".to_vec()),
        ("x-request-id".into(), request_id.as_bytes().to_vec()),
    ];
    set.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())),
    );
    ProcessingResponse {
        response: Some(processing_response::Response::ImmediateResponse(
            ImmediateResponse {
                status: Some(HttpStatus {
                    code: i32::from(status),
                }),
                headers: header_mutation(set, Vec::new()),
                body,
                grpc_status: None,
                details: details.to_owned(),
            },
        )),
        ..Default::default()
    }
}

/// An immediate error reply in the OpenAI envelope, or in Anthropic's shape for clients of
/// the Anthropic-native front door.
pub fn refuse(reply: &LocalReply, request_id: &str, anthropic: bool) -> ProcessingResponse {
    immediate_json(
        reply.status,
        if anthropic {
            reply.anthropic_body()
        } else {
            reply.body()
        },
        request_id,
        &reply.headers,
        &format!("tollgate_{}", reply.code),
    )
}

fn header_mutation(
    set: impl IntoIterator<Item = (String, Vec<u8>)>,
    remove: Vec<String>,
) -> Option<HeaderMutation> {
    let set_headers: Vec<HeaderValueOption> = set
        .into_iter()
        .map(|(key, raw_value)| HeaderValueOption {
            header: Some(HeaderValue {
                key,
                value: String::new(),
                raw_value,
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        })
        .collect();
    (!set_headers.is_empty() || !remove.is_empty()).then_some(HeaderMutation {
        set_headers,
        remove_headers: remove,
    })
}

fn metadata(entries: &[(&'static str, String)], numbers: &[(&'static str, f64)]) -> Option<Struct> {
    if entries.is_empty() && numbers.is_empty() {
        return None;
    }
    let strings = entries.iter().map(|(k, v)| {
        (
            (*k).to_owned(),
            Value {
                kind: Some(ValueKind::StringValue(v.clone())),
            },
        )
    });
    let nums = numbers.iter().map(|(k, v)| {
        (
            (*k).to_owned(),
            Value {
                kind: Some(ValueKind::NumberValue(*v)),
            },
        )
    });
    let fields = strings.chain(nums).collect();
    let inner = Value {
        kind: Some(ValueKind::StructValue(Struct { fields })),
    };
    Some(Struct {
        fields: [(METADATA_NAMESPACE.to_owned(), inner)]
            .into_iter()
            .collect(),
    })
}
