//! The access decision after every routing step: what the request is *sent to* is judged,
//! never what the client typed. Each case runs the real stages (route, then access) on a
//! compiled snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::auth::hash_key;
use crate::config::{CompileOptions, compile};
use crate::error::rescue;
use crate::headers::Headers;
use crate::routing::health::Cooldown;
use crate::secret::Secret;
use crate::stages::route;

const APP: &str = "app-key";
const INTERN: &str = "intern-key";
const PINNED: &str = "pinned-key";
const GLOBBER: &str = "globber-key";

fn config() -> String {
    let h = |k: &str| hash_key(&Secret::new(k));
    format!(
        r#"
version: 1
auth: {{ mode: api_key }}
backends:
  - {{ name: alpha, kind: openai }}
  - {{ name: beta, kind: openai }}
  - {{ name: claude, kind: anthropic }}
models:
  - {{ name: echo, backend: alpha }}
  - {{ name: gpt-4o-mini, aliases: [mini], backend: alpha, upstream_model: small-2025 }}
  - {{ name: claude-demo, backend: claude }}
  - {{ name: secret, aliases: [s], backend: beta, upstream_model: secret-2025 }}
routing:
  chains:
    - name: resilient
      steps:
        - {{ backend: alpha, upstream_model: echo }}
        - {{ backend: claude, upstream_model: claude-demo }}
    - name: tame
      steps:
        - {{ backend: alpha, upstream_model: echo }}
        - {{ backend: beta, upstream_model: beta-echo }}
routes:
  - {{ name: to-claude, match: {{ headers: {{ x-route: claude }} }}, model: claude-demo }}
  - {{ name: resilient, match: {{ models: ["resilient-*"] }}, chain: resilient }}
  - {{ name: tame, match: {{ models: ["tame-*"] }}, chain: tame }}
  - name: canary
    match: {{ models: ["split-*"] }}
    split:
      - {{ weight: 1, model: echo }}
      - {{ weight: 1, model: claude-demo }}
  - {{ name: beta-any, match: {{ models: ["beta-*"] }}, backend: beta }}
guard:
  policies:
    - {{ name: echo-guard, match: {{ models: [echo] }}, pii: {{}} }}
    - {{ name: claude-guard, match: {{ models: [claude-demo] }}, pii: {{}} }}
pricing:
  models:
    - {{ model: echo, input: 0.1, output: 0.1 }}
    - {{ model: claude-demo, input: 10.0, output: 10.0 }}
limits:
  rules:
    - {{ name: rpm, per: [consumer], requests_per_minute: 1000 }}
    - {{ name: claude-cap, per: [consumer], match: {{ models: [claude-demo] }}, requests_per_minute: 1 }}
    - {{ name: beta-cap, per: [consumer], match: {{ models: [beta-capped] }}, requests_per_minute: 1 }}
teams:
  - {{ name: apps }}
  - {{ name: interns, models: [echo, gpt-4o-mini, beta-echo] }}
  - {{ name: pinned, models: [echo], pin: {{ backend: claude, model: claude-demo }} }}
  - {{ name: globbers, models: ["beta-*"] }}
consumers:
  - {{ name: app, team: apps, keys: ["{app}"] }}
  - {{ name: intern, team: interns, keys: ["{intern}"] }}
  - {{ name: pinned, team: pinned, keys: ["{pinned}"] }}
  - {{ name: globber, team: globbers, keys: ["{globber}"] }}
"#,
        app = h(APP),
        intern = h(INTERN),
        pinned = h(PINNED),
        globber = h(GLOBBER),
    )
}

fn snap() -> Snapshot {
    let env = |_: &str| None;
    compile(
        &config(),
        &CompileOptions {
            resolve_secrets: false,
            env: &env,
        },
    )
    .expect("valid test config")
}

fn body(model: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
    }))
    .unwrap()
}

/// Runs access and route at headers, route and access at body.
fn run(
    snap: &Snapshot,
    key: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    roll: u64,
) -> Result<RequestCtx, StageError> {
    let mut pairs = vec![(
        "authorization".to_owned(),
        format!("Bearer {key}").into_bytes(),
    )];
    pairs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())),
    );
    let mut cx = RequestCtx {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: Headers::from_pairs(pairs),
        ..RequestCtx::default()
    };
    request_headers(snap, &mut cx)?;
    route::request_headers(snap, &mut cx, false)?;
    cx.body = crate::llm::body::Body::new(body.to_vec());
    route::request_body(snap, &mut cx, &Cooldown::default(), roll)?;
    after_route(snap, &mut cx)?;
    Ok(cx)
}

