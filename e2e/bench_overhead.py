#!/usr/bin/env python3
"""Per-request cost of tollgate: Envoy alone vs Envoy + tollgate, same load, one run.

Both systems sit in front of the same demo upstream. Envoy (and tollgate, when present) are
pinned to CPU 0; the load generator (wrk) and the upstream to CPU 1, so the system under
test gets one core. Each configuration runs several interleaved rounds; the report gives
the median requests/s and the CPU time per request taken from /proc/<pid>/stat.

"Envoy alone" is the shipped envoy.yaml with the ext_proc filter removed; its client sends
the routing header and the upstream key itself, i.e. what tollgate would have added.
With --observe a third system runs tollgate with the audit log (a file) and span export
(OTLP/HTTP, every request sampled, to a receiver in this process) turned on.

    make bench            # or: .venv/bin/python e2e/bench_overhead.py --target-dir target/release
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import threading
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROMPT = "Summarise the following paragraph in one sentence. " + "lorem ipsum dolor sit amet " * 34


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def otlp_sink() -> http.server.ThreadingHTTPServer:
    """Accepts OTLP/HTTP exports and discards them."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def pin(pid: int, cpu: int) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True, capture_output=True)


def wrk_script(path: Path, headers: dict[str, str], body: str) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> tuple[float, str]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        check=True, capture_output=True, text=True,
    ).stdout
    non2xx = [l for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l]
    if non2xx:
        raise SystemExit(f"load run had errors: {non2xx}\n{out}")
    rps = float(next(l for l in out.splitlines() if l.startswith("Requests/sec")).split()[1])
    p50 = next((l.split()[1] for l in out.splitlines() if l.strip().startswith("50%")), "?")
    p99 = next((l.split()[1] for l in out.splitlines() if l.strip().startswith("99%")), "?")
    return rps, f"p50 {p50}, p99 {p99}"


def measure(stack: harness.Stack, script: Path, seconds: int, connections: int, names: list[str]) -> dict:
    pids = {n: stack.procs[n].pid for n in names}
    before = {n: cpu_seconds(p) for n, p in pids.items()}
    start = time.monotonic()
    rps, lat = run_wrk(f"{stack.base_url}/v1/chat/completions", script, seconds, connections)
    elapsed = time.monotonic() - start
    requests = rps * seconds
    cpu = {n: (cpu_seconds(p) - before[n]) / requests * 1e6 for n, p in pids.items()}
    return {"rps": rps, "latency": lat, "cpu_us": cpu, "elapsed": elapsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-dir", default="target/release")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--baseline-target-dir", default=None,
                    help="also run the tollgate binary from this target dir (e.g. another branch's build)")
    ap.add_argument("--observe", action="store_true",
                    help="also run tollgate with the audit log and OTLP span export on")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    target = harness.target_dir(args.target_dir)
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    body = json.dumps({"model": "echo", "messages": [{"role": "user", "content": PROMPT}]})
    print(f"request body: {len(body)} bytes; {args.rounds} rounds x {args.seconds}s, {args.connections} connections")

    alone = harness.Stack(work / "alone", target=target, with_tollgate=False,
                          envoy_transform=harness.strip_ext_proc, envoy_log_level="error")
    full = harness.Stack(work / "tollgate", target=target, envoy_log_level="error")
    results: dict[str, list[dict]] = {"envoy alone": [], "envoy + tollgate": []}
    stacks = {"envoy alone": alone, "envoy + tollgate": full}
    receiver = None
    if args.baseline_target_dir:
        stacks["tollgate (baseline)"] = harness.Stack(
            work / "baseline", target=harness.target_dir(args.baseline_target_dir),
            envoy_log_level="error")
        results["tollgate (baseline)"] = []
    if args.observe:
        receiver = otlp_sink()
        cfg = harness.load_yaml(harness.DEMO_TOLLGATE_CONFIG)
        cfg["audit"] = {"output": str(work / "audit.jsonl")}
        cfg["telemetry"] = {"traces": {
            "enabled": True, "protocol": "http", "sampling_ratio": 1.0,
            "endpoint": f"http://127.0.0.1:{receiver.server_address[1]}"}}
        stacks["tollgate+observe"] = harness.Stack(
            work / "observe", target=target, envoy_log_level="error", tollgate_config=cfg)
        results["tollgate+observe"] = []
    with contextlib.ExitStack() as es:
        for st in stacks.values():
            es.enter_context(st)
        for stack in stacks.values():
            pin(stack.procs["envoy"].pid, 0)
            for up in ("alpha", "beta"):
                pin(stack.procs[up].pid, 1)
            if "tollgate" in stack.procs:
                pin(stack.procs["tollgate"].pid, 0)
        s_alone = wrk_script(work / "alone.lua", {
            "content-type": "application/json",
            "x-tollgate-backend": "alpha",
            "authorization": f"Bearer {alone.keys['alpha']}",
        }, body)
        s_full = wrk_script(work / "full.lua", {
            "content-type": "application/json",
            "authorization": "Bearer tollgate-demo-key",
        }, body)
        # Warm-up, then interleaved rounds so drift hits all alike.
        measure(alone, s_alone, 2, args.connections, ["envoy"])
        for name, st in stacks.items():
            if name != "envoy alone":
                measure(st, s_full, 2, args.connections, ["envoy", "tollgate"])
        for _ in range(args.rounds):
            results["envoy alone"].append(measure(alone, s_alone, args.seconds, args.connections, ["envoy"]))
            for name, st in stacks.items():
                if name != "envoy alone":
                    results[name].append(measure(st, s_full, args.seconds, args.connections, ["envoy", "tollgate"]))
        if receiver is not None:
            spans = stacks["tollgate+observe"].metric("tollgate_telemetry_spans_exported_total")
            dropped = stacks["tollgate+observe"].metric("tollgate_telemetry_spans_dropped_total")
            audit_lines = sum(1 for _ in open(work / "audit.jsonl", encoding="utf-8"))
            print(f"observe run: {spans:.0f} spans exported, {dropped:.0f} dropped, {audit_lines} audit lines")
            receiver.shutdown()

    print()
    print(f"{'system':<18} {'req/s (median)':>15} {'spread':>16} {'Envoy µs/req':>13} {'tollgate µs/req':>16}  latency (last round)")
    med = {}
    for name, rounds in results.items():
        rps = [r["rps"] for r in rounds]
        med[name] = statistics.median(rps)
        envoy_cpu = statistics.median(r["cpu_us"]["envoy"] for r in rounds)
        tg = [r["cpu_us"].get("tollgate") for r in rounds if "tollgate" in r["cpu_us"]]
        tg_cpu = f"{statistics.median(tg):.1f}" if tg else "-"
        print(f"{name:<18} {med[name]:>15.0f} {min(rps):>7.0f}–{max(rps):<8.0f} {envoy_cpu:>13.1f} {tg_cpu:>16}  {rounds[-1]['latency']}")
    ratio = med["envoy + tollgate"] / med["envoy alone"]
    print(f"\nthroughput ratio (Envoy + tollgate) / (Envoy alone) on one core: {ratio:.2f}")
    if "tollgate+observe" in med:
        print(f"throughput ratio (tollgate + audit + spans) / (tollgate): "
              f"{med['tollgate+observe'] / med['envoy + tollgate']:.2f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
