//! `tollgate route`: explains where a request would go, without a server.
//!
//! Builds the same [`RequestCtx`] the exchange would (path, headers, identity from an API
//! key, or a consumer/team named on the command line) and runs the route stage's own input
//! builder ([`crate::stages::route::explain`]), so the answer is the one the gateway gives —
//! except for the random draw of non-sticky splits (`--roll`) and the cooldown (`--cooling`),
//! which are inputs here. Output: a short, stable text report (golden-tested).

use crate::auth::Identity;
use crate::config::Snapshot;
use crate::error::StageError;
use crate::headers::Headers;
use crate::routing::health::Cooldown;
use crate::stages::{RequestCtx, access, route};
use std::fmt::Write as _;
use std::time::Instant;

/// What the command line says about the request.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// Request path (default `/v1/chat/completions`).
    pub path: String,
    /// Headers, `name: value` (names lower-cased here).
    pub headers: Vec<(String, String)>,
    /// Consumer name (instead of an API key).
    pub consumer: Option<String>,
    /// Team name (with or without a consumer).
    pub team: Option<String>,
    /// Client API key (identifies the consumer like the gateway does).
    pub api_key: Option<String>,
    /// The random draw for non-sticky splits.
    pub roll: u64,
    /// Backends to treat as cooling down.
    pub cooling: Vec<String>,
}

/// Why the command cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The request would be refused before or during routing.
    #[error("the request would be refused: {0}")]
    Refused(#[from] StageError),
    /// `--consumer` / `--team` names nobody in the config.
    #[error("{0}")]
    UnknownCaller(String),
}

/// The report `tollgate route` prints.
pub fn report(snap: &Snapshot, ask: &Ask, body: &[u8]) -> Result<String, ExplainError> {
    let mut pairs: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), b"POST".to_vec()),
        (":path".into(), ask.path.clone().into_bytes()),
    ];
    pairs.extend(
        ask.headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes())),
    );
    if let Some(k) = &ask.api_key {
        pairs.push(("authorization".into(), format!("Bearer {k}").into_bytes()));
    }
    let mut cx = RequestCtx {
        method: "POST".into(),
        path: ask.path.clone(),
        headers: Headers::from_pairs(pairs),
        ..RequestCtx::default()
    };
    if ask.api_key.is_some() {
        access::request_headers(snap, &mut cx)?;
    } else if ask.consumer.is_some() || ask.team.is_some() {
        cx.identity = Some(named(snap, ask.consumer.as_deref(), ask.team.as_deref())?);
    }
    route::request_headers(snap, &mut cx, false)?;
    let cooldown = Cooldown::default();
    let now = Instant::now();
    for b in &ask.cooling {
        cooldown.fail(b, now);
    }
    let e = route::explain(snap, &cx, body, &cooldown, ask.roll)?;
    let table = &snap.routing;
    let mut out = String::new();
    if let Some(w) = &cx.identity {
        let _ = writeln!(
            out,
            "caller:   consumer {}{}",
            w.consumer,
            w.team
                .as_ref()
                .map(|t| format!(", team {t}"))
                .unwrap_or_default()
        );
    }
    for (rule, why) in &e.skipped {
        let _ = writeln!(out, "skipped:  {rule}: {why}");
    }
    match e.result {
        Err(err) => {
            let _ = writeln!(out, "no route: {err}");
        }
        Ok(d) => {
            let _ = writeln!(out, "rule:     {}", d.rule.label());
            let _ = writeln!(out, "why:      {}", d.reason);
            match d.chain.map(|c| &table.chains[c]) {
                Some(chain) => {
                    let _ = writeln!(
                        out,
                        "chain:    {} (envoy route {})",
                        chain.name, chain.envoy_route
                    );
                    for (i, s) in chain.steps.iter().enumerate() {
                        let model = s
                            .upstream_model
                            .as_deref()
                            .or(d.upstream_model.as_deref())
                            .or(requested(body).as_deref())
                            .map(str::to_owned)
                            .unwrap_or_default();
                        let _ = writeln!(
                            out,
                            "  step {}: backend {}, model {model}",
                            i + 1,
                            table.backends[s.backend].name
                        );
                    }
                }
                None => {
                    let b = &table.backends[d.backend];
                    let model = d
                        .upstream_model
                        .clone()
                        .or_else(|| requested(body))
                        .unwrap_or_default();
                    let _ = writeln!(out, "backend:  {} (envoy route {})", b.name, b.envoy_route);
                    let _ = writeln!(out, "model:    {model}");
                }
            }
        }
    }
    Ok(out)
}

fn requested(body: &[u8]) -> Option<String> {
    crate::llm::openai::parse(body)
        .ok()
        .and_then(|v| v.model.map(|m| m.value))
}

/// An identity for a consumer and/or team named on the command line.
fn named(
    snap: &Snapshot,
    consumer: Option<&str>,
    team: Option<&str>,
) -> Result<Identity, ExplainError> {
    let a = &snap.access;
    let listed = consumer.and_then(|c| a.consumers.iter().position(|x| x.name == c));
    let team_index = match team {
        Some(t) => Some(
            a.teams
                .iter()
                .position(|x| x.name == t)
                .ok_or_else(|| ExplainError::UnknownCaller(format!("unknown team {t:?}")))?,
        ),
        None => listed.and_then(|i| a.consumers[i].team),
    };
    Ok(Identity {
        consumer: consumer.unwrap_or("anonymous").to_owned(),
        team: team_index.map(|t| a.teams[t].name.clone()),
        index: listed,
        team_index,
    })
}
