//! Access control: who is calling (consumer, team) and what they may use.
//!
//! Pure decisions over the compiled [`Access`] table; the stage in `stages/access.rs` calls
//! them at request headers (identity) and again after routing (model and backend allowed?).
//!
//! Invariants:
//! - API keys are never stored: the config holds SHA-256 digests (`sha256:<64 hex>`), and a
//!   presented key is hashed once and looked up by digest. A map lookup on a digest reveals
//!   nothing useful about the key, so no constant-time comparison is needed.
//! - A presented key is never logged, echoed or forwarded (the route stage removes client
//!   credential headers before the request goes upstream).
//! - Identity headers are trusted only in `identity_headers` mode: an earlier Envoy filter
//!   (e.g. jwt_authn `claim_to_headers`) must set them and overwrite client-sent copies.
//!
//! Known limits: SHA-256 without a salt is fine for high-entropy generated keys (what API
//! keys are), not for human passwords.

use crate::glob::Glob;
use crate::secret::Secret;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use thiserror::Error;

/// Prefix of a stored key digest.
pub const HASH_PREFIX: &str = "sha256:";

/// How consumers are identified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// No authentication: every request is anonymous (no consumer, no team).
    #[default]
    Open,
    /// `Authorization: Bearer <key>` or `x-api-key: <key>`, looked up by digest.
    ApiKey,
    /// Headers set by a trusted earlier Envoy filter.
    IdentityHeaders {
        /// Header naming the consumer.
        consumer: String,
        /// Header naming the team (optional).
        team: Option<String>,
    },
}

/// A team: shared restrictions and an optional routing pin.
#[derive(Debug, Clone)]
pub struct Team {
    /// Name.
    pub name: String,
    /// Allowed models (public or requested names); `None` = all.
    pub models: Option<Vec<Glob>>,
    /// Allowed backends; `None` = all.
    pub backends: Option<Vec<String>>,
    /// Every request of the team goes to this backend.
    pub pin: Option<Pin>,
}

/// Forced routing for a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Backend name.
    pub backend: String,
    /// Model sent upstream; `None` keeps the requested model.
    pub model: Option<String>,
}

/// A consumer (an application or a person).
#[derive(Debug, Clone)]
pub struct Consumer {
    /// Name.
    pub name: String,
    /// Index into [`Access::teams`].
    pub team: Option<usize>,
    /// Allowed models; `None` = all.
    pub models: Option<Vec<Glob>>,
    /// Allowed backends; `None` = all.
    pub backends: Option<Vec<String>>,
}

/// The compiled access table.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Identification mode.
    pub mode: Mode,
    /// Consumers.
    pub consumers: Vec<Consumer>,
    /// Teams.
    pub teams: Vec<Team>,
    /// Key digest → consumer index.
    pub keys: HashMap<[u8; 32], usize>,
    /// Consumer used when a request carries no credential (`None`: 401).
    pub anonymous: Option<usize>,
}

/// Who is calling, in plain words (safe for logs, metrics and metadata: configured names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Consumer name.
    pub consumer: String,
    /// Team name.
    pub team: Option<String>,
    /// Index into [`Access::consumers`] when the consumer is configured.
    pub index: Option<usize>,
    /// Index into [`Access::teams`].
    pub team_index: Option<usize>,
}

/// Why a caller is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No credential at all.
    #[error(
        "you didn't provide an API key; send it as `Authorization: Bearer <key>` or `x-api-key: <key>`"
    )]
    MissingKey,
    /// A key that matches no consumer.
    #[error("incorrect API key provided")]
    UnknownKey,
    /// Identity headers missing or malformed.
    #[error("the request carries no valid identity ({0})")]
    MissingIdentity(&'static str),
    /// The identity header names a team that is not configured.
    #[error("unknown team {0:?}")]
    UnknownTeam(String),
    /// The model is not allowed for this consumer or team.
    #[error("consumer {consumer:?} is not allowed to use the model {model:?}{}", allowed_suffix(.allowed))]
    ModelNotAllowed {
        /// Consumer name.
        consumer: String,
        /// Requested model.
        model: String,
        /// Catalogue models this caller may use, for the message (never the others).
        allowed: Vec<String>,
    },
    /// The backend is not allowed for this consumer or team.
    #[error("consumer {consumer:?} is not allowed to use the backend {backend:?}")]
    BackendNotAllowed {
        /// Consumer name.
        consumer: String,
        /// Backend name.
        backend: String,
    },
}

/// Names the caller's own models when the list is short enough to read in a message.
fn allowed_suffix(allowed: &[String]) -> String {
    const MAX_LISTED: usize = 20;
    if allowed.is_empty() || allowed.len() > MAX_LISTED {
        String::new()
    } else {
        format!("; models you may use: {}", allowed.join(", "))
    }
}

