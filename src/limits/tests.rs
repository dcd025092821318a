use super::memory::MemoryLimiter;
use super::*;

fn rule(name: &str, per: Vec<Dimension>, limits: Vec<Limit>) -> Rule {
    Rule {
        name: name.into(),
        per,
        consumers: vec![],
        teams: vec![],
        models: vec![],
        limits,
    }
}

const NOW: u64 = 1_767_225_600 + 30; // 2026-01-01T00:00:30Z

fn subject<'a>(consumer: &'a str) -> Subject<'a> {
    Subject {
        consumer,
        team: Some("research"),
        model: "gpt-4o-mini",
    }
}

#[test]
fn windows_are_utc_minute_day_month() {
    assert_eq!(windows(Window::Minute, NOW), ("m29453760".into(), 30));
    assert_eq!(windows(Window::Day, NOW), ("d20454".into(), 86_400 - 30));
    let (id, reset) = windows(Window::Month, NOW);
    assert_eq!(id, "M202601");
    assert_eq!(reset, 31 * 86_400 - 30, "January has 31 days");
    // 2024-02-29T12:00:00Z: leap February ends in 12 hours.
    let (id, reset) = windows(Window::Month, 1_709_208_000);
    assert_eq!((id.as_str(), reset), ("M202402", 12 * 3600));
    let (id, _) = windows(Window::Month, 1_735_689_599); // 2024-12-31T23:59:59Z
    assert_eq!(id, "M202412");
}

#[test]
fn plan_scopes_counters_and_filters_rules() {
    let rules = vec![
        rule(
            "per-consumer",
            vec![Dimension::Consumer],
            vec![Limit {
                metric: Metric::Requests,
                window: Window::Minute,
                max: 10,
            }],
        ),
        rule(
            "team-model",
            vec![Dimension::Team, Dimension::Model],
            vec![
                Limit {
                    metric: Metric::Tokens,
                    window: Window::Minute,
                    max: 1000,
                },
                Limit {
                    metric: Metric::Cost,
                    window: Window::Day,
                    max: 5_000_000,
                },
            ],
        ),
        Rule {
            models: vec![Glob::new("demo-*")],
            ..rule("only-demo", vec![], vec![])
        },
    ];
    let worst = Amounts {
        requests: 1,
        tokens: 300,
        cost: 42,
    };
    let d = plan(&rules, &subject("app"), worst, NOW);
    let keys: Vec<(&str, u64)> = d
        .counters
        .iter()
        .map(|c| (c.key.as_str(), c.amount))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("per-consumer:c=app:requests:m29453760", 1),
            ("team-model:t=research:m=gpt-4o-mini:tokens:m29453760", 300),
            ("team-model:t=research:m=gpt-4o-mini:cost:d20454", 42),
        ]
    );
    assert!(d.needs_usage());
    let d = plan(&rules, &subject("odd:name with spaces"), worst, NOW);
    assert!(
        d.counters[0].key.starts_with("per-consumer:c=h"),
        "unsafe values are hashed: {}",
        d.counters[0].key
    );
}

#[test]
fn reserve_is_all_or_nothing_and_counts_reservations() {
    let store = MemoryLimiter::new();
    let rules = vec![rule(
        "r",
        vec![],
        vec![
            Limit {
                metric: Metric::Requests,
                window: Window::Minute,
                max: 100,
            },
            Limit {
                metric: Metric::Tokens,
                window: Window::Minute,
                max: 1000,
            },
        ],
    )];
    let ask_at = |tokens, now| {
        plan(
            &rules,
            &subject("a"),
            Amounts {
                requests: 1,
                tokens,
                cost: 0,
            },
            now,
        )
    };
    let ask = |tokens| ask_at(tokens, NOW);
    let Admission::Granted(first) = store.reserve_now(&ask(600), NOW) else {
        panic!("fits")
    };
    // 600 reserved: another 600 does not fit, and nothing of it is reserved.
    let Admission::Refused(r) = store.reserve_now(&ask(600), NOW) else {
        panic!("must not fit while the first is outstanding")
    };
    assert_eq!(
        (r.metric, r.limit, r.remaining, r.requested, r.reset_secs),
        (Metric::Tokens, 1000, 400, 600, 30)
    );
    assert_eq!(
        store.peek("r:requests:m29453760"),
        (0, 1),
        "refusal reserved nothing"
    );
    // Reconcile: the first used only 150 → 850 free again.
    store.settle_now(
        &first,
        Amounts {
            requests: 1,
            tokens: 150,
            cost: 0,
        },
        NOW,
    );
    assert_eq!(store.peek("r:tokens:m29453760"), (150, 0));
    let Admission::Granted(second) = store.reserve_now(&ask(600), NOW) else {
        panic!("fits after reconcile")
    };
    // Refund (cancelled before any output): only the request is charged.
    store.settle_now(
        &second,
        Amounts {
            requests: 1,
            tokens: 0,
            cost: 0,
        },
        NOW,
    );
    assert_eq!(store.peek("r:tokens:m29453760"), (150, 0));
    assert_eq!(store.peek("r:requests:m29453760"), (2, 0));
    // The next window starts empty.
    let Admission::Refused(_) = store.reserve_now(&ask(1000), NOW + 10) else {
        panic!("same window: 150 used")
    };
    let Admission::Granted(_) = store.reserve_now(&ask_at(1000, NOW + 60), NOW + 60) else {
        panic!("new window")
    };
}

