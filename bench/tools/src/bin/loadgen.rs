//! HTTP/1.1 load generator for `make bench` and `make soak`: one JSON summary on stdout.
//!
//! Modes: `closed` (N connections, back to back: saturation throughput), `open` (a fixed
//! offered rate, latency measured from each request's *scheduled* time so a stalled system
//! cannot hide its queueing — no coordinated omission), `stream` (closed loop of SSE
//! requests: time to first event, gap between body reads, events), `hold` (N streams opened
//! at a ramp and held until the upstream ends them: memory per open stream) and `soak`
//! (streams with random client cancellations). Single-threaded runtime: pinned to one core
//! it is cheap enough that a 15k req/s Envoy is the bottleneck, not the generator.

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Load generator for tollgate's benchmarks (JSON summary on stdout)")]
struct Args {
    /// Target URL (http only), e.g. http://127.0.0.1:10000/v1/chat/completions.
    #[arg(long)]
    url: String,
    /// Request header `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// File holding the request body (POST).
    #[arg(long)]
    body: std::path::PathBuf,
    /// Seconds to run (closed, open, stream, soak).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// N connections sending back to back.
    Closed {
        #[arg(long, default_value_t = 32)]
        connections: usize,
    },
    /// A fixed offered rate (requests/s), connections opened as needed.
    Open {
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 4000)]
        max_connections: usize,
    },
    /// N concurrent SSE requests back to back.
    Stream {
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Opens N streams at `ramp` per second and waits for all to end.
    Hold {
        #[arg(long)]
        streams: usize,
        #[arg(long, default_value_t = 500.0)]
        ramp: f64,
    },
    /// N concurrent SSE requests; each is cancelled after a random number of body reads
    /// with probability `cancel`.
    Soak {
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 0.3)]
        cancel: f64,
    },
}

struct Target {
    addr: SocketAddr,
    request: hyper::Request<Full<Bytes>>,
}

impl Target {
    fn parse(args: &Args) -> Result<Self, String> {
        let uri: hyper::Uri = args.url.parse().map_err(|e| format!("bad --url: {e}"))?;
        let auth = uri.authority().ok_or("--url needs host:port")?.clone();
        let addr: SocketAddr = auth
            .as_str()
            .parse()
            .map_err(|e| format!("--url host must be ip:port: {e}"))?;
        let body = std::fs::read(&args.body).map_err(|e| format!("--body: {e}"))?;
        let mut b = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header("host", auth.as_str())
            .header("content-length", body.len());
        for h in &args.headers {
            let (k, v) = h.split_once(':').ok_or(format!("bad header {h:?}"))?;
            b = b.header(k.trim(), v.trim());
        }
        let request = b
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        Ok(Self { addr, request })
    }

    fn request(&self) -> hyper::Request<Full<Bytes>> {
        let mut r = hyper::Request::new(self.request.body().clone());
        *r.method_mut() = self.request.method().clone();
        *r.uri_mut() = self.request.uri().clone();
        *r.headers_mut() = self.request.headers().clone();
        r
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        Ok(send)
    }
}

/// Counts and latencies (µs) of one run.
#[derive(Default)]
struct Tally {
    ok: u64,
    status: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    latency_us: Vec<u64>,
    ttft_us: Vec<u64>,
    gap_us: Vec<u64>,
    events: u64,
    cancelled: u64,
}

impl Tally {
    fn error(&mut self, e: impl Into<String>) {
        let mut e: String = e.into();
        e.truncate(80);
        *self.errors.entry(e).or_default() += 1;
    }
    fn status(&mut self, s: u16) {
        *self.status.entry(s).or_default() += 1;
        if (200..300).contains(&s) {
            self.ok += 1;
        }
    }
}

fn pct(v: &mut [u64], p: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied()
}

fn summary(t: &mut Tally, elapsed: f64) -> Value {
    let total: u64 = t.status.values().sum();
    let dist = |v: &mut Vec<u64>| {
        json!({
            "n": v.len(),
            "p50_us": pct(v, 0.50), "p90_us": pct(v, 0.90), "p99_us": pct(v, 0.99),
            "max_us": v.iter().max(),
        })
    };
    json!({
        "elapsed_s": elapsed,
        "responses": total,
        "ok": t.ok,
        "rps": t.ok as f64 / elapsed,
        "status": t.status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "errors": t.errors,
        "latency": dist(&mut t.latency_us),
        "ttft": dist(&mut t.ttft_us),
        "gap": dist(&mut t.gap_us),
        "events": t.events,
        "cancelled": t.cancelled,
    })
}

/// One request on `send`; for streams, times each body read. `cancel_after` drops the
/// response after that many body reads (a client going away).
async fn exchange(
    target: &Target,
    send: &mut SendRequest<Full<Bytes>>,
    started: Instant,
    tally: &RefCell<Tally>,
    streaming: bool,
    cancel_after: Option<usize>,
) -> Result<bool, String> {
    send.ready().await.map_err(|e| format!("ready: {e}"))?;
    let resp = send
        .send_request(target.request())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut last: Option<Instant> = None;
    let mut reads = 0usize;
    let mut events = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if streaming {
            let now = Instant::now();
            match last {
                None => tally
                    .borrow_mut()
                    .ttft_us
                    .push((now - started).as_micros() as u64),
                Some(prev) => tally
                    .borrow_mut()
                    .gap_us
                    .push((now - prev).as_micros() as u64),
            }
            last = Some(now);
            events += data.windows(5).filter(|w| w == b"data:").count() as u64;
            reads += 1;
            if cancel_after.is_some_and(|n| reads >= n) {
                let mut t = tally.borrow_mut();
                t.cancelled += 1;
                t.events += events;
                return Ok(false); // the connection is dropped with `send`
            }
        }
    }
    let mut t = tally.borrow_mut();
    t.latency_us.push(started.elapsed().as_micros() as u64);
    t.events += events;
    t.status(status);
    Ok(true)
}

