use super::*;
use crate::providers::BackendKind;

fn backend(name: &str) -> Backend {
    Backend {
        name: name.into(),
        kind: BackendKind::Openai,
        base_path: "/v1".into(),
        envoy_route: name.into(),
        authority: None,
        credential: None,
        provider: crate::providers::ProviderConfig::Openai,
        forward_headers: Vec::new(),
    }
}

fn table() -> Table {
    Table {
        backends: vec![backend("alpha"), backend("beta")],
        models: vec![
            Model {
                name: "gpt-4o-mini".into(),
                aliases: vec!["mini".into()],
                backend: 0,
                upstream_model: "small-2025".into(),
            },
            Model {
                name: "large".into(),
                aliases: vec![],
                backend: 1,
                upstream_model: "large-2025".into(),
            },
        ],
        routes: vec![
            Route {
                name: "research-to-beta".into(),
                models: vec![Glob::new("gpt-*")],
                headers: vec![("x-team".into(), Glob::new("research"))],
                when: Conditions::default(),
                force: false,
                target: Target::Model(1),
            },
            Route {
                name: "beta-passthrough".into(),
                models: vec![Glob::new("beta-*")],
                headers: vec![],
                when: Conditions::default(),
                force: false,
                target: Target::Backend {
                    backend: 1,
                    upstream_model: None,
                },
            },
        ],
        model_command: true,
        ..Table::default()
    }
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers::from_pairs(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
    )
}

fn decide(
    t: &Table,
    model: Option<&str>,
    h: &Headers,
    cmd: Option<&ModelCommand>,
) -> Result<Decision, RouteError> {
    t.decide(&RouteInput::basic(model, h, cmd))
}