#[test]
fn requests_per_window_are_capped_exactly() {
    let store = MemoryLimiter::new();
    let rules = vec![rule(
        "rpm",
        vec![],
        vec![Limit {
            metric: Metric::Requests,
            window: Window::Minute,
            max: 10,
        }],
    )];
    let d = plan(
        &rules,
        &subject("a"),
        Amounts {
            requests: 1,
            ..Amounts::default()
        },
        NOW,
    );
    let granted = (0..25)
        .filter(|_| matches!(store.reserve_now(&d, NOW), Admission::Granted(_)))
        .count();
    assert_eq!(granted, 10);
}

#[test]
fn refusal_headers_follow_openai_names() {
    let r = Refusal {
        rule: "r".into(),
        metric: Metric::Tokens,
        window: Window::Minute,
        limit: 1000,
        remaining: 10,
        requested: 50,
        reset_secs: 7,
    };
    assert_eq!(
        refusal_headers(&r),
        vec![
            ("retry-after", "7".to_owned()),
            ("x-ratelimit-limit-tokens", "1000".to_owned()),
            ("x-ratelimit-remaining-tokens", "10".to_owned()),
            ("x-ratelimit-reset-tokens", "7s".to_owned()),
        ]
    );
    assert!(r.to_string().contains("tokens per minute"));
    let cost = Refusal {
        metric: Metric::Cost,
        limit: 2_000_000,
        ..r
    };
    assert!(refusal_headers(&cost).contains(&("x-ratelimit-limit-budget-usd", "2.000000".into())));
}

#[test]
fn memory_settles_once_and_a_cancelled_reserve_releases_nothing_of_others() {
    let store = MemoryLimiter::new();
    let held = ask(600);
    let Admission::Granted(r) = store.reserve_now(&held, NOW) else {
        panic!("fits")
    };
    // A reserve cancelled before it ran: its settlement must not release `held`'s capacity.
    let never = ask(600);
    store.settle_now(&Reservation::of(&never), Amounts::default(), NOW);
    let key = &held.counters[0].key;
    assert_eq!(store.peek(key), (0, 600));
    let used = Amounts {
        requests: 1,
        tokens: 10,
        cost: 10,
    };
    store.settle_now(&r, used, NOW);
    store.settle_now(&r, used, NOW);
    assert_eq!(store.peek(key).1, 0, "released once");
    assert_eq!(store.peek(key).0, 10, "charged once");
}

proptest::proptest! {
    /// Saturating everywhere: no amount, however large, wraps a reservation to a small number
    /// or panics; a demand over the limit is refused, never admitted by overflow.
    #[test]
    fn huge_amounts_never_wrap(a in proptest::prelude::any::<u64>(), b in proptest::prelude::any::<u64>(), limit in proptest::prelude::any::<u64>()) {
        let store = MemoryLimiter::new();
        let mut d1 = ask(a);
        d1.counters[0].limit = limit;
        let mut d2 = ask(b);
        d2.counters[0].limit = limit;
        let key = d1.counters[0].key.clone();
        let g1 = matches!(store.reserve_now(&d1, NOW), Admission::Granted(_));
        proptest::prop_assert_eq!(g1, a <= limit);
        let g2 = matches!(store.reserve_now(&d2, NOW), Admission::Granted(_));
        let held = if g1 { a } else { 0 };
        proptest::prop_assert_eq!(g2, held.checked_add(b).is_some_and(|t| t <= limit));
        let (_, reserved) = store.peek(&key);
        proptest::prop_assert!(reserved >= held, "never below what was granted");
    }
}

/// One token counter per minute, limit 1000 (tests above adjust the limit as they need).
fn ask(tokens: u64) -> Demand {
    let rules = [Rule {
        name: "t".into(),
        per: vec![],
        consumers: vec![],
        teams: vec![],
        models: vec![],
        limits: vec![Limit {
            metric: Metric::Tokens,
            window: Window::Minute,
            max: 1000,
        }],
    }];
    plan(
        &rules,
        &subject("a"),
        Amounts {
            requests: 1,
            tokens,
            cost: 0,
        },
        NOW,
    )
}