/// `sha256:<hex>` of a key, as stored in the config (`tollgate hash-key`).
pub fn hash_key(key: &Secret) -> String {
    let digest = Sha256::digest(key.expose().as_bytes());
    let mut out = String::with_capacity(HASH_PREFIX.len() + 64);
    out.push_str(HASH_PREFIX);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Parses `sha256:<64 hex>` into a digest.
pub fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.trim().strip_prefix(HASH_PREFIX)?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// The key a client presented: `Authorization: Bearer <key>` wins over `x-api-key`.
pub fn presented_key<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Option<&'a str> {
    let bearer = authorization.and_then(|v| {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer
        .or(x_api_key.map(str::trim))
        .filter(|k| !k.is_empty())
}

impl Access {
    /// Whether requests are authenticated at all.
    pub fn enabled(&self) -> bool {
        self.mode != Mode::Open
    }

    fn identity_of(&self, index: usize) -> Identity {
        let c = &self.consumers[index];
        Identity {
            consumer: c.name.clone(),
            team: c.team.map(|t| self.teams[t].name.clone()),
            index: Some(index),
            team_index: c.team,
        }
    }

    /// Identifies the caller from request headers (`get` looks a lower-case name up).
    /// `Ok(None)` in open mode.
    pub fn identify<'h>(
        &self,
        get: impl Fn(&str) -> Option<&'h str>,
    ) -> Result<Option<Identity>, AuthError> {
        match &self.mode {
            Mode::Open => Ok(None),
            Mode::ApiKey => {
                let Some(key) = presented_key(get("authorization"), get("x-api-key")) else {
                    return match self.anonymous {
                        Some(i) => Ok(Some(self.identity_of(i))),
                        None => Err(AuthError::MissingKey),
                    };
                };
                let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
                match self.keys.get(&digest) {
                    Some(&i) => Ok(Some(self.identity_of(i))),
                    None => Err(AuthError::UnknownKey),
                }
            }
            Mode::IdentityHeaders { consumer, team } => {
                let name = get(consumer)
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .ok_or(AuthError::MissingIdentity("no consumer header"))?;
                if name.len() > 256 || name.chars().any(char::is_control) {
                    return Err(AuthError::MissingIdentity("malformed consumer header"));
                }
                if let Some(i) = self.consumers.iter().position(|c| c.name == name) {
                    return Ok(Some(self.identity_of(i)));
                }
                // An identity the IdP vouches for but the config does not list: only its
                // team's rules apply.
                let team_index = match team.as_deref().and_then(&get).map(str::trim) {
                    None | Some("") => None,
                    Some(t) => Some(
                        self.teams
                            .iter()
                            .position(|x| x.name == t)
                            .ok_or_else(|| AuthError::UnknownTeam(t.chars().take(64).collect()))?,
                    ),
                };
                Ok(Some(Identity {
                    consumer: name.to_owned(),
                    team: team_index.map(|t| self.teams[t].name.clone()),
                    index: None,
                    team_index,
                }))
            }
        }
    }

    /// The team pin for this caller, if any.
    pub fn pin(&self, who: &Identity) -> Option<&Pin> {
        who.team_index.and_then(|t| self.teams[t].pin.as_ref())
    }

    /// Whether the caller may use `model` on `backend`. `model_names` are every name the
    /// model actually sent is known by (its catalogue name and aliases, or the upstream
    /// name of an unlisted model), never merely what the client typed: the stage resolves
    /// them from the routing decision (see [`crate::routing::Table::destinations`]).
    pub fn authorize(
        &self,
        who: &Identity,
        model_names: &[&str],
        backend: &str,
    ) -> Result<(), AuthError> {
        let consumer = who.index.map(|i| &self.consumers[i]);
        let team = who.team_index.map(|i| &self.teams[i]);
        let model_ok = |allowed: Option<&Vec<Glob>>| match allowed {
            None => true,
            Some(globs) => model_names
                .iter()
                .any(|m| !m.is_empty() && globs.iter().any(|g| g.matches(m))),
        };
        let shown_model = || {
            model_names
                .iter()
                .find(|m| !m.is_empty())
                .map(|m| m.chars().take(128).collect())
                .unwrap_or_default()
        };
        if !model_ok(consumer.and_then(|c| c.models.as_ref()))
            || !model_ok(team.and_then(|t| t.models.as_ref()))
        {
            return Err(AuthError::ModelNotAllowed {
                consumer: who.consumer.clone(),
                model: shown_model(),
                allowed: Vec::new(),
            });
        }
        let backend_ok = |allowed: Option<&Vec<String>>| {
            allowed.is_none_or(|list| list.iter().any(|b| b == backend))
        };
        if !backend_ok(consumer.and_then(|c| c.backends.as_ref()))
            || !backend_ok(team.and_then(|t| t.backends.as_ref()))
        {
            return Err(AuthError::BackendNotAllowed {
                consumer: who.consumer.clone(),
                backend: backend.to_owned(),
            });
        }
        Ok(())
    }

    /// Whether the caller's consumer and team backend lists both allow `backend`.
    pub fn may_use_backend(&self, who: &Identity, backend: &str) -> bool {
        let allows =
            |list: Option<&Vec<String>>| list.is_none_or(|l| l.iter().any(|b| b == backend));
        allows(who.index.and_then(|i| self.consumers[i].backends.as_ref()))
            && allows(who.team_index.and_then(|i| self.teams[i].backends.as_ref()))
    }

    /// Whether the caller may use a catalogue entry (by its name or any alias, as the
    /// access stage judges it) on `backend`: what `GET /v1/models` and error messages list.
    pub fn lists_entry(
        &self,
        who: Option<&Identity>,
        model: &crate::routing::Model,
        backend: &str,
    ) -> bool {
        let names: Vec<&str> = std::iter::once(model.name.as_str())
            .chain(model.aliases.iter().map(String::as_str))
            .collect();
        who.is_none_or(|w| self.authorize(w, &names, backend).is_ok())
    }

    /// Whether a catalogue model should be listed to this caller in `GET /v1/models`.
    pub fn lists_model(&self, who: Option<&Identity>, name: &str, backend: &str) -> bool {
        who.is_none_or(|w| self.authorize(w, &[name], backend).is_ok())
    }
}

#[cfg(test)]
mod tests;