#[test]
fn catalogue_name_and_alias_rewrite_to_upstream_name() {
    let t = table();
    let h = Headers::default();
    for name in ["gpt-4o-mini", "mini"] {
        let d = decide(&t, Some(name), &h, None).unwrap();
        assert_eq!(d.backend, 0);
        assert_eq!(d.upstream_model.as_deref(), Some("small-2025"));
        assert_eq!(d.public_model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(d.rule, Rule::Catalogue);
    }
}

#[test]
fn header_rule_wins_over_catalogue() {
    let t = table();
    let d = decide(
        &t,
        Some("gpt-4o-mini"),
        &headers(&[("x-team", "research")]),
        None,
    )
    .unwrap();
    assert_eq!(d.backend, 1);
    assert_eq!(d.upstream_model.as_deref(), Some("large-2025"));
    assert_eq!(d.rule.label(), "research-to-beta");
    // Without the header the catalogue applies.
    let d = decide(
        &t,
        Some("gpt-4o-mini"),
        &headers(&[("x-team", "sales")]),
        None,
    )
    .unwrap();
    assert_eq!(d.backend, 0);
}

#[test]
fn glob_rule_passes_the_name_through() {
    let t = table();
    let d = decide(&t, Some("beta-experimental"), &Headers::default(), None).unwrap();
    assert_eq!(d.backend, 1);
    assert_eq!(d.upstream_model, None);
    assert_eq!(d.public_model, None);
}

#[test]
fn unknown_model_lists_models_and_suggests() {
    let t = table();
    let err = decide(&t, Some("gpt-4o-mimi"), &Headers::default(), None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("\"gpt-4o-mimi\" does not exist"), "{msg}");
    assert!(msg.contains("did you mean \"gpt-4o-mini\"?"), "{msg}");
    assert!(
        msg.contains("available models: gpt-4o-mini, large"),
        "{msg}"
    );
}

#[test]
fn missing_model_is_an_error_unless_a_default_route_exists() {
    let mut t = table();
    let err = decide(&t, None, &Headers::default(), None).unwrap_err();
    assert!(matches!(err, RouteError::MissingModel { .. }));
    t.routes.push(Route {
        name: "default".into(),
        models: vec![],
        headers: vec![],
        when: Conditions::default(),
        force: false,
        target: Target::Backend {
            backend: 0,
            upstream_model: Some("fallback".into()),
        },
    });
    let d = decide(&t, None, &Headers::default(), None).unwrap();
    assert_eq!(d.upstream_model.as_deref(), Some("fallback"));
    assert_eq!(d.rule.label(), "default");
}

#[test]
fn command_with_backend_and_model() {
    let t = table();
    let h = Headers::default();
    // An unlisted name passes only where a route passes it to that backend unchanged.
    let cmd = ModelCommand::BackendModel {
        backend: "beta".into(),
        model: "beta-custom-x".into(),
    };
    let d = decide(&t, Some("gpt-4o-mini"), &h, Some(&cmd)).unwrap();
    assert_eq!(d.backend, 1);
    assert_eq!(d.upstream_model.as_deref(), Some("beta-custom-x"));
    assert_eq!(d.rule, Rule::Command);
    assert!(d.reason.contains("route beta-passthrough"), "{}", d.reason);
    // A catalogue name on that backend is translated.
    let cmd = ModelCommand::BackendModel {
        backend: "beta".into(),
        model: "large".into(),
    };
    let d = decide(&t, None, &h, Some(&cmd)).unwrap();
    assert_eq!(d.upstream_model.as_deref(), Some("large-2025"));
    assert_eq!(d.public_model.as_deref(), Some("large"));
}

#[test]
fn command_with_unknown_backend_suggests() {
    let t = table();
    let cmd = ModelCommand::BackendModel {
        backend: "alhpa".into(),
        model: "x".into(),
    };
    let err = decide(&t, None, &Headers::default(), Some(&cmd)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown backend \"alhpa\" in the /model command (did you mean \"alpha\"?)"
    );
}

#[test]
fn command_with_model_only_resolves_like_a_model_and_always_rewrites() {
    let t = table();
    let h = Headers::default();
    let cmd = ModelCommand::Model("mini".into());
    let d = decide(&t, Some("large"), &h, Some(&cmd)).unwrap();
    assert_eq!(d.backend, 0);
    assert_eq!(d.upstream_model.as_deref(), Some("small-2025"));
    assert_eq!(d.rule, Rule::Command);
    let cmd = ModelCommand::Model("beta-raw".into());
    let d = decide(&t, Some("large"), &h, Some(&cmd)).unwrap();
    assert_eq!(d.upstream_model.as_deref(), Some("beta-raw"));
}

#[test]
fn disabled_command_is_ignored() {
    let mut t = table();
    t.model_command = false;
    let cmd = ModelCommand::BackendModel {
        backend: "beta".into(),
        model: "x".into(),
    };
    let d = decide(&t, Some("mini"), &Headers::default(), Some(&cmd)).unwrap();
    assert_eq!(d.backend, 0);
    assert_eq!(d.rule, Rule::Catalogue);
}

#[test]
fn long_catalogues_are_not_listed_in_errors() {
    let mut t = table();
    for i in 0..30 {
        t.models.push(Model {
            name: format!("m{i}"),
            aliases: vec![],
            backend: 0,
            upstream_model: format!("m{i}"),
        });
    }
    let msg = decide(&t, Some("nope-nope-nope"), &Headers::default(), None)
        .unwrap_err()
        .to_string();
    assert!(!msg.contains("available models"), "{msg}");
}

fn rule(name: &str, when: Conditions, target: Target) -> Route {
    Route {
        name: name.into(),
        models: vec![],
        headers: vec![],
        when,
        force: false,
        target,
    }
}

fn to_backend(b: usize) -> Target {
    Target::Backend {
        backend: b,
        upstream_model: None,
    }
}

#[test]
fn forced_locality_rule_beats_command_and_team_pin() {
    let mut t = table();
    t.backends.push(backend("local"));
    let mut r = rule(
        "pii-stays-local",
        Conditions {
            pii: Some(true),
            ..Default::default()
        },
        to_backend(2),
    );
    r.force = true;
    t.routes.push(r);
    let h = Headers::default();
    let cmd = ModelCommand::BackendModel {
        backend: "beta".into(),
        model: "large".into(),
    };
    let found = vec!["email".to_owned()];
    let mut input = RouteInput::basic(Some("mini"), &h, Some(&cmd));
    input.pin = Some((1, None));
    input.signals.pii = Some(&found);
    let d = t.decide(&input).unwrap();
    assert_eq!((d.backend, d.rule.label()), (2, "pii-stays-local"));
    assert_eq!(d.reason, "PII detected (email); to backend local");
    // Without PII: the command wins, then (without command) the pin.
    input.signals.pii = Some(&[]);
    assert_eq!(t.decide(&input).unwrap().rule, Rule::Command);
    input.command = None;
    let d = t.decide(&input).unwrap();
    assert_eq!((d.backend, d.rule), (1, Rule::TeamPin));
}

#[test]
fn explanation_lists_why_earlier_rules_did_not_match() {
    let mut t = table();
    t.routes.insert(
        0,
        rule(
            "reasoning",
            Conditions {
                profiles: vec!["reasoning".into()],
                ..Default::default()
            },
            Target::Model(1),
        ),
    );
    let h = headers(&[("x-team", "sales")]);
    let e = t.explain(&RouteInput::basic(Some("gpt-4o-mini"), &h, None));
    assert_eq!(e.result.unwrap().rule, Rule::Catalogue);
    assert_eq!(
        e.skipped,
        vec![
            (
                "reasoning".to_owned(),
                "no x-tollgate-profile hint".to_owned()
            ),
            (
                "research-to-beta".to_owned(),
                "header x-team is missing or does not match".to_owned()
            ),
            (
                "beta-passthrough".to_owned(),
                "model \"gpt-4o-mini\" matches none of the rule's models".to_owned()
            ),
        ]
    );
    let mut input = RouteInput::basic(Some("gpt-4o-mini"), &h, None);
    input.signals.profile = Some("reasoning");
    let d = t.decide(&input).unwrap();
    assert_eq!(d.reason, "profile hint reasoning; to model large");
}

fn split_table(sticky: bool) -> Table {
    let mut t = table();
    t.routes = vec![rule(
        "canary",
        Conditions::default(),
        Target::Split(Split {
            variants: vec![(90, to_backend(0)), (10, to_backend(1))],
            sticky,
        }),
    )];
    t
}

#[test]
fn weighted_split_follows_the_roll_and_explains_the_bucket() {
    let t = split_table(false);
    let h = Headers::default();
    let mut input = RouteInput::basic(Some("x"), &h, None);
    input.roll = 95;
    let d = t.decide(&input).unwrap();
    assert_eq!(d.backend, 1);
    assert_eq!(
        d.reason,
        "matches every request; split variant 2 of 2 (weight 10 of 100, bucket 95 by random) to backend beta"
    );
    input.roll = 3;
    assert_eq!(t.decide(&input).unwrap().backend, 0);
}

#[test]
fn sticky_split_keeps_a_consumer_on_one_variant() {
    let t = split_table(true);
    let h = Headers::default();
    let mut input = RouteInput::basic(Some("x"), &h, None);
    input.signals.consumer = Some("svc-a");
    let first = t.decide(&input).unwrap().backend;
    for roll in 0..100 {
        input.roll = roll;
        assert_eq!(t.decide(&input).unwrap().backend, first);
    }
    // Anonymous callers fall back to a random draw.
    input.signals.consumer = None;
    let seen: std::collections::HashSet<usize> = (0..100)
        .map(|roll| {
            input.roll = roll;
            t.decide(&input).unwrap().backend
        })
        .collect();
    assert_eq!(seen.len(), 2);
}

#[test]
fn cooling_backend_is_left_out_of_a_split() {
    let t = split_table(false);
    let h = Headers::default();
    let cooling = [0usize];
    let mut input = RouteInput::basic(Some("x"), &h, None);
    input.cooling = &cooling;
    for roll in 0..50 {
        input.roll = roll;
        let d = t.decide(&input).unwrap();
        assert_eq!(d.backend, 1);
        assert!(
            d.reason.contains("1 variant(s) cooling down"),
            "{}",
            d.reason
        );
    }
}

#[test]
fn chain_target_names_the_chain_and_first_step() {
    let mut t = table();
    t.chains.push(Chain {
        name: "resilient".into(),
        envoy_route: "chain-resilient".into(),
        steps: vec![
            Step {
                backend: 1,
                upstream_model: None,
            },
            Step {
                backend: 0,
                upstream_model: Some("small".into()),
            },
        ],
    });
    t.routes = vec![rule(
        "long",
        Conditions {
            prompt_tokens: Some(conditions::TokenBound::Above(1000)),
            ..Default::default()
        },
        Target::Chain(0),
    )];
    let h = Headers::default();
    let mut input = RouteInput::basic(Some("mini"), &h, None);
    input.signals.prompt_tokens = 5000;
    let d = t.decide(&input).unwrap();
    assert_eq!((d.backend, d.chain), (1, Some(0)));
    assert_eq!(d.upstream_model, None);
    assert_eq!(
        d.reason,
        "estimated prompt tokens 5000; to fallback chain resilient (beta → alpha)"
    );
    // First step cooling: straight to the next step, as a plain backend.
    let cooling = [1usize];
    input.cooling = &cooling;
    let d = t.decide(&input).unwrap();
    assert_eq!((d.backend, d.chain), (0, None));
    assert_eq!(d.upstream_model.as_deref(), Some("small"));
    assert!(
        d.reason
            .ends_with("first step beta is cooling down: straight to alpha"),
        "{}",
        d.reason
    );
    input.cooling = &[];
    // Short prompt: the catalogue.
    input.signals.prompt_tokens = 10;
    let e = t.explain(&input);
    assert_eq!(e.result.unwrap().rule, Rule::Catalogue);
    assert_eq!(
        e.skipped,
        vec![(
            "long".to_owned(),
            "estimated prompt tokens 10 not above 1000".to_owned()
        )]
    );
}

#[test]
fn session_headers_are_not_gateway_headers() {
    // tollgate strips `x-tollgate-*` and client credentials only; Envoy hashes on these.
    for h in ["x-session-id", "mcp-session-id"] {
        assert!(!h.starts_with(crate::stages::route::OWNED_PREFIX));
    }
}
