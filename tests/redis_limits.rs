//! Shared limits on a real Redis: two `tollgate serve` processes, one `redis-server` (Debian's
//! package; .ci/run installs it) started by the test on a free port, spoken to over ext_proc
//! gRPC the way Envoy speaks to tollgate. No Envoy here: these tests are about the store.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers")]

mod common;
use common::{free_port, header_map, http_get, open_stream};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tollgate::proto::*;

/// A redis-server of our own (never a system service).
struct Redis {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server must be installed (apt-get install -y redis-server; .ci/run does it)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_millis(500))
    }

    fn ping(&self) -> redis::RedisResult<String> {
        let mut c = self.conn()?;
        c.set_read_timeout(Some(Duration::from_millis(500)))?;
        redis::cmd("PING").query(&mut c)
    }

    /// Sum of field `f` (`u` used, `r` reserved) over keys matching `pattern`.
    fn sum(&self, pattern: &str, f: &str) -> u64 {
        let mut c = self.conn().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut c).unwrap();
        keys.iter()
            .map(|k| {
                redis::cmd("HGET")
                    .arg(k)
                    .arg(f)
                    .query::<Option<u64>>(&mut c)
                    .unwrap()
                    .unwrap_or(0)
            })
            .sum()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Tollgate {
    child: Child,
    grpc: String,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(redis_url: &str, failure_mode: &str, rule: &str) -> String {
    format!(
        r#"
version: 1
log: {{ level: warn }}
backends:
  - {{ name: alpha, kind: openai }}
models:
  - {{ name: m, backend: alpha }}
pricing:
  defaults: false
  models:
    - {{ model: m, input: 1.0, output: 1.0 }}
limits:
  store: redis
  default_max_tokens: 40
  redis:
    url: {redis_url}
    command_timeout: 100ms
    failure_mode: {failure_mode}
    breaker_failures: 2
    breaker_cooldown: 500ms
    key_prefix: t
  rules:
{rule}
"#
    )
}

fn tollgate(cfg: &str) -> Tollgate {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, cfg).unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--grpc-listen", &grpc, "--admin-listen", &admin])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if http_get(&admin, "/ready").is_some_and(|r| r.contains("limits: up")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tollgate never became ready with Redis up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Tollgate {
        child,
        grpc,
        admin,
        _dir: dir,
    }
}

