#!/usr/bin/env python3
"""Soak and crash-recovery runs against the real stack (Envoy + tollgate + demo upstreams).

``soak``: a bounded run of mixed traffic — paced SSE streams of which ~30% are cancelled by
the client after a random number of reads, plus non-streaming requests — through the demo
config (API keys, guard, usage, in-memory limits). Checked: tollgate's RSS is flat after
warm-up; open ext_proc streams, live runtime tasks and outstanding limit reservations
(admin ``/debug/state``) return to their idle baseline once the load stops.

``kill``: tollgate is SIGKILLed while streams are open and restarted under load. Checked:
fail-closed — while it is down every request gets Envoy's 500 ``gateway_unavailable`` JSON
and nothing reaches an upstream unprocessed; open streams end (reset), none hangs. Reported:
the outage as clients saw it and the time from restart to the first routed answer.

    make soak                                   # 10 minutes, release build
    .venv/bin/python e2e/soak.py --seconds 60   # what CI runs (via e2e/test_soak.py)

The load comes from the workspace's load generator (bench/tools, ``loadgen``).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

STREAM_BODY = {"model": "echo", "stream": True, "stream_options": {"include_usage": True},
               "messages": [{"role": "user", "content": "Contact kim@example.com or 010-1234-5678. "
                             + "The quick brown fox jumps over the lazy dog. " * 8}]}
PLAIN_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello " * 100}]}
HEADERS = ["content-type: application/json", f"authorization: Bearer {harness.DEMO_CLIENT_KEY}"]


def soak_config() -> dict[str, Any]:
    """The demo config with its limits raised out of reach: limits still reserve and settle
    (what the soak checks), but the load is not refused with 429s."""
    cfg = harness.load_yaml(harness.DEMO_TOLLGATE_CONFIG)
    for rule in cfg["limits"]["rules"]:
        for key in list(rule):
            if key.startswith(("requests_per", "tokens_per")):
                rule[key] = 10**10
            elif key.startswith("cost_per"):
                rule[key] = 10.0**6
    # The soak reads /debug/state (off by default; loopback peers only).
    cfg.setdefault("server", {})["debug_state"] = True
    return cfg


def refused(r: dict[str, Any]) -> int:
    return sum(v for k, v in r["status"].items() if not k.startswith("2"))


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096


def state(stack: harness.Stack) -> dict[str, Any]:
    r = harness.http_request("GET", f"{stack.tollgate_admin_url}/debug/state", timeout=5)
    assert r.status == 200, r
    return r.json()


def loadgen(stack: harness.Stack, body: dict[str, Any], seconds: float, mode: list[str]) -> subprocess.Popen[str]:
    path = stack.workdir / f"body-{abs(hash(json.dumps(body)))}.json"
    path.write_text(json.dumps(body))
    argv = [str(stack.target / "loadgen"), "--url", f"{stack.base_url}/v1/chat/completions",
            "--body", str(path), "--duration", str(seconds)]
    for h in HEADERS:
        argv += ["-H", h]
    return subprocess.Popen(argv + mode, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(p: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = p.communicate(timeout=timeout)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"loadgen failed: {out}\n{err}") from None


def settle(stack: harness.Stack, baseline: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """Waits until streams, tasks and reservations are back to baseline; returns the last state."""
    deadline = time.monotonic() + timeout
    last = state(stack)
    while time.monotonic() < deadline:
        last = state(stack)
        if (last["streams_active"] == 0 and last["limits_outstanding"] == 0
                and last["runtime_alive_tasks"] <= baseline["runtime_alive_tasks"] + 2):
            break
        time.sleep(0.25)
    return last


def soak(stack: harness.Stack, seconds: float, concurrency: int = 24, cancel: float = 0.3) -> dict[str, Any]:
    pid = stack.procs["tollgate"].pid
    # Warm once so the baseline includes lazily built state (tokenizer tables, pools).
    result(loadgen(stack, STREAM_BODY, 2, ["soak", "--concurrency", "4", "--cancel", "0.3"]), 60)
    baseline = settle(stack, {"runtime_alive_tasks": 10**6})
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic() - t0, rss(pid)))
            stop.wait(1.0)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    streams = loadgen(stack, STREAM_BODY, seconds, ["soak", "--concurrency", str(concurrency), "--cancel", str(cancel)])
    plain = loadgen(stack, PLAIN_BODY, seconds, ["closed", "--connections", "4"])
    s_res, p_res = result(streams, seconds + 120), result(plain, seconds + 120)
    stop.set()
    th.join()
    during = {"peak_streams": None}
    after = settle(stack, baseline)
    # Flat after warm-up: compare the median RSS of the second fifth with the last fifth.
    n = len(samples)
    early = [v for _, v in samples[n // 5: 2 * n // 5]] or [samples[0][1]]
    late = [v for _, v in samples[4 * n // 5:]] or [samples[-1][1]]
    growth = statistics.median(late) - statistics.median(early)
    return {
        "seconds": seconds, "streams": s_res, "plain": p_res, "baseline": baseline, "after": after,
        "rss_early_mib": statistics.median(early) / 2**20, "rss_late_mib": statistics.median(late) / 2**20,
        "rss_growth_mib": growth / 2**20, "rss_series": samples, **during,
    }


def kill_restart(stack: harness.Stack, down_seconds: float = 2.0) -> dict[str, Any]:
    """SIGKILL tollgate under streaming load, probe while it is down, restart, time recovery."""
    stack.clear_upstreams()
    streams = loadgen(stack, STREAM_BODY, 4 + down_seconds + 6, ["soak", "--concurrency", "16", "--cancel", "0"])
    time.sleep(2.0)
    before_kill = stack.upstream_count("alpha")
    stack.procs["tollgate"].signal(signal.SIGKILL)
    stack.procs["tollgate"].popen.wait(timeout=5)  # type: ignore[union-attr]
    killed_at = time.monotonic()
    probes: list[harness.Response] = []
    while time.monotonic() - killed_at < down_seconds:
        probes.append(harness.http_request(
            "POST", f"{stack.base_url}/v1/chat/completions",
            headers={"authorization": f"Bearer {harness.DEMO_CLIENT_KEY}"},
            body={"model": "echo", "messages": [{"role": "user", "content": "down?"}]}, timeout=10))
        time.sleep(0.1)
    # Nothing was forwarded while tollgate was down (in-flight streams were already upstream).
    forwarded_while_down = stack.upstream_count("alpha") - before_kill
    restart_at = time.monotonic()
    stack.start_tollgate()  # returns once /ready answers
    ready_at = time.monotonic()
    first_ok = None
    while time.monotonic() - restart_at < 30:
        r = harness.http_request(
            "POST", f"{stack.base_url}/v1/chat/completions",
            headers={"authorization": f"Bearer {harness.DEMO_CLIENT_KEY}"},
            body={"model": "echo", "messages": [{"role": "user", "content": "back?"}]}, timeout=10)
        if r.status == 200:
            first_ok = time.monotonic()
            break
        time.sleep(0.02)
    load = result(streams, 60)
    return {
        "probes": len(probes),
        "probe_statuses": sorted({p.status for p in probes}),
        "probe_codes": sorted({(p.json().get("error") or {}).get("code", "?") if p.body.startswith(b"{") else "non-json"
                               for p in probes}),
        "forwarded_while_down": forwarded_while_down,
        "restart_to_ready_s": ready_at - restart_at,
        "restart_to_first_ok_s": (first_ok - restart_at) if first_ok else None,
        "outage_s": (first_ok - killed_at) if first_ok else None,
        "load": load,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-dir", default=None)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--concurrency", type=int, default=24)
    ap.add_argument("--out", default=None, help="write the JSON report here")
    args = ap.parse_args()
    target = harness.target_dir(args.target_dir)
    with harness.Stack(target=target, envoy_log_level="error", tollgate_config=soak_config(),
                       upstream_args=["--chunk-delay-ms", "5"]) as stack:
        s = soak(stack, args.seconds, args.concurrency)
        print(f"soak {s['seconds']:.0f}s: {s['streams']['ok']} streams completed, {s['streams']['cancelled']} cancelled by "
              f"the client, {s['plain']['ok']} plain requests; non-2xx {refused(s['streams']) + refused(s['plain'])}; "
              f"errors {s['streams']['errors'] or 'none'}")
        print(f"  tollgate RSS after warm-up {s['rss_early_mib']:.1f} MiB -> end {s['rss_late_mib']:.1f} MiB "
              f"(growth {s['rss_growth_mib']:+.2f} MiB)")
        print(f"  idle baseline {s['baseline']} -> after load {s['after']}")
        k = kill_restart(stack)
        print(f"kill -9 under load: {k['probes']} probes while down got {k['probe_statuses']} {k['probe_codes']}; "
              f"forwarded while down: {k['forwarded_while_down']}")
        print(f"  restart -> ready {k['restart_to_ready_s']:.2f}s, restart -> first 200 "
              f"{k['restart_to_first_ok_s'] if k['restart_to_first_ok_s'] is None else round(k['restart_to_first_ok_s'], 2)}s, "
              f"client-visible outage {k['outage_s'] if k['outage_s'] is None else round(k['outage_s'], 2)}s")
        print(f"  streams during the kill: {k['load']['ok']} ok, errors {k['load']['errors']}")
        ok = (s["rss_growth_mib"] < max(4.0, 0.1 * s["rss_early_mib"]) and s["after"]["streams_active"] == 0
              and refused(s["streams"]) + refused(s["plain"]) == 0
              and s["after"]["limits_outstanding"] == 0 and k["probe_statuses"] == [500]
              and k["forwarded_while_down"] == 0 and k["restart_to_first_ok_s"] is not None)
        if args.out:
            Path(args.out).write_text(json.dumps({"soak": s, "kill": k}, indent=1, default=str))
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