fn code(r: Result<RequestCtx, StageError>) -> (u16, &'static str, String) {
    let e = r.expect_err("refused");
    let reply = rescue(&e);
    (reply.status, reply.code, reply.message)
}

fn sent_to(cx: &RequestCtx) -> Vec<(String, String)> {
    let routed = cx.routed.as_ref().unwrap();
    routed
        .destinations
        .iter()
        .map(|d| (d.backend.to_string(), d.model.clone()))
        .collect()
}

#[test]
fn model_command_is_judged_by_its_target_not_the_body_model() {
    let s = snap();
    // The body names an allowed model; the command sends elsewhere.
    let b = body("echo", "/model claude-demo\nhi");
    let (status, c, msg) = code(run(&s, INTERN, &[], &b, 0));
    assert_eq!((status, c), (403, "model_not_allowed"));
    assert!(msg.contains("\"claude-demo\""), "{msg}");
    assert!(
        msg.contains("models you may use: echo, gpt-4o-mini"),
        "{msg}"
    );
    assert!(!msg.contains("secret"), "{msg}");
    // The same command is fine for a team allowed everything.
    let cx = run(&s, APP, &[], &b, 0).unwrap();
    assert_eq!(cx.routed.unwrap().model_label, "claude-demo");
    // And the reverse: a forbidden body model with a command to an allowed one.
    let b = body("claude-demo", "/model echo\nhi");
    assert!(run(&s, INTERN, &[], &b, 0).is_ok());
}

#[test]
fn backend_model_command_outside_the_catalogue_is_refused_unless_a_route_passes_it() {
    let s = snap();
    for key in [APP, INTERN] {
        let (status, c, msg) = code(run(
            &s,
            key,
            &[],
            &body("echo", "/model beta,anything\nhi"),
            0,
        ));
        assert_eq!((status, c), (404, "model_not_found"), "{msg}");
        // A catalogue name of another backend is not a catalogue target on this one.
        let (status, _, _) = code(run(&s, key, &[], &body("echo", "/model beta,echo\nhi"), 0));
        assert_eq!(status, 404);
        // Case is part of a name: `Echo` is not `echo`.
        let (status, _, _) = code(run(&s, key, &[], &body("echo", "/model alpha,Echo\nhi"), 0));
        assert_eq!(status, 404);
        // beta-* has a passthrough route to beta, but not to alpha.
        let (status, _, _) = code(run(
            &s,
            key,
            &[],
            &body("echo", "/model alpha,beta-x\nhi"),
            0,
        ));
        assert_eq!(status, 404);
    }
    // Passthrough on: the beta-any route passes beta-* to beta as typed; allowlists still hold.
    let b = body("echo", "/model beta,beta-x\nhi");
    let cx = run(&s, APP, &[], &b, 0).unwrap();
    assert_eq!(sent_to(&cx), vec![("1".into(), "beta-x".into())]);
    assert_eq!(cx.routed.as_ref().unwrap().model_label, "unlisted");
    let (status, _, _) = code(run(&s, INTERN, &[], &b, 0));
    assert_eq!(status, 403);
    // A glob allowlist that covers it.
    assert!(run(&s, GLOBBER, &[], &b, 0).is_ok());
    // Catalogue targets by name, alias or upstream name on the right backend.
    for cmd in [
        "/model alpha,gpt-4o-mini",
        "/model alpha,mini",
        "/model alpha,small-2025",
    ] {
        let cx = run(&s, INTERN, &[], &body("echo", &format!("{cmd}\nhi")), 0).unwrap();
        assert_eq!(cx.routed.unwrap().model_label, "gpt-4o-mini", "{cmd}");
    }
    let (status, _, _) = code(run(&s, INTERN, &[], &body("echo", "/model beta,s\nhi"), 0));
    assert_eq!(status, 403);
}

#[test]
fn an_alias_is_the_model_it_names() {
    let s = snap();
    let (status, _, _) = code(run(&s, INTERN, &[], &body("s", "hi"), 0));
    assert_eq!(status, 403, "alias of a forbidden model");
    let (status, _, _) = code(run(&s, INTERN, &[], &body("secret", "hi"), 0));
    assert_eq!(status, 403);
    assert!(run(&s, INTERN, &[], &body("mini", "hi"), 0).is_ok());
    // An allowlist naming the alias allows the model behind it.
    let mut s = snap();
    s.access.teams[1].models = Some(vec![crate::glob::Glob::new("s")]);
    assert!(run(&s, INTERN, &[], &body("secret", "hi"), 0).is_ok());
    // ... and lists it by its public name, in messages and the models list.
    let (_, _, msg) = code(run(&s, INTERN, &[], &body("echo", "hi"), 0));
    assert!(msg.ends_with("models you may use: secret"), "{msg}");
}