/// Back-to-back requests on one connection (reconnecting after errors) until `deadline`.
async fn worker(
    target: Rc<Target>,
    tally: Rc<RefCell<Tally>>,
    deadline: Instant,
    streaming: bool,
    cancel: f64,
    mut seed: u64,
) {
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    while Instant::now() < deadline {
        let mut send = match conn.take() {
            Some(s) => s,
            None => match target.connect().await {
                Ok(s) => s,
                Err(e) => {
                    tally.borrow_mut().error(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // xorshift: cheap, deterministic per worker
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let cancel_after =
            ((seed % 10_000) as f64 / 10_000.0 < cancel).then(|| 1 + (seed >> 16) as usize % 150);
        match exchange(
            &target,
            &mut send,
            Instant::now(),
            &tally,
            streaming,
            cancel_after,
        )
        .await
        {
            Ok(true) => conn = Some(send),
            Ok(false) => {}
            Err(e) => tally.borrow_mut().error(e),
        }
    }
}

async fn run(args: Args) -> Result<Value, String> {
    let target = Rc::new(Target::parse(&args)?);
    let tally = Rc::new(RefCell::new(Tally::default()));
    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let deadline = start + duration;
    let mut extra = json!({});
    match args.mode {
        Mode::Closed { connections } => {
            let tasks: Vec<_> = (0..connections)
                .map(|i| {
                    tokio::task::spawn_local(worker(
                        target.clone(),
                        tally.clone(),
                        deadline,
                        false,
                        0.0,
                        0x9e37 + i as u64,
                    ))
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        }
        Mode::Stream { concurrency } => {
            let tasks: Vec<_> = (0..concurrency)
                .map(|i| {
                    tokio::task::spawn_local(worker(
                        target.clone(),
                        tally.clone(),
                        deadline,
                        true,
                        0.0,
                        0x9e37 + i as u64,
                    ))
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        }
        Mode::Soak {
            concurrency,
            cancel,
        } => {
            let tasks: Vec<_> = (0..concurrency)
                .map(|i| {
                    tokio::task::spawn_local(worker(
                        target.clone(),
                        tally.clone(),
                        deadline,
                        true,
                        cancel,
                        0x2545_f491 + 7919 * i as u64,
                    ))
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        }
        Mode::Open {
            rate,
            max_connections,
        } => {
            let idle: Rc<RefCell<Vec<SendRequest<Full<Bytes>>>>> = Rc::default();
            let open = Rc::new(RefCell::new(0usize));
            let mut sent = 0u64;
            let mut shed = 0u64;
            let mut tasks = Vec::new();
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let due = ((now - start).as_secs_f64() * rate) as u64;
                while sent < due {
                    let scheduled = start + Duration::from_secs_f64(sent as f64 / rate);
                    sent += 1;
                    let pooled = idle.borrow_mut().pop();
                    if pooled.is_none() && *open.borrow() >= max_connections {
                        shed += 1;
                        continue;
                    }
                    let (target, tally, idle, open) =
                        (target.clone(), tally.clone(), idle.clone(), open.clone());
                    tasks.push(tokio::task::spawn_local(async move {
                        let mut send = match pooled {
                            Some(s) => s,
                            None => {
                                *open.borrow_mut() += 1;
                                match target.connect().await {
                                    Ok(s) => s,
                                    Err(e) => {
                                        *open.borrow_mut() -= 1;
                                        tally.borrow_mut().error(e);
                                        return;
                                    }
                                }
                            }
                        };
                        match exchange(&target, &mut send, scheduled, &tally, false, None).await {
                            Ok(_) => idle.borrow_mut().push(send),
                            Err(e) => {
                                *open.borrow_mut() -= 1;
                                tally.borrow_mut().error(e);
                            }
                        }
                    }));
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            for t in tasks {
                let _ = t.await;
            }
            extra = json!({"offered_rps": rate, "sent": sent, "shed": shed, "connections": *open.borrow()});
        }
        Mode::Hold { streams, ramp } => {
            let mut tasks = Vec::new();
            for i in 0..streams {
                let at = start + Duration::from_secs_f64(i as f64 / ramp);
                tokio::time::sleep_until(at.into()).await;
                let (target, tally) = (target.clone(), tally.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    let mut send = match target.connect().await {
                        Ok(s) => s,
                        Err(e) => return tally.borrow_mut().error(e),
                    };
                    if let Err(e) =
                        exchange(&target, &mut send, Instant::now(), &tally, true, None).await
                    {
                        tally.borrow_mut().error(e);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut out = summary(&mut tally.borrow_mut(), elapsed);
    if let (Some(o), Some(e)) = (out.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    Ok(out)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("{}", json!({"fatal": e.to_string()}));
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&rt, run(args)) {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", json!({"fatal": e}));
            std::process::ExitCode::FAILURE
        }
    }
}