fn headers(
    kind: fn(HttpHeaders) -> processing_request::Request,
    pairs: &[(&str, &str)],
) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(kind(HttpHeaders {
            headers: Some(header_map(pairs)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn body(
    kind: fn(HttpBody) -> processing_request::Request,
    b: &[u8],
    eos: bool,
) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(kind(HttpBody {
            body: b.to_vec(),
            end_of_stream: eos,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The request body: its length is the prompt estimate (tokens, and µ$ at $1/M).
const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

/// What happened to one request.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Admitted,
    Refused(u32),
}

/// One request as Envoy would run it; an admitted one gets a JSON answer reporting
/// `prompt` + `completion` tokens. Returns the outcome and how long admission took.
async fn request(grpc: &str, prompt: u64, completion: u64) -> (Outcome, Duration) {
    let mut c = ExternalProcessorClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    let (tx, mut replies) = open_stream(&mut c).await;
    tx.send(headers(
        processing_request::Request::RequestHeaders,
        &[(":method", "POST"), (":path", "/v1/chat/completions")],
    ))
    .await
    .unwrap();
    replies.next().await.unwrap().unwrap();
    let started = Instant::now();
    tx.send(body(processing_request::Request::RequestBody, BODY, true))
        .await
        .unwrap();
    let r = replies.next().await.unwrap().unwrap();
    let took = started.elapsed();
    if let Some(processing_response::Response::ImmediateResponse(ir)) = r.response {
        return (Outcome::Refused(ir.status.unwrap().code as u32), took);
    }
    tx.send(headers(
        processing_request::Request::ResponseHeaders,
        &[(":status", "200"), ("content-type", "application/json")],
    ))
    .await
    .unwrap();
    let r = replies.next().await.unwrap().unwrap();
    assert!(
        r.mode_override.is_some(),
        "a budgeted request asks for the response body"
    );
    {
        let answer = format!(
            r#"{{"id":"x","choices":[],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}}}"#,
            prompt + completion
        );
        tx.send(body(
            processing_request::Request::ResponseBody,
            answer.as_bytes(),
            true,
        ))
        .await
        .unwrap();
        replies.next().await.unwrap().unwrap();
    }
    drop(tx);
    (Outcome::Admitted, took)
}

/// Waits until at least `secs` are left in the current UTC minute (RPM windows).
fn wait_for_window_room(secs: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 60 - now % 60;
    if left < secs {
        std::thread::sleep(Duration::from_secs(left + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_a_budget_under_100_concurrent_callers() {
    let redis = Redis::start();
    // Body bytes + 40 output tokens reserved = the worst case in µ$; 70 µ$ actually used.
    let rule = "    - { name: budget, cost_per_day: 0.002 }";
    let a = tollgate(&config(&redis.url(), "closed", rule));
    let b = tollgate(&config(&redis.url(), "closed", rule));
    // One request through each replica first: both serve from the shared budget (under the
    // burst alone, one replica may legitimately take the whole budget before the other's
    // first request arrives).
    let mut admitted = [0u32; 2];
    for (i, grpc) in [&a.grpc, &b.grpc].into_iter().enumerate() {
        let (outcome, _) = request(grpc, 30, 40).await;
        assert!(matches!(outcome, Outcome::Admitted), "replica {i} admits");
        admitted[i] += 1;
    }
    let mut tasks = Vec::new();
    for i in 0..100 {
        let grpc = if i % 2 == 0 {
            a.grpc.clone()
        } else {
            b.grpc.clone()
        };
        tasks.push(tokio::spawn(async move { request(&grpc, 30, 40).await }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (outcome, _) = t.await.unwrap();
        match outcome {
            Outcome::Admitted => admitted[i % 2] += 1,
            Outcome::Refused(s) => assert_eq!(s, 429),
        }
    }
    // Settlements are queued and applied in the background: wait for them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.sum("t:budget:cost:*", "r") != 0 {
        assert!(Instant::now() < deadline, "reservations did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spent = redis.sum("t:budget:cost:*", "u");
    let budget = 2000;
    let one_request_max = BODY.len() as u64 + 40;
    assert!(
        spent <= budget + one_request_max,
        "spent {spent} µ$ over budget {budget} + {one_request_max}"
    );
    assert_eq!(
        u64::from(admitted[0] + admitted[1]) * 70,
        spent,
        "every admitted request charged its actual cost"
    );
    // A refusal means used + reserved + worst > budget, and each admitted request holds at
    // most `worst`: so at least budget / worst requests were admitted.
    assert!(
        u64::from(admitted[0] + admitted[1]) >= budget / one_request_max,
        "refused too early: admitted {admitted:?}"
    );
    assert!(
        admitted[0] > 0 && admitted[1] > 0,
        "both replicas admitted: {admitted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_per_minute_are_shared_across_replicas() {
    let redis = Redis::start();
    let rule = "    - { name: rpm, requests_per_minute: 10 }";
    let a = tollgate(&config(&redis.url(), "closed", rule));
    let b = tollgate(&config(&redis.url(), "closed", rule));
    wait_for_window_room(20);
    let mut tasks = Vec::new();
    for i in 0..30 {
        let grpc = if i % 2 == 0 {
            a.grpc.clone()
        } else {
            b.grpc.clone()
        };
        tasks.push(tokio::spawn(async move { request(&grpc, 5, 5).await }));
    }
    let mut admitted = 0;
    for t in tasks {
        match t.await.unwrap().0 {
            Outcome::Admitted => admitted += 1,
            Outcome::Refused(s) => assert_eq!(s, 429),
        }
    }
    assert_eq!(admitted, 10, "exactly the limit, across both replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_or_frozen_never_blocks_and_applies_the_fail_mode() {
    let mut redis = Redis::start();
    let rule = "    - { name: rpm, requests_per_minute: 100000 }";
    let open = tollgate(&config(&redis.url(), "open", rule));
    let closed = tollgate(&config(&redis.url(), "closed", rule));
    let counted = |r: &Redis| r.sum("t:rpm:*", "u") + r.sum("t:rpm:*", "r");

    assert_eq!(request(&open.grpc, 1, 1).await.0, Outcome::Admitted);
    assert_eq!(request(&closed.grpc, 1, 1).await.0, Outcome::Admitted);

    // Frozen: connections stay open, nothing answers.
    redis.signal("-STOP");
    let limit = Duration::from_millis(100 + 400); // command timeout + scheduling slack
    for _ in 0..5 {
        let (o, took) = request(&open.grpc, 1, 1).await;
        assert_eq!(o, Outcome::Admitted, "fail-open admits");
        assert!(took < limit, "waited {took:?} on a frozen Redis");
        let (o, took) = request(&closed.grpc, 1, 1).await;
        assert_eq!(o, Outcome::Refused(503), "fail-closed refuses");
        assert!(took < limit, "waited {took:?} on a frozen Redis");
    }
    let metrics = http_get(&open.admin, "/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tollgate_limits_fail_open_total ") && !l.ends_with(" 0")),
        "fail-open is recorded: {metrics}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while !http_get(&open.admin, "/ready")
        .unwrap()
        .contains("limits: down")
    {
        assert!(Instant::now() < deadline, "/ready reports Redis down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Thawed: shared counting resumes within 5 s.
    redis.signal("-CONT");
    let thawed = Instant::now();
    let before = counted(&redis);
    loop {
        let _ = request(&closed.grpc, 1, 1).await;
        if counted(&redis) > before {
            break;
        }
        assert!(
            thawed.elapsed() < Duration::from_secs(5),
            "counting did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stopped: connection refused.
    redis.stop();
    for _ in 0..5 {
        let (o, took) = request(&open.grpc, 1, 1).await;
        assert_eq!(o, Outcome::Admitted);
        assert!(took < limit, "waited {took:?} on a stopped Redis");
        let (o, took) = request(&closed.grpc, 1, 1).await;
        assert_eq!(o, Outcome::Refused(503));
        assert!(took < limit, "waited {took:?} on a stopped Redis");
    }
    // Back on the same port: counting resumes within 5 s, on both replicas.
    redis.spawn();
    let back = Instant::now();
    for t in [&open, &closed] {
        loop {
            let before = counted(&redis);
            let (o, _) = request(&t.grpc, 1, 1).await;
            if o == Outcome::Admitted && counted(&redis) > before {
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(5),
                "counting did not resume after restart"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        http_get(&open.admin, "/ready")
            .unwrap()
            .contains("limits: up")
    );
    // Still alive: no panic anywhere.
    for t in [&open, &closed] {
        assert!(
            http_get(&t.admin, "/healthz")
                .unwrap()
                .starts_with("HTTP/1.1 200")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_settlement_missed_during_an_outage_is_retried_when_redis_is_back() {
    let redis = Redis::start();
    let rule = "    - { name: month, cost_per_month: 10 }";
    let t = tollgate(&config(&redis.url(), "closed", rule));
    // Admitted (reserved) while Redis is up ...
    let mut c = ExternalProcessorClient::connect(format!("http://{}", t.grpc))
        .await
        .unwrap();
    let (tx, mut replies) = open_stream(&mut c).await;
    tx.send(headers(
        processing_request::Request::RequestHeaders,
        &[(":method", "POST"), (":path", "/v1/chat/completions")],
    ))
    .await
    .unwrap();
    replies.next().await.unwrap().unwrap();
    tx.send(body(processing_request::Request::RequestBody, BODY, true))
        .await
        .unwrap();
    let r = replies.next().await.unwrap().unwrap();
    assert!(!matches!(
        r.response,
        Some(processing_response::Response::ImmediateResponse(_))
    ));
    assert!(redis.sum("t:month:*", "r") > 0, "reserved");
    // ... Redis freezes; requests time out (their reserves wait in Redis' socket and run
    // later) and open the circuit breaker ...
    redis.signal("-STOP");
    for _ in 0..3 {
        assert_eq!(request(&t.grpc, 1, 1).await.0, Outcome::Refused(503));
    }
    // ... and the admitted request ends (client gone) while the circuit is open: its
    // settlement is not even sent.
    drop(tx);
    drop(replies);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.signal("-CONT");
    // Back: the late reserves are cancelled and the missed settlement is retried, exactly once.
    let back = Instant::now();
    loop {
        let (reserved, used) = (redis.sum("t:month:*", "r"), redis.sum("t:month:*", "u"));
        if reserved == 0 {
            assert_eq!(used, 0, "nothing was generated: nothing charged");
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "reservations still held after Redis came back: {reserved}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn settlements_are_idempotent_and_cancel_late_reserves() {
    use tollgate::limits::redis::{RedisLimiter, RedisSettings};
    use tollgate::limits::{Admission, Amounts, Limit, Limiter, Metric, Rule, Subject, Window};
    let redis = Redis::start();
    let limiter = RedisLimiter::new(RedisSettings {
        url: tollgate::secret::Secret::new(redis.url()),
        command_timeout: Duration::from_millis(500),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_secs(1),
        key_prefix: "i".into(),
    })
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(limiter.clone().run(stop.clone()));
    while limiter.health() != tollgate::limits::Health::Up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rules = vec![Rule {
        name: "r".into(),
        per: vec![],
        consumers: vec![],
        teams: vec![],
        models: vec![],
        limits: vec![Limit {
            metric: Metric::Tokens,
            window: Window::Day,
            max: 1000,
        }],
    }];
    let subject = Subject {
        consumer: "c",
        team: None,
        model: "m",
    };
    let worst = Amounts {
        requests: 1,
        tokens: 100,
        cost: 0,
    };
    let now = tollgate::limits::unix_now();
    let demand = tollgate::limits::plan(&rules, &subject, worst, now);
    let Admission::Granted(r) = limiter.reserve(&demand, now).await.unwrap() else {
        panic!("fits")
    };
    let actual = Amounts {
        requests: 1,
        tokens: 30,
        cost: 0,
    };
    limiter.settle(&r, actual).await.unwrap();
    limiter.settle(&r, actual).await.unwrap();
    assert_eq!(
        (redis.sum("i:r:*", "u"), redis.sum("i:r:*", "r")),
        (30, 0),
        "a retried settlement applies once"
    );
    // A reserve that timed out is cancelled first; arriving late, it holds nothing.
    let late = tollgate::limits::plan(&rules, &subject, worst, now);
    limiter
        .settle(
            &tollgate::limits::Reservation::of(&late),
            Amounts::default(),
        )
        .await
        .unwrap();
    assert!(
        limiter.reserve(&late, now).await.is_err(),
        "cancelled before it ran"
    );
    assert_eq!(redis.sum("i:r:*", "r"), 0);
    stop.cancel();
}

async fn connected(
    redis: &Redis,
    prefix: &str,
    timeout: Duration,
) -> std::sync::Arc<tollgate::limits::redis::RedisLimiter> {
    use tollgate::limits::Limiter;
    use tollgate::limits::redis::{RedisLimiter, RedisSettings};
    let limiter = RedisLimiter::new(RedisSettings {
        url: tollgate::secret::Secret::new(redis.url()),
        command_timeout: timeout,
        breaker_failures: 2,
        breaker_cooldown: Duration::from_secs(30),
        key_prefix: prefix.into(),
    })
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(limiter.clone().run(stop));
    while limiter.health() != tollgate::limits::Health::Up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    limiter
}

fn token_rule(max: u64) -> Vec<tollgate::limits::Rule> {
    use tollgate::limits::{Limit, Metric, Rule, Window};
    vec![Rule {
        name: "r".into(),
        per: vec![],
        consumers: vec![],
        teams: vec![],
        models: vec![],
        limits: vec![Limit {
            metric: Metric::Tokens,
            window: Window::Day,
            max,
        }],
    }]
}

fn tokens(n: u64) -> tollgate::limits::Amounts {
    tollgate::limits::Amounts {
        requests: 1,
        tokens: n,
        cost: 0,
    }
}

const SUBJECT: tollgate::limits::Subject<'static> = tollgate::limits::Subject {
    consumer: "c",
    team: None,
    model: "m",
};

#[tokio::test]
async fn amounts_up_to_u64_max_neither_wrap_nor_break_the_scripts() {
    use tollgate::limits::{Admission, Limiter, plan, unix_now};
    let redis = Redis::start();
    let limiter = connected(&redis, "h", Duration::from_millis(500)).await;
    let now = unix_now();
    // An absurd amount against a real limit: refused, never admitted by wrapping to 0.
    let d = plan(&token_rule(1000), &SUBJECT, tokens(u64::MAX), now);
    assert!(matches!(
        limiter.reserve(&d, now).await.unwrap(),
        Admission::Refused(_)
    ));
    // Against an "unlimited" limit: admitted (clamped) and released exactly.
    let d = plan(&token_rule(u64::MAX), &SUBJECT, tokens(u64::MAX), now);
    let Admission::Granted(r) = limiter.reserve(&d, now).await.unwrap() else {
        panic!("fits an unlimited limit")
    };
    assert_eq!(
        redis.sum("h:r:*", "r"),
        tollgate::limits::redis::MAX_WIRE_AMOUNT
    );
    limiter.settle(&r, tokens(u64::MAX)).await.unwrap();
    assert_eq!(redis.sum("h:r:*", "r"), 0);
    assert_eq!(
        redis.sum("h:r:*", "u"),
        tollgate::limits::redis::MAX_WIRE_AMOUNT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_store_state_never_trips_the_breaker() {
    use tollgate::limits::{Admission, Health, Limiter, plan, unix_now};
    let mut redis = Redis::start();
    let limiter = connected(&redis, "b", Duration::from_millis(100)).await;
    redis.signal("-STOP");
    // Far more failed reads than the breaker's threshold (2).
    for _ in 0..6 {
        assert!(limiter.outstanding("").await.is_err());
    }
    assert_eq!(limiter.breaker_failures(), 0, "reads are not counted");
    redis.signal("-CONT");
    let now = unix_now();
    let d = plan(&token_rule(1000), &SUBJECT, tokens(10), now);
    // The first reserve after the outage goes to Redis (the circuit never opened).
    assert!(matches!(
        limiter.reserve(&d, now).await.unwrap(),
        Admission::Granted(_)
    ));
    assert_eq!(limiter.outstanding("").await.unwrap(), 10);
    assert_ne!(limiter.health(), Health::Down);
    redis.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_cancelled_while_redis_holds_its_reserve_releases_it() {
    let redis = Redis::start();
    let rule = "    - { name: day, cost_per_day: 10 }";
    // A command timeout longer than the pause: the reserve is still in flight when the
    // client goes away (a timeout would take the other, older path).
    let cfg = config(&redis.url(), "closed", rule)
        .replace("command_timeout: 100ms", "command_timeout: 5s");
    let t = tollgate(&cfg);
    let mut c = ExternalProcessorClient::connect(format!("http://{}", t.grpc))
        .await
        .unwrap();
    let (tx, mut replies) = open_stream(&mut c).await;
    tx.send(headers(
        processing_request::Request::RequestHeaders,
        &[(":method", "POST"), (":path", "/v1/chat/completions")],
    ))
    .await
    .unwrap();
    replies.next().await.unwrap().unwrap();
    {
        let mut admin = redis.conn().unwrap();
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1500)
            .arg("ALL")
            .query(&mut admin)
            .unwrap();
    }
    tx.send(body(processing_request::Request::RequestBody, BODY, true))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Envoy cancels the stream (client gone) while Redis still holds the reserve.
    drop(tx);
    drop(replies);
    drop(c);
    // After the pause the reserve runs, then its cancellation: nothing stays held.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = redis.conn().unwrap();
        let markers: Vec<String> = redis::cmd("KEYS").arg("t:res:*").query(&mut conn).unwrap();
        let states: Vec<String> = markers
            .iter()
            .map(|k| redis::cmd("GET").arg(k).query::<String>(&mut conn).unwrap())
            .collect();
        let reserved = redis.sum("t:day:*", "r");
        if reserved == 0 && states.iter().all(|s| s == "done" || s == "void") && !states.is_empty()
        {
            assert_eq!(
                redis.sum("t:day:*", "u"),
                0,
                "nothing generated, nothing charged"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reservation still held: reserved {reserved}, markers {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = http_get(&t.admin, "/metrics").unwrap_or_default();
    assert!(
        text.contains(r#"tollgate_limiter_errors_total{op="reserve_cancelled"} 1"#),
        "the drop path released it: {text}"
    );
}