#[test]
fn a_rule_that_lands_on_a_forbidden_model_is_refused() {
    let s = snap();
    let b = body("echo", "hi");
    let (status, _, msg) = code(run(&s, INTERN, &[("x-route", "claude")], &b, 0));
    assert_eq!(status, 403);
    // The message names what the client asked for, not where the rule sent it.
    assert!(
        msg.contains("\"echo\"") && !msg.contains("claude-demo"),
        "{msg}"
    );
    assert!(run(&s, INTERN, &[], &b, 0).is_ok());
    assert!(run(&s, APP, &[("x-route", "claude")], &b, 0).is_ok());
}

#[test]
fn every_split_variant_is_judged_as_drawn() {
    let s = snap();
    let b = body("split-a", "hi");
    // roll 0: echo; roll 1: claude-demo (weights 1:1).
    let cx = run(&s, INTERN, &[], &b, 0).unwrap();
    assert_eq!(cx.routed.unwrap().model_label, "echo");
    let (status, _, _) = code(run(&s, INTERN, &[], &b, 1));
    assert_eq!(status, 403);
    assert!(run(&s, APP, &[], &b, 1).is_ok());
}

#[test]
fn every_chain_step_is_checked_not_only_the_first() {
    let s = snap();
    // resilient: alpha/echo (allowed) then claude/claude-demo (not).
    let (status, c, _) = code(run(&s, INTERN, &[], &body("resilient-x", "hi"), 0));
    assert_eq!((status, c), (403, "model_not_allowed"));
    let cx = run(&s, APP, &[], &body("resilient-x", "hi"), 0).unwrap();
    assert_eq!(
        sent_to(&cx),
        vec![
            ("0".into(), "echo".into()),
            ("2".into(), "claude-demo".into())
        ]
    );
    // tame: every step allowed for the intern (beta-echo is on its list).
    assert!(run(&s, INTERN, &[], &body("tame-x", "hi"), 0).is_ok());
    // Backend allowlists hold per step too.
    let mut s = snap();
    s.access.teams[1].backends = Some(vec!["alpha".into()]);
    let (status, c, _) = code(run(&s, INTERN, &[], &body("tame-x", "hi"), 0));
    assert_eq!((status, c), (403, "backend_not_allowed"));
}

#[test]
fn a_team_pin_is_judged_by_where_it_sends() {
    let s = snap();
    // The pinned team may use echo only, but its pin sends to claude-demo: refused.
    let (status, _, _) = code(run(&s, PINNED, &[], &body("echo", "hi"), 0));
    assert_eq!(status, 403);
}

#[test]
fn backend_allowlists_hold_for_commands() {
    let mut s = snap();
    s.access.teams[1].backends = Some(vec!["alpha".into()]);
    let (status, c, _) = code(run(
        &s,
        INTERN,
        &[],
        &body("echo", "/model beta,beta-echo\nhi"),
        0,
    ));
    assert_eq!((status, c), (403, "backend_not_allowed"));
}

#[test]
fn not_found_lists_and_suggests_only_the_callers_models() {
    let s = snap();
    let (status, _, msg) = code(run(&s, INTERN, &[], &body("claude-dem", "hi"), 0));
    assert_eq!(status, 404);
    assert!(msg.contains("available models: echo, gpt-4o-mini"), "{msg}");
    assert!(
        !msg.contains("claude-demo") && !msg.contains("secret"),
        "{msg}"
    );
    let (_, _, msg) = code(run(&s, APP, &[], &body("claude-dem", "hi"), 0));
    assert!(msg.contains("did you mean \"claude-demo\""), "{msg}");
    assert!(msg.contains("secret"), "{msg}");
    // ECHO is not echo (names are case-sensitive, everywhere).
    let (status, _, msg) = code(run(&s, INTERN, &[], &body("ECHO", "hi"), 0));
    assert_eq!(status, 404);
    assert!(!msg.contains("claude"), "{msg}");
    // Unknown backend hints name only backends the caller may use.
    let mut s = snap();
    s.access.teams[1].backends = Some(vec!["alpha".into()]);
    let (_, c, msg) = code(run(&s, INTERN, &[], &body("echo", "/model claud,x\nhi"), 0));
    assert_eq!(c, "unknown_backend");
    assert!(!msg.contains("did you mean"), "{msg}");
    let (_, _, msg) = code(run(&s, APP, &[], &body("echo", "/model claud,x\nhi"), 0));
    assert!(msg.contains("did you mean \"claude\""), "{msg}");
}

