"""A short soak (mixed streams with client cancellations) and a kill -9 under load, through the
real stack. `make soak` runs the same code for 10 minutes on a release build (e2e/soak.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import soak
from harness import Stack

SECONDS = float(os.environ.get("TOLLGATE_SOAK_SECONDS", "30"))


@pytest.fixture
def paced(make_stack) -> Stack:
    return make_stack(envoy_log_level="error", tollgate_config=soak.soak_config(),
                      upstream_args=["--chunk-delay-ms", "5"])


def test_soak_leaves_no_streams_tasks_or_reservations_behind(paced: Stack) -> None:
    if not (paced.target / "loadgen").exists():
        pytest.fail("loadgen missing: cargo build --workspace builds bench/tools")
    r = soak.soak(paced, SECONDS, concurrency=16)
    assert r["streams"]["ok"] > 50, r["streams"]
    assert soak.refused(r["streams"]) == 0 and soak.refused(r["plain"]) == 0, (r["streams"], r["plain"])
    assert r["streams"]["cancelled"] > 10, "the run must include client cancellations"
    assert r["after"]["streams_active"] == 0, r["after"]
    assert r["after"]["limits_outstanding"] == 0, r["after"]
    assert r["after"]["runtime_alive_tasks"] <= r["baseline"]["runtime_alive_tasks"] + 2, r
    # Flat after warm-up (debug build, short run: a generous bound; `make soak` reports it).
    assert r["rss_growth_mib"] < max(8.0, 0.15 * r["rss_early_mib"]), r


def test_killed_mid_stream_fails_closed_and_recovers(paced: Stack) -> None:
    k = soak.kill_restart(paced)
    assert k["probes"] > 3
    # Fail closed: Envoy's own 500 in the gateway_unavailable envelope, nothing forwarded.
    assert k["probe_statuses"] == [500], k
    assert k["probe_codes"] == ["gateway_unavailable"], k
    assert k["forwarded_while_down"] == 0, k
    assert k["restart_to_first_ok_s"] is not None and k["restart_to_first_ok_s"] < 15, k
    # Streams open at the kill ended (reset), none hung past the load generator's deadline.
    assert k["load"]["ok"] > 0
