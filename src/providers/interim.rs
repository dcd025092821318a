//! INTERIM — replaced at merge by the `issue-5-anthropic` branch's `providers::prepare`.
//!
//! A minimal `prepare` for the only backend kind on this branch (`openai`, passthrough):
//! path, credential, authority and model rename. It exists so the fallback chain's
//! upstream-level filter can call the seam's signature today; the providers branch owns
//! the real dispatcher (per-kind translation, signing). Delete this file and its
//! `pub use` in `providers/mod.rs` when merging that branch.

use super::{Outbound, Prepared};
use crate::llm::edit::BodyEdits;
use crate::llm::openai;
use crate::routing::{Backend, BackendKind};
use thiserror::Error;

/// Why a request cannot be prepared for a backend.
#[derive(Debug, Error)]
pub enum ProviderError {
    /// The body could not be read or edited.
    #[error("cannot prepare the request body: {0}")]
    Body(String),
}

/// The upstream request for `backend` (see the module doc: interim, passthrough only).
pub fn prepare(backend: &Backend, out: &Outbound<'_>) -> Result<Prepared, ProviderError> {
    match backend.kind {
        BackendKind::Openai => {}
    }
    let mut p = Prepared {
        path: format!(
            "{}{}{}",
            backend.base_path,
            out.endpoint.upstream_suffix(),
            out.query
        ),
        ..Prepared::default()
    };
    if let Some(a) = &backend.authority {
        p.set.push((":authority".into(), a.clone().into_bytes()));
    }
    if let Some(c) = &backend.credential {
        p.set
            .push((c.header.clone(), c.value.expose().as_bytes().to_vec()));
    }
    let view = openai::parse(out.body).map_err(|e| ProviderError::Body(e.to_string()))?;
    if view.model.as_ref().map(|m| m.value.as_str()) != Some(out.upstream_model)
        && !out.upstream_model.is_empty()
    {
        let mut edits = BodyEdits::default();
        view.set_model(out.upstream_model, &mut edits);
        let body = edits
            .apply(out.body)
            .map_err(|e| ProviderError::Body(e.to_string()))?;
        p.body = Some(body);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Credential;
    use crate::secret::Secret;

    #[test]
    fn path_credential_and_model_rename() {
        let b = Backend {
            name: "beta".into(),
            kind: BackendKind::Openai,
            base_path: "/api/v1".into(),
            envoy_route: "beta".into(),
            authority: Some("api.example.com".into()),
            credential: Some(Credential {
                header: "authorization".into(),
                value: Secret::new("Bearer k".into()),
            }),
        };
        let body = br#"{"model":"echo","messages":[]}"#;
        let out = Outbound {
            endpoint: crate::llm::Endpoint::ChatCompletions,
            body,
            upstream_model: "beta-large",
            stream: false,
            query: "?x=1",
            now: std::time::SystemTime::UNIX_EPOCH,
        };
        let p = prepare(&b, &out).unwrap();
        assert_eq!(p.path, "/api/v1/chat/completions?x=1");
        assert!(p.set.contains(&("authorization".into(), b"Bearer k".to_vec())));
        assert!(p.set.contains(&(":authority".into(), b"api.example.com".to_vec())));
        let v: serde_json::Value = serde_json::from_slice(p.body.as_deref().unwrap()).unwrap();
        assert_eq!(v["model"], "beta-large");
        // Same model: body unchanged.
        let same = Outbound {
            upstream_model: "echo",
            ..out
        };
        assert_eq!(prepare(&b, &same).unwrap().body, None);
    }
}
