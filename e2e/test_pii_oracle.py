"""tollgate's validators against independent oracles (python-stdnum, phonenumbers, ipaddress).

Generated valid and near-miss values run through the real binary (``tollgate pii-scan``); the
detectors must agree with the oracles on every checksum-backed entity.
"""

from __future__ import annotations

from pathlib import Path

import harness
import pii_corpus


def tollgate() -> Path:
    return harness.require_binary(harness.target_dir() / "tollgate", "cargo build --workspace")


def test_detectors_agree_with_the_oracles() -> None:
    corpus = pii_corpus.samples(seed=11, n=80)
    results = pii_corpus.scan(tollgate(), [s.text for s in corpus])
    disagreements: list[str] = []
    scores = pii_corpus.score(
        corpus, results,
        on_miss=lambda s, r: disagreements.append(f"{s.entity}/{s.kind} {s.value!r}: oracle={s.positive} got={r['findings']}"),
        own_only=True,
    )
    strict = ["card", "iban", "kr_rrn", "kr_frn", "kr_brn", "us_ssn", "email", "ipv4", "ipv6"]
    for entity in strict:
        sc = scores[entity]
        assert (sc.precision, sc.recall) == (1.0, 1.0), (entity, sc, disagreements[:10])
    # libphonenumber knows number ranges that a pattern cannot; a small gap is expected.
    assert scores["phone"].recall >= 0.95, (scores["phone"], disagreements[:10])
    assert scores["phone"].precision >= 0.95, (scores["phone"], disagreements[:10])


def test_near_misses_are_not_detected() -> None:
    corpus = [s for s in pii_corpus.samples(seed=3, n=5) if not s.positive]
    assert len(corpus) > 20
    results = pii_corpus.scan(tollgate(), [s.text for s in corpus])
    leaked = [(s.entity, s.kind, s.value, r["findings"]) for s, r in zip(corpus, results)
              if any(f["entity"] == s.entity for f in r["findings"])]
    assert leaked == []


def test_masked_output_never_contains_a_detected_value() -> None:
    corpus = [s for s in pii_corpus.samples(seed=5, n=20) if s.positive]
    results = pii_corpus.scan(tollgate(), [s.text for s in corpus])
    for s, r in zip(corpus, results):
        assert s.value not in r["masked"], (s, r)
