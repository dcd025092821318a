"""tollgate's validators against independent oracles (python-stdnum, phonenumbers, ipaddress).

Generated valid and near-miss values run through the real binary (``tollgate pii-scan``); the
detectors must agree with the oracles on every checksum-backed entity.
"""

from __future__ import annotations

import random
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


def test_secret_detectors_find_every_generated_secret_and_no_near_miss() -> None:
    corpus = pii_corpus.secret_samples(random.Random(13), 200)
    # Keys ending in '-' (not a word character) once slipped past a trailing word boundary.
    assert any(s.positive and s.value.endswith("-") for s in corpus if s.entity == "google_api_key")
    results = pii_corpus.scan(tollgate(), [s.text for s in corpus])
    disagreements: list[str] = []
    # Not own_only: a secret detector firing on any other secret's sample is a false positive.
    scores = pii_corpus.score(
        corpus, results,
        on_miss=lambda s, r: disagreements.append(f"{s.entity}/{s.kind}: positive={s.positive} got={r['findings']}"),
    )
    for entity in pii_corpus.SECRETS:
        sc = scores[entity]
        assert sc.tp >= 200, (entity, sc)
        assert (sc.precision, sc.recall) == (1.0, 1.0), (entity, sc, disagreements[:10])
    near = [(s, r) for s, r in zip(corpus, results) if not s.positive]
    kinds = {(s.entity, s.kind) for s, _ in near}
    for want in [("aws_access_key", "lowercase"), ("openai_key", "too_short"), ("jwt", "version"),
                 ("jwt", "base64_blob"), ("private_key", "public_block"), ("secret_assignment", "prose")]:
        assert want in kinds, want
    # Only secret findings count: the random digit groups inside a fake Slack token can look
    # like a phone or registration number, which is the PII detectors' business, not this test's.
    flagged = [(s.entity, s.kind, f) for s, r in near for f in r["findings"]
               if f["entity"] in pii_corpus.SECRETS]
    assert flagged == []
