#!/usr/bin/env python3
"""`make bench`: tollgate's cost against Envoy alone, an empty ext_proc server, LiteLLM and Portkey.

Seven systems, all started at once and measured in interleaved rounds (so drift and other load
on the machine hit them alike), each in front of the same upstream processes:

  envoy        Envoy alone (shipped envoy.yaml without the ext_proc filter; the client sends
               the routing header and upstream key tollgate would add) — the denominator
  null         Envoy + an empty ext_proc server (bench/tools null-extproc: answers every
               message with no mutation, same processing modes) — the floor of the design
  route        Envoy + tollgate, routing only (bench/configs/tollgate-route.yaml)
  full         Envoy + tollgate with API keys, guard, usage/pricing and in-memory limits
               (bench/configs/tollgate-full.yaml)
  redis        `full` with the limits in a Redis (started here, on the system's core)
  litellm      LiteLLM proxy 1.100.5 (own venv, .venv-bench; bench/install_litellm.py)
  portkey      Portkey AI gateway 1.15.2 under node (own directory, .bench-portkey;
               bench/install_portkey.py), provider "openai" with a custom host per request
               (x-portkey-provider / x-portkey-custom-host headers); bench/portkey_guard.cjs
               refuses any non-loopback connect or DNS look-up and the run fails if it had to

Every system answers one chat and one streamed chat (echoed content, usage) before it is
measured.

Method: the system under test (Envoy, its processor, Redis, LiteLLM, Portkey) runs on CPU 0
(`taskset`, at exec, so runtimes size their thread pools for one core); the load generator
(bench/tools loadgen) and the upstreams (tollgate-demo-upstream) on CPU 1. CPU per request
comes from /proc/<pid>/stat (utime+stime of the process and its children) before and after
each run. Upstream headroom is checked by loading it directly from the same core.

Scenarios: `sat` 1 KiB chat, 32 connections closed loop (saturation); `rate` the same at a
fixed offered 2,000 req/s, open loop (latency from each request's scheduled time); `stream`
SSE chat of 200 delta events paced 10 ms apart (TTFT, gap between body reads, CPU per event);
`pii` a 16 KiB prompt dense with PII (saturation); `hold` thousands of concurrent open streams
(50 ms pacing) with RSS sampled over time (Envoy and the processor; Portkey's node process).
LiteLLM and Portkey take the fixed-rate scenario at min(rate, half their own saturation).

`phases` (its own systems, not in --systems): Envoy + the empty ext_proc server under four
processing modes, each adding one ext_proc phase — request headers; + request body BUFFERED;
+ response headers; + response body STREAMED — next to Envoy alone, 1 KiB chat at saturation
and the 200-event stream; for the stream also tollgate's own way, body mode NONE switched to
STREAMED by mode_override for SSE (null-extproc --stream-sse). Envoy's CPU per request of one
mode minus the previous one is what that phase costs Envoy; ext_proc messages per request come
from Envoy's own counters. This is the part of every ext_proc design's cost that no processor
can remove (docs/benchmark.md says how to read it).

Results: bench/results/<UTC timestamp>/{results.json,results.md,bench.png} and
bench/results/latest -> that dir. bench/results is git-ignored except bench/results/published/.

    make bench                       # full run (~20 min)
    make bench ARGS=--quick          # smoke test of the harness (~2 min)
    .venv/bin/python bench/run.py --systems envoy,null,route --scenarios sat,rate
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

import harness  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SUT_CPU, LOAD_CPU = "0", "1"
ALL_SYSTEMS = ["envoy", "null", "route", "full", "redis", "litellm", "portkey"]
ALL_SCENARIOS = ["sat", "rate", "stream", "pii", "hold", "phases"]
PEERS = ("litellm", "portkey")  # other gateways: ratios against each, latency at their own pace
LABELS = {
    "envoy": "Envoy alone",
    "null": "Envoy + empty ext_proc",
    "route": "Envoy + tollgate (routing)",
    "full": "Envoy + tollgate (guard+usage+limits, memory)",
    "redis": "Envoy + tollgate (guard+usage+limits, Redis)",
    "litellm": "LiteLLM proxy 1.100.5",
    "portkey": "Portkey gateway 1.15.2 (node)",
}
PORTKEY_DIR = ROOT / ".bench-portkey"
PORTKEY_GUARD = ROOT / "bench" / "portkey_guard.cjs"
GUARD_MARKER = "tollgate-bench-guard: refused outbound"
TOLLGATE_KEY = "tollgate-demo-key"
UPSTREAM_KEYS = {"alpha": "demo-alpha-key", "beta": "demo-beta-key"}
STREAM_EVENTS = 200
CHUNK_CHARS = 3


# ------------------------------------------------------------------------------------------
# Request bodies


def body_1k() -> dict[str, Any]:
    prompt = "Summarise the following paragraph in one sentence. " + "lorem ipsum dolor sit amet " * 34
    return {"model": "echo", "messages": [{"role": "user", "content": prompt}], "max_tokens": 256}


def body_stream(model: str = "echo") -> dict[str, Any]:
    # The echo model streams the last user message back CHUNK_CHARS characters per event.
    text = ("The quick brown fox jumps over the lazy dog. " * 20)[: STREAM_EVENTS * CHUNK_CHARS]
    return {"model": model, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": text}], "max_tokens": 512}


def body_pii(size: int = 16 * 1024) -> dict[str, Any]:
    rnd = random.Random(8)
    parts = []
    n = 0
    while sum(map(len, parts)) < size - 200:
        n += 1
        card = "4111 1111 1111 1111" if n % 3 else "5500 0000 0000 0004"
        parts.append(
            f"Customer {n}: jane.doe{n}@example.com, phone +1 415 555 {1000 + n % 9000:04d}, "
            f"card {card}, IBAN DE89 3704 0044 0532 0130 00, SSN 078-05-{1120 + n % 8000:04d}, "
            f"IP 10.{n % 250}.{rnd.randrange(250)}.7. Notes: renewal due, call back Tuesday. ")
    return {"model": "echo", "messages": [{"role": "user", "content": "".join(parts)}], "max_tokens": 256}


# ------------------------------------------------------------------------------------------
# Processes


def taskset(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv]


def cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and its live descendants (LiteLLM workers)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(f[11]) + int(f[12])) / CLK_TCK
    return total


def rss_bytes(pid: int) -> int:
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int(d.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def raise_circuit_breakers(cfg: Any) -> Any:
    """Envoy's default per-cluster circuit breakers cap concurrent requests at 1024; the held
    streams scenario needs more (see README, Benchmarks)."""
    for c in cfg["static_resources"]["clusters"]:
        c["circuit_breakers"] = {"thresholds": [{
            "max_connections": 100000, "max_pending_requests": 100000,
            "max_requests": 100000, "max_retries": 100}]}
    return cfg


# The `phases` scenario: Envoy + the empty ext_proc server, each mode adding one ext_proc phase
# to the one before (None: no ext_proc filter, Envoy alone). Static modes, except ph-sse.
PHASE_MODES: list[tuple[str, str, dict[str, str] | None]] = [
    ("ph-none", "Envoy alone (no ext_proc)", None),
    ("ph-hdr", "request headers", {"request_header_mode": "SEND", "request_body_mode": "NONE",
                                   "response_header_mode": "SKIP", "response_body_mode": "NONE"}),
    ("ph-body", "+ request body BUFFERED", {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
                                            "response_header_mode": "SKIP", "response_body_mode": "NONE"}),
    ("ph-resp", "+ response headers", {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
                                       "response_header_mode": "SEND", "response_body_mode": "NONE"}),
    ("ph-rbody", "+ response body STREAMED", {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
                                              "response_header_mode": "SEND", "response_body_mode": "STREAMED"}),
    # tollgate's own way (stream scenario only): body mode NONE, switched to STREAMED by
    # mode_override in the response-headers answer for SSE (null-extproc --stream-sse).
    ("ph-sse", "response headers, SSE body STREAMED by mode_override",
     {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
      "response_header_mode": "SEND", "response_body_mode": "NONE"}),
]
PHASE_SAT = ("ph-none", "ph-hdr", "ph-body", "ph-resp", "ph-rbody")
PHASE_STREAM = ("ph-none", "ph-resp", "ph-rbody", "ph-sse")


def set_processing_mode(cfg: Any, mode: dict[str, str]) -> Any:
    """The downstream ext_proc filter's processing_mode replaced by `mode` (trailers skipped)."""
    for lst in cfg["static_resources"]["listeners"]:
        for chain in lst["filter_chains"]:
            for f in chain["filters"]:
                for hf in f.get("typed_config", {}).get("http_filters", []):
                    if hf.get("name") == "envoy.filters.http.ext_proc":
                        hf["typed_config"]["processing_mode"] = {
                            **mode, "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
    return cfg


class System:
    """One system under test: Envoy (+ processor), LiteLLM or Portkey, with its own ports."""

    def __init__(self, name: str, work: Path, target: Path, upstreams: dict[str, int],
                 phase_mode: dict[str, str] | None = None) -> None:
        self.name = name
        # Only for the `phases` systems (ph-*): the ext_proc processing mode, None = no filter.
        self.phase_mode = phase_mode
        self.work = work / name
        self.work.mkdir(parents=True)
        self.target = target
        self.upstreams = upstreams
        self.procs: dict[str, harness.Proc] = {}
        self.port = harness.free_port()
        self.admin = harness.free_port()
        self.grpc = harness.free_port()
        self.tg_admin = harness.free_port()
        self.redis_port = harness.free_port()

    @property
    def url(self) -> str:
        path = "/chat/completions" if self.name == "litellm" else "/v1/chat/completions"
        return f"http://127.0.0.1:{self.port}{path}"

    def headers(self, backend: str = "alpha") -> list[str]:
        h = ["content-type: application/json"]
        if self.name in ("envoy", "null") or self.name.startswith("ph-"):
            h += [f"x-tollgate-backend: {backend}", f"authorization: Bearer {UPSTREAM_KEYS[backend]}"]
        elif self.name in ("full", "redis"):
            h.append(f"authorization: Bearer {TOLLGATE_KEY}")
        elif self.name == "portkey":
            # The OSS gateway's per-request routing: provider plus a custom base URL (loopback
            # is in its default TRUSTED_CUSTOM_HOSTS; set explicitly at start).
            h += ["x-portkey-provider: openai",
                  f"x-portkey-custom-host: http://127.0.0.1:{self.upstreams[backend]}/v1",
                  f"authorization: Bearer {UPSTREAM_KEYS[backend]}"]
        return h

    def start(self) -> None:
        if self.name == "litellm":
            self._start_litellm()
            return self.verify()
        if self.name == "portkey":
            self._start_portkey()
            return self.verify()
        if self.name == "null" or (self.name.startswith("ph-") and self.phase_mode):
            extra = ["--stream-sse"] if self.name == "ph-sse" else []
            self._spawn("null", [str(self.target / "null-extproc"), "--listen", f"127.0.0.1:{self.grpc}", *extra])
            harness.wait_until("null-extproc", lambda: harness._port_open(self.grpc), timeout=10)
        elif self.name in ("route", "full", "redis"):
            self._start_tollgate()
        cfg = harness.remap_envoy_config(harness.load_yaml(harness.ENVOY_CONFIG), {
            10000: self.port, 9901: self.admin, 50051: self.grpc,
            8081: self.upstreams["alpha"], 8082: self.upstreams["beta"]})
        if self.name == "envoy" or (self.name.startswith("ph-") and not self.phase_mode):
            cfg = harness.strip_ext_proc(cfg)
        elif self.phase_mode:
            cfg = set_processing_mode(cfg, self.phase_mode)
        cfg = raise_circuit_breakers(cfg)
        path = harness.dump_yaml(cfg, self.work / "envoy.yaml")
        self._spawn("envoy", [str(harness.envoy_binary()), "-c", str(path), "--disable-hot-restart",
                              "--base-id", str(self.port), "--concurrency", "1", "--log-level", "error"],
                    stdout=self.work / "envoy-access.log")
        harness.wait_until("envoy", lambda: harness._port_open(self.port), timeout=20,
                           on_fail=self.tails)
        self.verify()

    def verify(self) -> None:
        """One chat and one streamed chat through the system: the echoed content and the usage
        must come back, so a system that answers fast but wrong is never measured."""
        hdrs = dict(h.split(": ", 1) for h in self.headers())
        prompt = "verify the bench path once"
        r = harness.http_request("POST", self.url, headers=hdrs, timeout=30, body={
            "model": "echo", "messages": [{"role": "user", "content": prompt}], "max_tokens": 64})
        try:
            doc = json.loads(r.body)
            content = doc["choices"][0]["message"]["content"]
            usage = doc["usage"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise SystemExit(f"{self.name}: chat answer {r.status} not a chat completion: {r.body[:300]!r}") from None
        if r.status != 200 or content != prompt or not usage.get("total_tokens"):
            raise SystemExit(f"{self.name}: chat answer {r.status} content {content!r} usage {usage!r}")
        r = harness.http_request("POST", self.url, headers=hdrs, timeout=30, body={
            "model": "echo", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": prompt}], "max_tokens": 64})
        text, usage, done = "", None, False
        for line in r.body.decode(errors="replace").splitlines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                continue
            try:
                ev = json.loads(data)
            except ValueError:
                raise SystemExit(f"{self.name}: streamed event is not JSON: {data[:200]!r}") from None
            for ch in ev.get("choices") or []:
                text += (ch.get("delta") or {}).get("content") or ""
            usage = ev.get("usage") or usage
        if r.status != 200 or text != prompt or not (usage or {}).get("total_tokens") or not done:
            raise SystemExit(f"{self.name}: stream {r.status} content {text!r} usage {usage!r} [DONE] {done}"
                             f"\n{r.body[:300]!r}")

    def _start_portkey(self) -> None:
        entry = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
        if not entry.exists() or not any(PORTKEY_DIR.glob(".portkey-*")):
            raise SystemExit("Portkey is not installed: python3 bench/install_portkey.py --dir .bench-portkey")
        # production + --headless: no UI routes and no console animation; no proxy variables,
        # so nothing is sent anywhere but the custom host; the guard refuses anything else.
        env = {"NODE_ENV": "production", "TRUSTED_CUSTOM_HOSTS": "127.0.0.1,localhost",
               "HTTP_PROXY": "", "HTTPS_PROXY": "", "http_proxy": "", "https_proxy": "",
               "NO_COLOR": "1"}
        self._spawn("portkey", ["node", "--require", str(PORTKEY_GUARD), str(entry),
                                f"--port={self.port}", "--headless"], env=env)
        harness.wait_until("portkey", lambda: self.procs["portkey"].check_alive() and harness._port_open(self.port),
                           timeout=60, interval=0.2, on_fail=self.tails)

    def outbound_refused(self) -> list[str]:
        """Lines where the Portkey guard refused a non-loopback connect or DNS look-up."""
        p = self.procs.get("portkey")
        if p is None or not p.log_path.exists():
            return []
        return [ln for ln in p.log_path.read_text(errors="replace").splitlines() if GUARD_MARKER in ln]

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
               stdout: Path | None = None) -> None:
        self.procs[name] = harness.Proc(name, taskset(SUT_CPU, argv), self.work / f"{name}.log",
                                        env=env, stdout_path=stdout).start()

    def _start_tollgate(self) -> None:
        cfg_name = "tollgate-route.yaml" if self.name == "route" else "tollgate-full.yaml"
        cfg = harness.load_yaml(ROOT / "bench" / "configs" / cfg_name)
        if self.name == "redis":
            self._spawn("redis", ["redis-server", "--port", str(self.redis_port), "--save", "",
                                  "--appendonly", "no", "--bind", "127.0.0.1"])
            harness.wait_until("redis", lambda: harness._port_open(self.redis_port), timeout=10)
            cfg["limits"]["store"] = "redis"
            cfg["limits"]["redis"] = {"url": f"redis://127.0.0.1:{self.redis_port}/0"}
        path = harness.dump_yaml(cfg, self.work / "tollgate.yaml")
        self._spawn("tollgate", [str(self.target / "tollgate"), "serve", "--config", str(path),
                                 "--grpc-listen", f"127.0.0.1:{self.grpc}",
                                 "--admin-listen", f"127.0.0.1:{self.tg_admin}"],
                    env={"DEMO_ALPHA_KEY": UPSTREAM_KEYS["alpha"], "DEMO_BETA_KEY": UPSTREAM_KEYS["beta"]})
        harness.wait_until("tollgate", lambda: self.procs["tollgate"].check_alive() and harness.http_request(
            "GET", f"http://127.0.0.1:{self.tg_admin}/ready", timeout=2).status == 200,
            timeout=20, on_fail=self.tails)

    def _start_litellm(self) -> None:
        exe = ROOT / ".venv-bench" / "bin" / "litellm"
        if not exe.exists():
            raise SystemExit("LiteLLM is not installed: python3 bench/install_litellm.py --venv .venv-bench")
        models = [{"model_name": m, "litellm_params": {
            "model": f"openai/{m}", "api_base": f"http://127.0.0.1:{self.upstreams[b]}/v1",
            "api_key": UPSTREAM_KEYS[b]}} for m, b in (("echo", "alpha"), ("echo-slow", "beta"))]
        cfg = {"model_list": models, "litellm_settings": {"telemetry": False, "drop_params": True}}
        path = harness.dump_yaml(cfg, self.work / "litellm.yaml")
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
               "LITELLM_TELEMETRY": "False", "NO_DOCKER": "True", "DISABLE_SCHEMA_UPDATE": "True"}
        self._spawn("litellm", [str(exe), "--config", str(path), "--host", "127.0.0.1",
                                "--port", str(self.port), "--num_workers", "1"], env=env)
        harness.wait_until("litellm", lambda: self.procs["litellm"].check_alive() and harness.http_request(
            "GET", f"http://127.0.0.1:{self.port}/health/liveliness", timeout=2).status == 200,
            timeout=120, interval=0.5, on_fail=self.tails)

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.stop(grace=3)

    def tails(self) -> str:
        return "\n".join(p.tail(20) for p in self.procs.values())


# ------------------------------------------------------------------------------------------
# Running the load generator


class Runner:
    def __init__(self, target: Path, work: Path) -> None:
        self.loadgen = target / "loadgen"
        self.work = work
        self.bodies: dict[str, Path] = {}

    def body(self, name: str, data: dict[str, Any]) -> Path:
        if name not in self.bodies:
            p = self.work / f"body-{name}.json"
            p.write_text(json.dumps(data))
            self.bodies[name] = p
        return self.bodies[name]

    def load(self, url: str, headers: list[str], body: Path, duration: float, mode: list[str]) -> dict[str, Any]:
        argv = [str(self.loadgen), "--url", url, "--body", str(body), "--duration", str(duration)]
        for h in headers:
            argv += ["-H", h]
        out = subprocess.run(taskset(LOAD_CPU, argv + mode), capture_output=True, text=True,
                             timeout=duration + 120)
        try:
            return json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise SystemExit(f"loadgen failed ({out.returncode}): {out.stdout}\n{out.stderr}") from None


def measured(sysm: System, fn) -> dict[str, Any]:
    pids = {n: p.pid for n, p in sysm.procs.items()}
    before = {n: cpu_seconds(p) for n, p in pids.items()}
    t0 = time.monotonic()
    res = fn()
    wall = time.monotonic() - t0
    res["cpu_s"] = {n: cpu_seconds(p) - before[n] for n, p in pids.items()}
    res["wall_s"] = wall
    res["core0_busy"] = sum(res["cpu_s"].values()) / wall
    for name, p in sysm.procs.items():
        if not p.alive():
            raise SystemExit(f"{sysm.name}: {name} died during the run\n{sysm.tails()}")
    return res


def check_run(system: str, scenario: str, r: dict[str, Any]) -> None:
    bad = {k: v for k, v in r.get("status", {}).items() if not k.startswith("2")}
    if bad or r.get("errors"):
        print(f"  ! {system}/{scenario}: non-2xx {bad} errors {r.get('errors')}", flush=True)


def hold_streams(runner: Runner, sysm: System, n: int, ramp: float, body: Path) -> dict[str, Any]:
    """Opens n slow streams; samples RSS of every process of the system every 250 ms."""
    pids = {k: p.pid for k, p in sysm.procs.items() if k in ("envoy", "tollgate", "null", "portkey")}
    series: list[dict[str, Any]] = []
    base = {k: rss_bytes(p) for k, p in pids.items()}
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            series.append({"t": round(time.monotonic() - t0, 2), **{k: rss_bytes(p) for k, p in pids.items()}})
            stop.wait(0.25)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    res = runner.load(sysm.url, sysm.headers("beta"), body, 1, ["hold", "--streams", str(n), "--ramp", str(ramp)])
    stop.set()
    th.join()
    time.sleep(2)
    after = {k: rss_bytes(p) for k, p in pids.items()}
    peak = {k: max(s[k] for s in series) for k in pids}
    res.update({
        "streams": n, "rss_series": series, "rss_base": base, "rss_peak": peak, "rss_after": after,
        "rss_per_stream": {k: (peak[k] - base[k]) / n for k in pids},
    })
    return res


def ext_proc_counters(sysm: System) -> dict[str, int]:
    """Envoy's ext_proc counters (downstream filter), by last name component: stream_msgs_sent
    (messages Envoy sent the processor), stream_msgs_received, streams_started, ..."""
    if not sysm.phase_mode and sysm.name != "null":
        return {}
    r = harness.http_request("GET", f"http://127.0.0.1:{sysm.admin}/stats?format=json&filter=ext_proc", timeout=5)
    out: dict[str, int] = {}
    for st in json.loads(r.body).get("stats", []):
        name, value = st.get("name", ""), st.get("value")
        if isinstance(value, int) and ".ext_proc." in name and "tollgate_attempt" not in name:
            key = name.rsplit(".", 1)[1]
            out[key] = out.get(key, 0) + value
    return out


def run_phases(runner: Runner, target: Path, work: Path, ups: dict[str, int], args: argparse.Namespace,
               bodies: dict[str, Path]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The `phases` scenario: Envoy's CPU per request (and per streamed event) under each
    processing mode of PHASE_MODES, with the empty ext_proc server, in interleaved rounds."""
    live: dict[str, System] = {}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name, _, _ in PHASE_MODES}
    try:
        for name, _, mode in PHASE_MODES:
            print(f"starting {name} ...", flush=True)
            live[name] = System(name, work, target, ups, phase_mode=mode)
            live[name].start()
        for sysm in live.values():
            runner.load(sysm.url, sysm.headers(), bodies["sat"], 1.0, ["closed", "--connections", "32"])
        for rnd in range(args.rounds):
            order = list(live.items())
            if rnd % 2:
                order.reverse()
            for scen in ("sat", "stream"):
                for name, sysm in order:
                    if name not in (PHASE_STREAM if scen == "stream" else PHASE_SAT):
                        continue
                    mode = ["closed", "--connections", "32"] if scen == "sat" else ["stream", "--concurrency", "32"]
                    c0 = ext_proc_counters(sysm)
                    res = measured(sysm, lambda: runner.load(sysm.url, sysm.headers(), bodies[scen], args.seconds, mode))
                    c1 = ext_proc_counters(sysm)
                    res["ext_proc"] = {k: v - c0.get(k, 0) for k, v in c1.items()}
                    check_run(name, f"phases/{scen}", res)
                    raw[name].setdefault(scen, []).append(res)
                    unit = max(res["events"] if scen == "stream" else res["ok"], 1)
                    print(f"round {rnd + 1} phases/{scen:<6} {name:<8} {res['rps']:>9.0f}/s  envoy "
                          f"{res['cpu_s'].get('envoy', 0) / unit * 1e6:>6.1f}µs/{'event' if scen == 'stream' else 'req'}  "
                          f"ext_proc msgs/{'event' if scen == 'stream' else 'req'} "
                          f"{res['ext_proc'].get('stream_msgs_sent', 0) / unit:.2f}  core0 {res['core0_busy']:.2f}", flush=True)
    finally:
        for sysm in live.values():
            sysm.stop()
    return raw


def phase_table(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per mode: Envoy's and the empty processor's CPU per request (median over rounds), the
    ext_proc messages per request, and the difference to the mode before it: what that phase
    costs. The same for the streamed scenario, per event, for the response-body modes."""
    summ = summarise(raw)
    out: dict[str, Any] = {"sat": [], "stream": []}
    for scen, unit in (("sat", "ok"), ("stream", "events")):
        prev = None
        for name, label, _ in PHASE_MODES:
            s = summ.get(name, {}).get(scen)
            if not s:
                continue
            if name == "ph-sse":
                # Compared with the static response-headers mode, like ph-rbody.
                prev = next((r for r in out[scen] if r["mode"] == "ph-resp"), prev)
            runs = raw[name][scen]
            msgs = med([r["ext_proc"].get("stream_msgs_sent", 0) / max(r[unit], 1) for r in runs])
            row = {"mode": name, "label": label, "envoy_us": s["cpu_us_per_unit"].get("envoy"),
                   "processor_us": s["cpu_us_per_unit"].get("null", 0.0), "msgs": msgs,
                   "rps_median": s["rps_median"], "core0_busy": s["core0_busy"]}
            if prev is not None:
                row["envoy_delta_us"] = row["envoy_us"] - prev["envoy_us"]
                row["processor_delta_us"] = row["processor_us"] - prev["processor_us"]
                dm = msgs - prev["msgs"]
                row["msgs_delta"] = dm
                row["envoy_us_per_msg"] = row["envoy_delta_us"] / dm if dm >= 0.1 else None
            out[scen].append(row)
            prev = row
    return out


# ------------------------------------------------------------------------------------------
# Report


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: list[float]) -> str:
    return f"{min(xs):.0f}–{max(xs):.0f}" if xs else "-"


def summarise(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system, scen in raw.items():
        s: dict[str, Any] = {}
        for name, runs in scen.items():
            if name == "hold":
                s[name] = {k: v for k, v in runs[-1].items() if k != "rss_series"}
                continue
            rps = [r["rps"] for r in runs]
            cpu_per = {}
            for proc in runs[0]["cpu_s"]:
                unit = [r["cpu_s"][proc] / max(r["events"] if name == "stream" else r["ok"], 1) * 1e6 for r in runs]
                cpu_per[proc] = med(unit)
            s[name] = {
                "rps_median": med(rps), "rps_min": min(rps), "rps_max": max(rps), "rounds": len(runs),
                "cpu_us_per_unit": cpu_per, "cpu_us_total": sum(cpu_per.values()),
                "unit": "event" if name == "stream" else "request",
                "core0_busy": med([r["core0_busy"] for r in runs]),
                "p50_ms": med([r["latency"]["p50_us"] / 1e3 for r in runs if r["latency"]["p50_us"]]),
                "p99_ms": med([r["latency"]["p99_us"] / 1e3 for r in runs if r["latency"]["p99_us"]]),
                "non_2xx": sum(v for r in runs for k, v in r["status"].items() if not k.startswith("2")),
                "errors": sum(sum(r["errors"].values()) for r in runs),
            }
            if name == "stream":
                s[name].update({
                    "ttft_p50_ms": med([r["ttft"]["p50_us"] / 1e3 for r in runs if r["ttft"]["p50_us"]]),
                    "ttft_p99_ms": med([r["ttft"]["p99_us"] / 1e3 for r in runs if r["ttft"]["p99_us"]]),
                    "gap_p50_ms": med([r["gap"]["p50_us"] / 1e3 for r in runs if r["gap"]["p50_us"]]),
                    "gap_p99_ms": med([r["gap"]["p99_us"] / 1e3 for r in runs if r["gap"]["p99_us"]]),
                    "events_per_stream": med([r["events"] / max(r["ok"], 1) for r in runs]),
                })
            if name == "rate":
                s[name]["offered_rps"] = runs[0].get("offered_rps")
                s[name]["shed"] = sum(r.get("shed", 0) for r in runs)
        out[system] = s
    return out


def ratios(summary: dict[str, Any]) -> dict[str, Any]:
    def get(system: str, scen: str, key: str) -> float | None:
        return summary.get(system, {}).get(scen, {}).get(key)

    r: dict[str, Any] = {}
    for scen in ("sat", "pii"):
        e, n = get("envoy", scen, "rps_median"), get("null", scen, "rps_median")
        for system in summary:
            v = get(system, scen, "rps_median")
            if v is None:
                continue
            r.setdefault(system, {})[f"{scen}_vs_envoy"] = v / e if e else None
            r[system][f"{scen}_vs_null"] = v / n if n else None
    for system in summary:
        for peer in PEERS:
            # Throughput on the one pinned core, and CPU per request (the peer's over this
            # system's): the same "per core" figure read two ways; the CPU one does not depend
            # on how much of CPU 0 the run got.
            for scen in ("sat", "pii"):
                v, pv = get(system, scen, "rps_median"), get(peer, scen, "rps_median")
                if v and pv:
                    r.setdefault(system, {})[f"{scen}_vs_{peer}"] = v / pv
                c, pc = get(system, scen, "cpu_us_total"), get(peer, scen, "cpu_us_total")
                if c and pc:
                    r.setdefault(system, {})[f"{scen}_cpu_vs_{peer}"] = pc / c
        for base in ("envoy", "null"):
            # "added" = over Envoy alone; "over_null" = over the empty ext_proc floor.
            suffix = "added" if base == "envoy" else "over_null"
            for key in ("p50_ms", "p99_ms"):
                a, b = get(system, "rate", key), get(base, "rate", key)
                if a is not None and b is not None:
                    r.setdefault(system, {})[f"rate_{suffix}_{key}"] = a - b
            for key in ("ttft_p50_ms", "ttft_p99_ms"):
                a, b = get(system, "stream", key), get(base, "stream", key)
                if a is not None and b is not None:
                    r.setdefault(system, {})[f"stream_{suffix}_{key}"] = a - b
        a, b = get(system, "stream", "cpu_us_total"), get("null", "stream", "cpu_us_total")
        if a is not None and b:
            r.setdefault(system, {})["stream_cpu_vs_null"] = a / b
    return r


def fmt(v: Any, spec: str = ".0f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def markdown(meta: dict[str, Any], summary: dict[str, Any], rat: dict[str, Any],
             phases: dict[str, Any] | None = None) -> str:
    lines = [f"# tollgate benchmark — {meta['date']}", "",
             f"Conditions: {meta['conditions']}", "",
             f"Upstream headroom: {meta.get('upstream_check', '-')}", ""]
    if any("sat" in s for s in summary.values()):
        lines += ["## 1 KiB chat, saturation (32 connections) and 2,000 req/s offered", "",
                  "| system | req/s (median) | spread | × Envoy | × empty ext_proc | × LiteLLM / × Portkey | CPU µs/req (by process) | core-0 busy | p50 / p99 @ rate (ms) |",
                  "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
        for sys_, s in summary.items():
            sat = s.get("sat")
            if not sat:
                continue
            rate = s.get("rate", {})
            cpu = ", ".join(f"{k} {v:.0f}" for k, v in sat["cpu_us_per_unit"].items())
            lat = f"{fmt(rate.get('p50_ms'), '.2f')} / {fmt(rate.get('p99_ms'), '.2f')}" if rate else "-"
            if rate and rate.get("offered_rps") and rate["offered_rps"] != meta["rate"]:
                lat += f" (at {rate['offered_rps']:.0f}/s)"
            peers = " / ".join(fmt(rat.get(sys_, {}).get(f"sat_vs_{p}"), ".1f") for p in PEERS)
            lines.append(f"| {LABELS[sys_]} | {sat['rps_median']:.0f} | {sat['rps_min']:.0f}–{sat['rps_max']:.0f} | "
                         f"{fmt(rat.get(sys_, {}).get('sat_vs_envoy'), '.2f')} | {fmt(rat.get(sys_, {}).get('sat_vs_null'), '.2f')} | "
                         f"{peers} | {cpu} (Σ {sat['cpu_us_total']:.0f}) | {sat['core0_busy']:.2f} | {lat} |")
        lines.append("")
    if any("stream" in s for s in summary.values()):
        lines += [f"## Streaming: {STREAM_EVENTS} delta events paced 10 ms, 32 concurrent streams", "",
                  "| system | TTFT p50 / p99 (ms) | gap p50 / p99 (ms) | events/stream | CPU µs/event (by process) |",
                  "|---|---:|---:|---:|---|"]
        for sys_, s in summary.items():
            st = s.get("stream")
            if not st:
                continue
            cpu = ", ".join(f"{k} {v:.1f}" for k, v in st["cpu_us_per_unit"].items())
            lines.append(f"| {LABELS[sys_]} | {fmt(st['ttft_p50_ms'], '.2f')} / {fmt(st['ttft_p99_ms'], '.2f')} | "
                         f"{fmt(st['gap_p50_ms'], '.2f')} / {fmt(st['gap_p99_ms'], '.2f')} | {fmt(st['events_per_stream'])} | "
                         f"{cpu} (Σ {st['cpu_us_total']:.1f}) |")
        lines.append("")
    if any("pii" in s for s in summary.values()):
        lines += ["## 16 KiB PII-dense prompt, saturation", "",
                  "| system | req/s (median) | spread | × Envoy | × empty ext_proc | × LiteLLM / × Portkey | CPU µs/req (by process) |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for sys_, s in summary.items():
            p = s.get("pii")
            if not p:
                continue
            cpu = ", ".join(f"{k} {v:.0f}" for k, v in p["cpu_us_per_unit"].items())
            lines.append(f"| {LABELS[sys_]} | {p['rps_median']:.0f} | {p['rps_min']:.0f}–{p['rps_max']:.0f} | "
                         f"{fmt(rat.get(sys_, {}).get('pii_vs_envoy'), '.2f')} | {fmt(rat.get(sys_, {}).get('pii_vs_null'), '.2f')} | "
                         f"{' / '.join(fmt(rat.get(sys_, {}).get(f'pii_vs_{p}'), '.1f') for p in PEERS)} | {cpu} |")
        lines.append("")
    if any("hold" in s for s in summary.values()):
        lines += ["## Concurrent open streams (memory)", "",
                  "| system | streams | ok | RSS before → peak → after (MiB) | KiB per open stream |",
                  "|---|---:|---:|---|---|"]
        for sys_, s in summary.items():
            h = s.get("hold")
            if not h:
                continue
            rss = "; ".join(f"{k} {h['rss_base'][k] / 2**20:.1f} → {h['rss_peak'][k] / 2**20:.1f} → {h['rss_after'][k] / 2**20:.1f}"
                            for k in h["rss_base"])
            per = ", ".join(f"{k} {v / 1024:.1f}" for k, v in h["rss_per_stream"].items())
            lines.append(f"| {LABELS[sys_]} | {h['streams']} | {h['ok']} | {rss} | {per} |")
        lines.append("")
    if phases and (phases.get("sat") or phases.get("stream")):
        lines += ["## Envoy's ext_proc cost by phase (empty ext_proc server)", "",
                  "Each mode adds one phase to the one above; Δ is what that phase costs. "
                  "Messages are Envoy's own `stream_msgs_sent` counter.", "",
                  "1 KiB chat at saturation, per request:", "",
                  "| mode | req/s | Envoy µs/req | Δ Envoy µs | ext_proc msgs/req | Envoy µs per added msg | empty server µs/req (Δ) | core-0 busy |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in phases.get("sat", []):
            lines.append(f"| {row['label']} | {row['rps_median']:.0f} | {fmt(row['envoy_us'], '.1f')} | "
                         f"{fmt(row.get('envoy_delta_us'), '+.1f')} | {row['msgs']:.2f} | {fmt(row.get('envoy_us_per_msg'), '.1f')} | "
                         f"{fmt(row['processor_us'], '.1f')} ({fmt(row.get('processor_delta_us'), '+.1f')}) | {row['core0_busy']:.2f} |")
        if phases.get("stream"):
            lines += ["", f"Streamed chat ({STREAM_EVENTS} events), per event:", "",
                      "| mode | Envoy µs/event | Δ Envoy µs | ext_proc msgs/event | Envoy µs per added msg | empty server µs/event (Δ) |",
                      "|---|---:|---:|---:|---:|---:|"]
            for row in phases["stream"]:
                lines.append(f"| {row['label']} | {fmt(row['envoy_us'], '.1f')} | {fmt(row.get('envoy_delta_us'), '+.1f')} | "
                             f"{row['msgs']:.2f} | {fmt(row.get('envoy_us_per_msg'), '.1f')} | "
                             f"{fmt(row['processor_us'], '.1f')} ({fmt(row.get('processor_delta_us'), '+.1f')}) |")
        lines.append("")
    lines += ["## Targets (issue 13)", "",
              "| target | goal | measured | result | note |", "|---|---|---:|---|---|"]
    for row in targets(summary, rat, phases):
        lines.append(f"| {row['target']} | {row['goal']} | {fmt(row['measured'], '.2f')} | {row['result']} | {row['note']} |")
    lines.append("")
    return "\n".join(lines)


def targets(summary: dict[str, Any], rat: dict[str, Any], phases: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Issue 13's targets, each with its goal, the measured value and met / NOT met (n/a when a
    system or scenario it needs was not run). The floor is `null` (the empty ext_proc server in
    tollgate's static processing modes) throughout."""
    out: list[dict[str, Any]] = []

    def t(target: str, goal: str, value: float | None, ok: Callable[[float], bool] | None, note: str = "") -> None:
        result = "n/a" if value is None else "reported" if ok is None else ("met" if ok(value) else "NOT met")
        out.append({"target": target, "goal": goal, "measured": value, "result": result, "note": note})

    def get(system: str, *keys: str) -> Any:
        node: Any = summary.get(system, {})
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        return node

    t("routing-only throughput ÷ floor", "≥ 0.95", rat.get("route", {}).get("sat_vs_null"), lambda v: v >= 0.95)
    t("all features (memory) throughput ÷ floor", "≥ 0.80", rat.get("full", {}).get("sat_vs_null"), lambda v: v >= 0.80)
    for peer, label in (("litellm", "LiteLLM"), ("portkey", "Portkey")):
        v = rat.get("full", {}).get(f"sat_vs_{peer}")
        cpu = rat.get("full", {}).get(f"sat_cpu_vs_{peer}")
        t(f"all features per core × {label} (req/s on one core)", "≥ 35" if peer == "litellm" else "(reported)",
          v, (lambda x: x >= 35) if peer == "litellm" else None,
          f"by CPU per request: {fmt(cpu, '.1f')}×")
    a = rat.get("full", {}).get("rate_over_null_p50_ms")
    t("all features p50 at 2,000 req/s − floor's (ms)", "≤ +0.5", a, lambda v: v <= 0.5,
      f"full {fmt(get('full', 'rate', 'p50_ms'), '.2f')}, floor {fmt(get('null', 'rate', 'p50_ms'), '.2f')}")
    a = rat.get("full", {}).get("rate_over_null_p99_ms")
    t("all features p99 at 2,000 req/s − floor's (ms)", "≤ +2.5", a, lambda v: v <= 2.5,
      f"full {fmt(get('full', 'rate', 'p99_ms'), '.2f')}, floor {fmt(get('null', 'rate', 'p99_ms'), '.2f')}")
    v = rat.get("full", {}).get("stream_cpu_vs_null")
    note = (f"Envoy + tollgate {fmt(get('full', 'stream', 'cpu_us_total'), '.1f')} µs/event, floor "
            f"{fmt(get('null', 'stream', 'cpu_us_total'), '.1f')}")
    floor_ev = get("null", "stream", "cpu_us_total")
    streamed = {r["mode"]: r for r in (phases or {}).get("stream", [])}
    body = streamed.get("ph-sse") or streamed.get("ph-rbody")
    if floor_ev and body and body.get("envoy_delta_us") is not None:
        # The floor leaves the response body to Envoy (mode NONE); reading a stream needs it
        # STREAMED, and that phase alone costs Envoy the delta below, whatever the processor does.
        d = body["envoy_delta_us"]
        note += (f"; Envoy's own STREAMED-body cost is {d:+.1f} µs/event, so no processor that "
                 f"reads the stream gets below {(floor_ev + d) / floor_ev:.2f}× this floor")
    t("all features streamed CPU per event (Envoy + tollgate) ÷ floor", "≤ 1.5", v, lambda x: x <= 1.5, note)
    a = rat.get("full", {}).get("stream_over_null_ttft_p99_ms")
    t("all features TTFT p99 − floor's (ms)", "≤ 0", a, lambda x: x <= 0,
      f"full {fmt(get('full', 'stream', 'ttft_p99_ms'), '.2f')}, floor {fmt(get('null', 'stream', 'ttft_p99_ms'), '.2f')}")
    per = get("full", "hold", "rss_per_stream", "tollgate")
    t("all features tollgate RSS per open stream (KiB)", "≤ 24", per / 1024 if per is not None else None,
      lambda x: x <= 24, f"{fmt(get('full', 'hold', 'ok'))}/{fmt(get('full', 'hold', 'streams'))} streams held")
    return out


def plot(out_dir: Path, summary: dict[str, Any], rat: dict[str, Any]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (pip install matplotlib into .venv)")
        return None
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    names = [s for s in summary if "sat" in summary[s]]
    ax = axes[0][0]
    vals = [summary[s]["sat"]["rps_median"] for s in names]
    errs = [[summary[s]["sat"]["rps_median"] - summary[s]["sat"]["rps_min"] for s in names],
            [summary[s]["sat"]["rps_max"] - summary[s]["sat"]["rps_median"] for s in names]]
    ax.bar(names, vals, yerr=errs, color="#4c72b0")
    ax.set_title("1 KiB chat: req/s on one core (median, min–max)")
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax = axes[0][1]
    procs = sorted({p for s in names for p in summary[s]["sat"]["cpu_us_per_unit"]})
    bottom = [0.0] * len(names)
    for p in procs:
        v = [summary[s]["sat"]["cpu_us_per_unit"].get(p, 0) for s in names]
        ax.bar(names, v, bottom=bottom, label=p)
        bottom = [a + b for a, b in zip(bottom, v)]
    ax.set_yscale("log")
    ax.set_ylim(bottom=10)
    ax.set_title("CPU µs per 1 KiB request, by process (log)")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    rn = [s for s in summary if "rate" in summary[s]]
    x = range(len(rn))
    ax.bar([i - 0.2 for i in x], [summary[s]["rate"]["p50_ms"] for s in rn], 0.4, label="p50")
    ax.bar([i + 0.2 for i in x], [summary[s]["rate"]["p99_ms"] for s in rn], 0.4, label="p99")
    ax.set_xticks(list(x), rn)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.1)
    ax.set_title("latency at fixed offered load (ms, log; LiteLLM at half its saturation)")
    ax.legend(fontsize=8)
    ax = axes[1][1]
    for s in summary:
        h = summary[s].get("hold")
        if not h:
            continue
        for proc in h["rss_base"]:
            series = h.get("_series", [])
            ax.plot([p["t"] for p in series], [p[proc] / 2**20 for p in series], label=f"{s}:{proc}")
    ax.set_title("RSS while holding open streams (MiB)")
    ax.set_xlabel("s")
    ax.legend(fontsize=7)
    for a in axes.flat:
        a.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    path = out_dir / "bench.png"
    fig.savefig(path, dpi=110)
    return path


# ------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-dir", default="target/release")
    ap.add_argument("--quick", action="store_true", help="1 round, 2 s runs, 200 held streams: harness smoke test")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--streams", type=int, default=2000, help="held open streams")
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--note", default="", help="free text for the conditions line (e.g. 'machine quiet')")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.streams = 1, 2.0, 200
    systems = [s for s in args.systems.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    target = harness.target_dir(args.target_dir)
    for exe in ("tollgate", "tollgate-demo-upstream", "loadgen", "null-extproc"):
        harness.require_binary(target / exe, "cargo build --release --workspace")
    if os.cpu_count() and os.cpu_count() < 2:
        raise SystemExit("needs two CPUs (system under test on CPU 0, load on CPU 1)")

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(args.out) / stamp
    out_dir.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    runner = Runner(target, work)
    load1 = os.getloadavg()
    print(f"results -> {out_dir}; work dir {work}; load average {load1[0]:.2f}", flush=True)

    # Upstreams on the load core: alpha paces streamed events 10 ms apart (a fast model),
    # beta 50 ms (held streams last ~10 s).
    ups: dict[str, int] = {}
    up_procs = []
    for name, delay in (("alpha", 10), ("beta", 50)):
        port = harness.free_port()
        ups[name] = port
        up_procs.append(harness.Proc(name, taskset(LOAD_CPU, [
            str(target / "tollgate-demo-upstream"), "--listen", f"127.0.0.1:{port}", "--name", name,
            "--api-key", UPSTREAM_KEYS[name], "--chunk-chars", str(CHUNK_CHARS),
            "--chunk-delay-ms", str(delay)]), work / f"{name}.log").start())
        harness.wait_until(name, lambda p=port: harness._port_open(p), timeout=10)

    bodies = {"sat": runner.body("1k", body_1k()), "rate": runner.body("1k", body_1k()),
              "stream": runner.body("stream", body_stream()), "pii": runner.body("pii", body_pii()),
              "hold": runner.body("hold", body_stream("echo-slow"))}
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "rounds": args.rounds, "seconds": args.seconds, "rate": args.rate, "quick": args.quick,
        "body_bytes": {k: p.stat().st_size for k, p in bodies.items()},
        "kernel": platform.release(), "cpus": os.cpu_count(),
        "git": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip(),
    }

    # Headroom: the load generator straight at the upstream, both on the load core. If it
    # serves far more than any system below, the upstream never limits them.
    direct = runner.load(f"http://127.0.0.1:{ups['alpha']}/v1/chat/completions",
                         ["content-type: application/json", f"authorization: Bearer {UPSTREAM_KEYS['alpha']}"],
                         bodies["sat"], args.seconds, ["closed", "--connections", "32"])
    meta["upstream_direct_rps"] = direct["rps"]
    print(f"upstream direct (load generator + upstream sharing CPU 1): {direct['rps']:.0f} req/s", flush=True)

    live: dict[str, System] = {}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in systems}
    phases_raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for s in systems:
            print(f"starting {s} ...", flush=True)
            live[s] = System(s, work, target, ups)
            live[s].start()
        # Held streams first, on fresh processes: later scenarios grow allocator pools that
        # would hide the memory a stream costs.
        if "hold" in scenarios:
            for s, sysm in live.items():
                if s == "litellm":
                    continue  # one worker process: thousands of open streams do not fit
                res = hold_streams(runner, sysm, args.streams, 500.0, bodies["hold"])
                check_run(s, "hold", res)
                raw[s]["hold"] = [res]
                print(f"hold {s:<8} {res['ok']}/{args.streams} ok; RSS/stream "
                      + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in res["rss_per_stream"].items()), flush=True)
        # warm-up: connections, allocator pools, LiteLLM's lazy imports
        for s, sysm in live.items():
            runner.load(sysm.url, sysm.headers(), bodies["sat"], 1.0, ["closed", "--connections", "32"])
        peer_rate: dict[str, float] = {}
        for rnd in range(args.rounds):
            order = list(live.items())
            if rnd % 2:
                order.reverse()  # alternate the order so position in the round averages out
            for scen in [x for x in scenarios if x not in ("hold", "phases")]:
                for s, sysm in order:
                    mode: list[str]
                    if scen in ("sat", "pii"):
                        mode = ["closed", "--connections", "32"]
                    elif scen == "rate":
                        rate = args.rate
                        if s in PEERS:
                            # The other gateways may not sustain the fixed rate on one core;
                            # measure their latency at half their own saturation throughput
                            # when that is lower (LiteLLM always is).
                            if s not in peer_rate:
                                sat_runs = raw[s].get("sat")
                                half = max(10.0, 0.5 * sat_runs[0]["rps"]) if sat_runs else 50.0
                                peer_rate[s] = min(args.rate, half)
                            rate = round(peer_rate[s])
                        mode = ["open", "--rate", str(rate), "--max-connections", "1000"]
                    else:
                        mode = ["stream", "--concurrency", "32"]
                    res = measured(sysm, lambda: runner.load(sysm.url, sysm.headers(), bodies[scen], args.seconds, mode))
                    check_run(s, scen, res)
                    raw[s].setdefault(scen, []).append(res)
                    extra = f", events {res['events']}" if scen == "stream" else ""
                    print(f"round {rnd + 1} {scen:<6} {s:<8} {res['rps']:>9.0f}/s  p50 {res['latency']['p50_us'] or 0:>7}µs "
                          f"p99 {res['latency']['p99_us'] or 0:>8}µs  core0 {res['core0_busy']:.2f}{extra}", flush=True)
        for sysm in live.values():
            refused = sysm.outbound_refused()
            if refused:
                raise SystemExit(f"{sysm.name} tried to reach the network (the bench must not): "
                                 + "; ".join(refused[:5]))
        for sysm in live.values():
            sysm.stop()
        live.clear()
        if "phases" in scenarios:
            phases_raw = run_phases(runner, target, work, ups, args, bodies)
    finally:
        for sysm in live.values():
            sysm.stop()
        for p in up_procs:
            p.stop()

    summary = summarise(raw)
    for s in summary:
        if "hold" in raw[s]:
            summary[s]["hold"]["_series"] = raw[s]["hold"][0]["rss_series"]
    rat = ratios(summary)
    phases = phase_table(phases_raw) if phases_raw else None
    load2 = os.getloadavg()
    meta["conditions"] = (
        f"{args.rounds} interleaved round(s) × {args.seconds:.0f} s per scenario; system under test on CPU 0, "
        f"load generator and upstream on CPU 1; {os.cpu_count()} CPUs, kernel {meta['kernel']}; load average "
        f"{load1[0]:.2f} at start, {load2[0]:.2f} at end; git {meta['git']}"
        + (f"; {args.note}" if args.note else "") + ("; QUICK smoke-test mode" if args.quick else ""))
    slowest = max((summary[s]["sat"]["rps_median"] for s in summary if "sat" in summary[s]), default=0)
    meta["upstream_check"] = (
        f"load generator straight to the upstream (both on CPU 1): {direct['rps']:.0f} req/s, "
        f"{direct['rps'] / slowest:.1f}× the fastest system's {slowest:.0f} req/s" if slowest else "-")
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "summary": summary, "ratios": rat, "phases": phases,
                                                       "targets": targets(summary, rat, phases),
                                                       "raw": raw, "phases_raw": phases_raw}, indent=1, default=str))
    md = markdown(meta, summary, rat, phases)
    (out_dir / "results.md").write_text(md)
    png = plot(out_dir, summary, rat)
    latest = Path(args.out) / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(out_dir.name)
    print("\n" + md)
    print(f"written: {out_dir / 'results.md'}, results.json" + (f", {png.name}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