#[test]
fn guard_and_pricing_follow_the_resolved_model() {
    let s = snap();
    // Typed echo (cheap, echo-guard); sent to claude-demo.
    let b = body("echo", "/model claude-demo\nhi");
    let mut cx = run(&s, APP, &[], &b, 0).unwrap();
    crate::stages::guard::request_body(&s, &mut cx).unwrap();
    assert_eq!(cx.guard.as_ref().unwrap().policy.name, "claude-guard");
    crate::stages::usage::request_body(&s, &mut cx).unwrap();
    let price = cx.charge.as_ref().unwrap().price.unwrap();
    let expected = s.pricing.lookup(&["claude-demo"]).copied().unwrap();
    assert_eq!(price, expected);
    // Routed by a rule: the same.
    let mut cx = run(&s, APP, &[("x-route", "claude")], &body("echo", "hi"), 0).unwrap();
    crate::stages::guard::request_body(&s, &mut cx).unwrap();
    assert_eq!(cx.guard.as_ref().unwrap().policy.name, "claude-guard");
}

#[test]
fn limits_follow_the_resolved_model() {
    let s = snap();
    let svc = crate::stages::limits::Services::new(std::sync::Arc::new(
        crate::limits::memory::MemoryLimiter::new(),
    ))
    .0;
    let metrics = crate::metrics::Metrics::new();
    let admit = |b: &[u8]| {
        let mut cx = run(&s, APP, &[], b, 0).unwrap();
        crate::stages::usage::request_body(&s, &mut cx).unwrap();
        let Some(demand) = crate::stages::limits::plan(&s, &mut cx, crate::limits::unix_now())
        else {
            return Ok(());
        };
        let answer =
            futures::executor::block_on(crate::stages::limits::reserve(&svc, &metrics, &demand));
        crate::stages::limits::reserved(&s, &mut cx, &svc, &metrics, &demand, answer)
            .map_err(|e| rescue(&e).status)
    };
    // Typing the capped model while a /model line sends elsewhere is never counted by it...
    let typed = body("claude-demo", "/model echo\nhi");
    for _ in 0..3 {
        assert_eq!(admit(&typed), Ok(()));
    }
    // ...and typing an uncapped one does not escape the cap of where it is sent.
    let sent = body("echo", "/model claude-demo\nhi");
    assert_eq!(admit(&sent), Ok(()));
    assert_eq!(admit(&sent), Err(429));
    // An unlisted passthrough is limited by the name sent, not the body's.
    let unlisted = body("echo", "/model beta,beta-capped\nhi");
    assert_eq!(admit(&unlisted), Ok(()));
    assert_eq!(admit(&unlisted), Err(429));
}

#[test]
fn names_with_control_characters_or_huge_names_are_a_400_that_does_not_echo_them() {
    let s = snap();
    let huge = "m".repeat(100 * 1024);
    for model in ["echo\r\nx-evil: 1", "echo\0", "echo\n", &huge] {
        let (status, c, msg) = code(run(&s, APP, &[], &body(model, "hi"), 0));
        assert_eq!((status, c), (400, "invalid_model"), "{model:.20}");
        assert!(
            msg.len() < 200 && !msg.contains("mmmm") && !msg.contains("evil"),
            "{msg}"
        );
    }
    // The same through a /model command (model or backend part).
    for text in [
        "/model alpha,echo\tx\nhi".to_owned(),
        "/model echo\0\nhi".to_owned(),
        "/model be\u{7}ta,echo\nhi".to_owned(),
        format!("/model alpha,{huge}\nhi"),
    ] {
        let (status, c, msg) = code(run(&s, APP, &[], &body("echo", &text), 0));
        assert_eq!((status, c), (400, "invalid_model"), "{text:.30}");
        assert!(msg.len() < 200, "{msg}");
    }
    // A long-but-legal name is carried and bounded everywhere it is echoed.
    let name = format!("beta-{}", "x".repeat(250));
    let cx = run(&s, APP, &[], &body(&name, "hi"), 0).unwrap();
    for (_, v) in &cx.mutations.metadata {
        assert!(v.len() <= 1100, "metadata of {} bytes", v.len());
    }
}

