use super::*;

fn table() -> Access {
    let key = |k: &str| parse_hash(&hash_key(&Secret::new(k))).expect("digest");
    Access {
        mode: Mode::ApiKey,
        consumers: vec![
            Consumer {
                name: "app".into(),
                team: Some(0),
                models: None,
                backends: None,
            },
            Consumer {
                name: "intern".into(),
                team: Some(0),
                models: Some(vec![Glob::new("gpt-4o-mini"), Glob::new("echo")]),
                backends: None,
            },
            Consumer {
                name: "solo".into(),
                team: None,
                models: None,
                backends: Some(vec!["beta".into()]),
            },
        ],
        teams: vec![Team {
            name: "research".into(),
            models: Some(vec![Glob::new("gpt-*"), Glob::new("echo")]),
            backends: None,
            pin: None,
        }],
        keys: [(key("k-app"), 0), (key("k-intern"), 1), (key("k-solo"), 2)]
            .into_iter()
            .collect(),
        anonymous: None,
    }
}

fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
    move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

#[test]
fn hash_key_is_sha256_hex_and_round_trips() {
    let h = hash_key(&Secret::new("abc"));
    assert_eq!(
        h,
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(parse_hash(&h).is_some());
    assert_eq!(parse_hash("sha256:zz"), None);
    assert_eq!(parse_hash("md5:ba7816bf"), None);
}

#[test]
fn bearer_and_x_api_key_identify_consumers() {
    let t = table();
    let who = t
        .identify(headers(&[("authorization", "Bearer k-app")]))
        .unwrap()
        .unwrap();
    assert_eq!(
        (who.consumer.as_str(), who.team.as_deref()),
        ("app", Some("research"))
    );
    let who = t
        .identify(headers(&[("x-api-key", "k-solo")]))
        .unwrap()
        .unwrap();
    assert_eq!((who.consumer.as_str(), who.team), ("solo", None));
    assert_eq!(
        t.identify(headers(&[("authorization", "bearer   k-intern ")]))
            .unwrap()
            .unwrap()
            .consumer,
        "intern"
    );
}

#[test]
fn missing_and_unknown_keys_are_refused() {
    let t = table();
    assert_eq!(t.identify(headers(&[])), Err(AuthError::MissingKey));
    assert_eq!(
        t.identify(headers(&[("authorization", "Basic abc")])),
        Err(AuthError::MissingKey)
    );
    assert_eq!(
        t.identify(headers(&[("authorization", "Bearer nope")])),
        Err(AuthError::UnknownKey)
    );
    let msg = AuthError::UnknownKey.to_string();
    assert!(!msg.contains("nope"), "the key is never echoed");
}

#[test]
fn anonymous_consumer_applies_only_without_credentials() {
    let mut t = table();
    t.anonymous = Some(2);
    assert_eq!(t.identify(headers(&[])).unwrap().unwrap().consumer, "solo");
    assert_eq!(
        t.identify(headers(&[("x-api-key", "wrong")])),
        Err(AuthError::UnknownKey),
        "a wrong key is never downgraded to anonymous"
    );
}

#[test]
fn model_and_backend_rules_intersect_team_and_consumer() {
    let t = table();
    let id = |k: &str| t.identify(headers(&[("x-api-key", k)])).unwrap().unwrap();
    let (app, intern, solo) = (id("k-app"), id("k-intern"), id("k-solo"));
    assert!(t.authorize(&app, &["gpt-4o"], "alpha").is_ok());
    assert!(matches!(
        t.authorize(&app, &["demo-large"], "beta"),
        Err(AuthError::ModelNotAllowed { .. })
    ));
    assert!(
        t.authorize(&app, &["mini", "gpt-4o-mini"], "alpha").is_ok(),
        "an alias is allowed through its catalogue name"
    );
    assert!(t.authorize(&intern, &["gpt-4o-mini"], "alpha").is_ok());
    assert!(
        t.authorize(&intern, &["gpt-4o"], "alpha").is_err(),
        "consumer narrows team"
    );
    assert!(t.authorize(&solo, &["anything"], "beta").is_ok());
    assert_eq!(
        t.authorize(&solo, &["anything"], "alpha"),
        Err(AuthError::BackendNotAllowed {
            consumer: "solo".into(),
            backend: "alpha".into()
        })
    );
    assert!(t.lists_model(Some(&intern), "echo", "alpha"));
    assert!(!t.lists_model(Some(&intern), "demo-large", "beta"));
    assert!(t.lists_model(None, "demo-large", "beta"));
}

#[test]
fn identity_headers_mode() {
    let mut t = table();
    t.mode = Mode::IdentityHeaders {
        consumer: "x-user".into(),
        team: Some("x-team".into()),
    };
    assert_eq!(
        t.identify(headers(&[("x-user", "app")]))
            .unwrap()
            .unwrap()
            .team
            .as_deref(),
        Some("research"),
        "a listed consumer keeps its configured team"
    );
    let who = t
        .identify(headers(&[
            ("x-user", "alice@example.com"),
            ("x-team", "research"),
        ]))
        .unwrap()
        .unwrap();
    assert_eq!(
        (who.consumer.as_str(), who.index, who.team_index),
        ("alice@example.com", None, Some(0))
    );
    assert!(t.authorize(&who, &["demo-large"], "beta").is_err());
    assert!(matches!(
        t.identify(headers(&[("x-user", "bob"), ("x-team", "nope")])),
        Err(AuthError::UnknownTeam(_))
    ));
    assert!(matches!(
        t.identify(headers(&[])),
        Err(AuthError::MissingIdentity(_))
    ));
}

#[test]
fn open_mode_identifies_nobody() {
    let t = Access::default();
    assert_eq!(t.identify(headers(&[("x-api-key", "x")])), Ok(None));
    assert!(!t.enabled());
}
