"""The benchmark harness's own logic (bench/run.py), without running a benchmark: the Envoy
configs of the `phases` scenario are valid for Envoy and change only the downstream ext_proc
filter's processing mode; per-phase differences and the issue-13 targets table are computed
from the numbers they are given."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import harness
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_run():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = mod
    spec.loader.exec_module(mod)
    return mod


run = _load_run()


def _ext_proc_modes(cfg) -> list[dict]:
    """processing_mode of every ext_proc filter: downstream (listener) first, then upstream."""
    modes = []
    for lst in cfg["static_resources"]["listeners"]:
        for chain in lst["filter_chains"]:
            for f in chain["filters"]:
                for hf in f.get("typed_config", {}).get("http_filters", []):
                    if hf.get("name") == "envoy.filters.http.ext_proc":
                        modes.append(("downstream", hf["typed_config"]["processing_mode"]))
    for c in cfg["static_resources"]["clusters"]:
        opts = c.get("typed_extension_protocol_options", {}).values()
        for o in opts:
            for hf in o.get("http_filters", []):
                if hf.get("name") == "envoy.filters.http.ext_proc":
                    modes.append(("upstream", hf["typed_config"]["processing_mode"]))
    return modes


@pytest.mark.parametrize("name,label,mode", [m for m in run.PHASE_MODES if m[2] is not None],
                         ids=[m[0] for m in run.PHASE_MODES if m[2] is not None])
def test_phase_configs_set_only_the_downstream_mode_and_validate(tmp_path: Path, name, label, mode) -> None:
    shipped = harness.load_yaml(harness.ENVOY_CONFIG)
    before = _ext_proc_modes(shipped)
    cfg = run.set_processing_mode(harness.load_yaml(harness.ENVOY_CONFIG), mode)
    after = _ext_proc_modes(cfg)
    assert after[0] == ("downstream", {**mode, "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"})
    assert after[1:] == before[1:], "the chain cluster's upstream ext_proc filter must keep its mode"
    path = harness.dump_yaml(run.raise_circuit_breakers(cfg), tmp_path / f"{name}.yaml")
    out = subprocess.run([str(harness.envoy_binary()), "--mode", "validate", "-c", str(path),
                          "--log-level", "error"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def _run(ok: int, envoy_s: float, null_s: float, msgs: int, events: int = 0) -> dict:
    return {"rps": ok / 2, "ok": ok, "events": events, "cpu_s": {"null": null_s, "envoy": envoy_s},
            "core0_busy": 1.0, "latency": {"p50_us": 1000, "p99_us": 2000}, "status": {"200": ok},
            "errors": {}, "ext_proc": {"stream_msgs_sent": msgs},
            "ttft": {"p50_us": 1000, "p99_us": 2000}, "gap": {"p50_us": 10000, "p99_us": 12000}}


def _phase_raw() -> dict:
    # 1,000 requests per run: Envoy 50, 90, 110, 125, 140 µs per request; 0..4 messages each.
    return {
        "ph-none": {"sat": [_run(1000, 0.050, 0.0, 0)]},
        "ph-hdr": {"sat": [_run(1000, 0.090, 0.020, 1000)]},
        "ph-body": {"sat": [_run(1000, 0.110, 0.030, 2000)]},
        "ph-resp": {"sat": [_run(1000, 0.125, 0.036, 3000)],
                    "stream": [_run(10, 0.030, 0.0, 10, events=1000)]},
        "ph-rbody": {"sat": [_run(1000, 0.140, 0.042, 4000)],
                     "stream": [_run(10, 0.040, 0.010, 1010, events=1000)]},
        "ph-sse": {"stream": [_run(10, 0.038, 0.010, 1010, events=1000)]},
    }


def test_phase_table_differences_are_per_phase() -> None:
    t = run.phase_table(_phase_raw())
    sat = {r["mode"]: r for r in t["sat"]}
    assert [r["mode"] for r in t["sat"]] == ["ph-none", "ph-hdr", "ph-body", "ph-resp", "ph-rbody"]
    assert sat["ph-hdr"]["envoy_delta_us"] == pytest.approx(40.0)
    assert sat["ph-body"]["envoy_delta_us"] == pytest.approx(20.0)
    assert sat["ph-rbody"]["envoy_delta_us"] == pytest.approx(15.0)
    assert sat["ph-rbody"]["envoy_us_per_msg"] == pytest.approx(15.0)
    assert sat["ph-body"]["processor_delta_us"] == pytest.approx(10.0)
    stream = {r["mode"]: r for r in t["stream"]}
    assert "envoy_delta_us" not in stream["ph-resp"]  # first streamed row has no mode before it
    assert stream["ph-rbody"]["envoy_delta_us"] == pytest.approx(10.0)
    # mode_override is compared with the static response-headers mode, not with ph-rbody.
    assert stream["ph-sse"]["envoy_delta_us"] == pytest.approx(8.0)
    assert stream["ph-sse"]["msgs"] == pytest.approx(1.01)


def _summary(rps: float, cpu: float, p50: float = 1.0, p99: float = 2.0) -> dict:
    return {"rps_median": rps, "rps_min": rps, "rps_max": rps, "cpu_us_total": cpu,
            "cpu_us_per_unit": {"envoy": cpu}, "core0_busy": 1.0, "p50_ms": p50, "p99_ms": p99}


def _stream(cpu: float, ttft_p99: float) -> dict:
    return {"cpu_us_total": cpu, "cpu_us_per_unit": {"envoy": cpu}, "ttft_p50_ms": 1.0,
            "ttft_p99_ms": ttft_p99, "gap_p50_ms": 10.0, "gap_p99_ms": 12.0, "events_per_stream": 204}


def test_targets_report_met_not_met_and_missing() -> None:
    summary = {
        "null": {"sat": _summary(5000, 200), "rate": _summary(2000, 0, 3.0, 6.0),
                 "stream": _stream(40.0, 5.0)},
        "route": {"sat": _summary(4900, 205)},
        "full": {"sat": _summary(3500, 290), "rate": _summary(2000, 0, 3.4, 9.5),
                 "stream": _stream(70.0, 4.0),
                 "hold": {"rss_per_stream": {"tollgate": 30 * 1024}, "ok": 10, "streams": 10,
                          "rss_base": {"tollgate": 0}, "rss_peak": {"tollgate": 300 * 1024},
                          "rss_after": {"tollgate": 0}}},
        "litellm": {"sat": _summary(100, 10000)},
    }
    rat = run.ratios(summary)
    phases = run.phase_table(_phase_raw())  # ph-sse: +8 µs per event over ph-resp
    rows = {r["target"]: r for r in run.targets(summary, rat, phases)}
    assert rows["routing-only throughput ÷ floor"]["result"] == "met"  # 0.98
    assert rows["all features (memory) throughput ÷ floor"]["result"] == "NOT met"  # 0.70
    lit = rows["all features per core × LiteLLM (req/s on one core)"]
    assert lit["measured"] == pytest.approx(35.0) and lit["result"] == "met"
    assert "34.5×" in lit["note"]  # 10000 / 290 µs per request
    assert rows["all features per core × Portkey (req/s on one core)"]["result"] == "n/a"  # not run
    summary["portkey"] = {"sat": _summary(250, 2000)}
    rows2 = {r["target"]: r for r in run.targets(summary, run.ratios(summary), phases)}
    pk = rows2["all features per core × Portkey (req/s on one core)"]
    assert pk["measured"] == pytest.approx(14.0) and pk["result"] == "reported"  # no goal of its own
    del summary["portkey"]
    assert rows["all features p50 at 2,000 req/s − floor's (ms)"]["measured"] == pytest.approx(0.4)
    assert rows["all features p50 at 2,000 req/s − floor's (ms)"]["result"] == "met"
    assert rows["all features p99 at 2,000 req/s − floor's (ms)"]["result"] == "NOT met"  # +3.5
    streamed = rows["all features streamed CPU per event (Envoy + tollgate) ÷ floor"]
    assert streamed["measured"] == pytest.approx(1.75) and streamed["result"] == "NOT met"
    assert "1.20×" in streamed["note"]  # (40 + 8) / 40: the bound Envoy's STREAMED body sets
    assert rows["all features TTFT p99 − floor's (ms)"]["result"] == "met"
    assert rows["all features tollgate RSS per open stream (KiB)"]["measured"] == pytest.approx(30.0)
    assert rows["all features tollgate RSS per open stream (KiB)"]["result"] == "NOT met"
    md = run.markdown({"date": "d", "conditions": "c", "rate": 2000.0}, summary, rat, phases)
    assert "| all features (memory) throughput ÷ floor | ≥ 0.80 | 0.70 | NOT met |" in md
    assert "| LiteLLM proxy 1.100.5 | 100 |" in md
    assert "| response headers, SSE body STREAMED by mode_override | 38.0 | +8.0 | 1.01 | 8.0 |" in md