/// Everything the intern (team interns: echo, gpt-4o-mini, beta-echo) may reach in the test
/// config, written out by hand as an oracle independent of the access code: (backend
/// index, upstream model).
const INTERN_REACH: &[(usize, &str)] = &[(0, "echo"), (0, "small-2025"), (1, "beta-echo")];

/// Names a hostile client would try: catalogue names, aliases, upstream names, names the
/// rules match, near misses in case, and backends.
const WORDS: &[&str] = &[
    "echo",
    "ECHO",
    "Echo",
    "gpt-4o-mini",
    "mini",
    "small-2025",
    "claude-demo",
    "secret",
    "s",
    "secret-2025",
    "beta-echo",
    "beta-x",
    "resilient-x",
    "tame-x",
    "split-a",
    "",
    "alpha",
    "beta",
    "claude",
];

/// Compiled once: the property runs hundreds of cases.
static SNAP: std::sync::LazyLock<Snapshot> = std::sync::LazyLock::new(snap);

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

    /// Whatever the body model, `/model` line, rule header and split roll, an admitted
    /// intern request is sent only to places on the hand-written list.
    #[test]
    fn an_admitted_request_only_reaches_what_the_caller_may_use(
        body_model in proptest::sample::select(WORDS),
        cmd_kind in 0u8..3,
        cmd_backend in proptest::sample::select(WORDS),
        cmd_model in proptest::sample::select(WORDS),
        to_claude in proptest::bool::ANY,
        roll in 0u64..4,
    ) {
        let s = &*SNAP;
        let text = match cmd_kind {
            0 => "hi".to_owned(),
            1 => format!("/model {cmd_model}\nhi"),
            _ => format!("/model {cmd_backend},{cmd_model}\nhi"),
        };
        let headers: &[(&str, &str)] = if to_claude { &[("x-route", "claude")] } else { &[] };
        if let Ok(cx) = run(s, INTERN, headers, &body(body_model, &text), roll) {
            let routed = cx.routed.expect("routed");
            proptest::prop_assert!(!routed.destinations.is_empty());
            for d in &routed.destinations {
                proptest::prop_assert!(
                    INTERN_REACH.contains(&(d.backend, d.model.as_str())),
                    "{text:?} with body model {body_model:?} reached {d:?}"
                );
            }
        }
    }
}

#[test]
fn the_limits_stage_returns_the_reserve_as_data_and_the_phase_resumes_after_it() {
    use crate::stages::{Cx, Flow, Stages};
    let s = snap();
    let svc = crate::stages::limits::Services::new(std::sync::Arc::new(
        crate::limits::memory::MemoryLimiter::new(),
    ))
    .0;
    let metrics = crate::metrics::Metrics::new();
    let stages = Stages::default();
    // One request through the stages; `None`: refused (429) by the store's answer.
    let admit = |reserve: bool| -> Option<RequestCtx> {
        let mut req = RequestCtx {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: Headers::from_pairs([(
                "authorization".to_owned(),
                format!("Bearer {APP}").into_bytes(),
            )]),
            ..RequestCtx::default()
        };
        let mut cx = Cx {
            snap: &s,
            svc: &svc,
            metrics: &metrics,
            now: std::time::SystemTime::now(),
            roll: 0,
            end_of_stream: false,
            req: &mut req,
        };
        assert!(matches!(
            stages.request_headers(&mut cx),
            (2, Ok(Flow::Next))
        ));
        cx.req.body = crate::llm::body::Body::new(body("echo", "/model claude-demo\nhi"));
        let (at, verdict) = stages.request_body(&mut cx, 0);
        assert_eq!(at, Stages::ADMITTED_AFTER);
        let Ok(Flow::Reserve(demand)) = verdict else {
            panic!("the limits stage asks for a reservation: {verdict:?}");
        };
        // Nothing reserved yet: the exchange does the await.
        assert!(cx.req.charge.as_ref().unwrap().reservation.is_none());
        if !reserve {
            return Some(req);
        }
        let answer = futures::executor::block_on(crate::stages::limits::reserve(
            cx.svc, cx.metrics, &demand,
        ));
        if stages.limits.reserved(&mut cx, &demand, answer).is_err() {
            return None;
        }
        assert!(cx.req.charge.as_ref().unwrap().reservation.is_some());
        assert!(matches!(
            stages.request_body(&mut cx, at + 1),
            (6, Ok(Flow::Next))
        ));
        Some(req)
    };
    // Planning alone touches no counter: the cap of one is still free afterwards.
    assert!(admit(false).is_some());
    assert!(admit(false).is_some());
    assert!(admit(true).is_some());
    assert!(admit(true).is_none());
}
