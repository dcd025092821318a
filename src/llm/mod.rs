//! LLM API shapes: which endpoint a request targets and what its body says.
//!
//! A request body is read once into a view ([`openai::RequestView`], from [`json::scan`]);
//! only the fields tollgate acts on are typed, everything else stays as the client sent it,
//! byte for byte, because changes are edits rendered as splices ([`body`], [`edit`]).

pub mod body;
pub mod edit;
pub mod error_envelope;
pub mod include_usage;
pub mod json;
pub mod openai;
pub mod sse;
pub mod usage;

/// An API endpoint tollgate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/messages` (Anthropic Messages), for anthropic-kind backends.
    Messages,
    /// `GET /v1/models`, answered by tollgate from the catalogue.
    Models,
}

/// Result of matching a method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    /// A supported endpoint with the right method.
    Endpoint(Endpoint),
    /// A known path with the wrong method; the value is the `allow` header.
    WrongMethod(&'static str),
    /// Not an API path tollgate serves.
    Unknown,
}

impl Endpoint {
    /// Matches `:method` and `:path` (query ignored).
    pub fn classify(method: &str, path: &str) -> PathMatch {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let path = path.strip_suffix('/').unwrap_or(path);
        let (endpoint, allow) = match path {
            "/v1/chat/completions" => (Endpoint::ChatCompletions, "POST"),
            "/v1/embeddings" => (Endpoint::Embeddings, "POST"),
            "/v1/messages" => (Endpoint::Messages, "POST"),
            "/v1/models" => (Endpoint::Models, "GET"),
            _ => return PathMatch::Unknown,
        };
        if method == allow || (allow == "GET" && method == "HEAD") {
            PathMatch::Endpoint(endpoint)
        } else {
            PathMatch::WrongMethod(allow)
        }
    }

    /// Path of this endpoint below a backend's base path.
    pub fn upstream_suffix(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Messages => "/messages",
            Endpoint::Models => "/models",
        }
    }

    /// Whether the endpoint carries a JSON body that routing reads.
    pub fn has_body(self) -> bool {
        !matches!(self, Endpoint::Models)
    }

    /// Short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::Models => "models",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths_and_methods() {
        use PathMatch::{Unknown, WrongMethod};
        let ep = |e| PathMatch::Endpoint(e);
        assert_eq!(
            Endpoint::classify("POST", "/v1/chat/completions"),
            ep(Endpoint::ChatCompletions)
        );
        assert_eq!(
            Endpoint::classify("POST", "/v1/chat/completions/?x=1"),
            ep(Endpoint::ChatCompletions)
        );
        assert_eq!(
            Endpoint::classify("GET", "/v1/chat/completions"),
            WrongMethod("POST")
        );
        assert_eq!(
            Endpoint::classify("GET", "/v1/models"),
            ep(Endpoint::Models)
        );
        assert_eq!(Endpoint::classify("POST", "/v1/models"), WrongMethod("GET"));
        assert_eq!(
            Endpoint::classify("POST", "/v1/messages"),
            ep(Endpoint::Messages)
        );
        assert_eq!(Endpoint::classify("POST", "/v1/completions"), Unknown);
        assert_eq!(Endpoint::classify("POST", "/v1/chat/completionsX"), Unknown);
        assert_eq!(Endpoint::classify("GET", "/"), Unknown);
    }
}
