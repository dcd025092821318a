"""Labelled PII corpus for tollgate's detectors, generated with independent oracles.

Secrets (API keys, tokens, JWTs, PEM private keys, ``password=…`` assignments) have no oracle
library: they are generated to the published formats (prefix, length, alphabet), and each
near-miss breaks one rule (wrong prefix, too short, lower case, not a JWT, a public PEM block,
``password`` in prose).

Values come from generators (Faker, random digits) and are labelled by oracles that share no
code with tollgate: python-stdnum (Luhn, IBAN, Korean RRN/BRN, US SSN), phonenumbers
(libphonenumber's Korean and international metadata), Python's ``ipaddress``.  Near-misses
(bad checksums, impossible dates, version strings, timestamps, order numbers) are included
and labelled negative.  ``scan`` runs texts through ``tollgate pii-scan`` (one process for a
whole batch).  Used by ``test_pii_oracle.py`` and ``scripts/pii_report.py``.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import phonenumbers
from faker import Faker
from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.kr import brn as std_brn
from stdnum.kr import rrn as std_rrn
from stdnum.us import ssn as std_ssn

TEMPLATES = [
    "Please use {v} for this.",
    "연락처는 {v}입니다.",
    "값: {v}",
    "{v}",
    "Details ({v}), thanks!",
]


@dataclass
class Sample:
    text: str
    value: str
    entity: str  # the detector that should fire on ``value``
    positive: bool  # oracle verdict
    kind: str  # "valid", or the near-miss kind

    @property
    def span(self) -> tuple[int, int]:
        prefix = self.text.split(self.value, 1)[0]
        start = len(prefix.encode())
        return start, start + len(self.value.encode())


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _group(number: str, rng: random.Random) -> str:
    sep = rng.choice([" ", "-", ""])
    if len(number) == 15:  # Amex 4-6-5
        parts = [number[:4], number[4:10], number[10:]]
    else:
        parts = [number[i:i + 4] for i in range(0, len(number), 4)]
    return sep.join(parts)


CARD_PREFIXES = [("4", 16), ("4", 13), ("4", 19), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16),
                 ("34", 15), ("37", 15), ("6011", 16), ("65", 16), ("3530", 16), ("62", 17)]


def cards(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    for _ in range(n):
        prefix, length = rng.choice(CARD_PREFIXES)
        body = prefix + _digits(rng, length - len(prefix) - 1)
        good = body + luhn.calc_check_digit(body)
        bad = body + str((int(luhn.calc_check_digit(body)) + rng.randint(1, 9)) % 10)
        out.append((_group(good, rng), luhn.is_valid(good), "valid"))
        out.append((_group(bad, rng), luhn.is_valid(bad), "bad_checksum"))
    return out


def ibans(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    for _ in range(n):
        country, bban = rng.choice([
            ("DE", _digits(rng, 18)),
            ("GB", "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) + _digits(rng, 14)),
            ("NL", "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) + _digits(rng, 10)),
        ])
        check = std_iban.calc_check_digits(country + "00" + bban)
        good = country + check + bban
        bad = country + f"{(int(check) + rng.randint(1, 50)) % 97 + 2:02d}" + bban
        grouped = lambda x: " ".join(x[i:i + 4] for i in range(0, len(x), 4))  # noqa: E731
        out.append((rng.choice([good, grouped(good)]), std_iban.is_valid(good), "valid"))
        out.append((grouped(bad), std_iban.is_valid(bad), "bad_checksum"))
    return out


def rrn_valid(number: str) -> bool:
    """Date and gender digit valid (python-stdnum's date rules). The check digit is not
    required: numbers issued since 2020-10 have none, and tollgate must still find them."""
    compact = number.replace("-", "")
    if len(compact) != 13 or not compact.isdigit():
        return False
    try:
        std_rrn.get_birth_date(compact)
    except Exception:  # stdnum raises its own ValidationError subclasses
        return False
    return True


def rrns(rng: random.Random, n: int) -> list[tuple[str, bool, str, str]]:
    out = []
    for _ in range(n):
        year = rng.randint(1920, 2019)
        month, day = rng.randint(1, 12), rng.randint(1, 28)
        foreign = rng.random() < 0.25
        gender = (rng.choice("56") if foreign else rng.choice("12")) if year < 2000 else (
            rng.choice("78") if foreign else rng.choice("34"))
        front = f"{year % 100:02d}{month:02d}{day:02d}"
        tail = gender + _digits(rng, 6)
        entity = "kr_frn" if foreign else "kr_rrn"
        value = f"{front}-{tail}" if rng.random() < 0.8 else front + tail
        out.append((value, rrn_valid(value), "valid", entity))
        bad_date = f"{year % 100:02d}{rng.choice([13, 0, 19]):02d}{day:02d}-{tail}"
        out.append((bad_date, rrn_valid(bad_date), "invalid_date", entity))
        bad_day = f"{year % 100:02d}02{rng.choice([30, 31]):02d}-{tail}"
        out.append((bad_day, rrn_valid(bad_day), "invalid_date", entity))
    return out


def brn_check_digit(body: str) -> str:
    """The published check digit (weights 1 3 7 1 3 7 1 3 5, plus floor(d9 * 5 / 10));
    python-stdnum checks only the structure, so the checksum is computed here."""
    d = [int(c) for c in body]
    total = sum(x * w for x, w in zip(d, [1, 3, 7, 1, 3, 7, 1, 3, 5])) + d[8] * 5 // 10
    return str((10 - total % 10) % 10)


def brn_valid(number: str) -> bool:
    compact = number.replace("-", "")
    return std_brn.is_valid(compact) and brn_check_digit(compact[:9]) == compact[9]


def brns(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    fmt = lambda d: f"{d[:3]}-{d[3:5]}-{d[5:]}"  # noqa: E731
    for _ in range(n):
        body = _digits(rng, 9)
        good = body + brn_check_digit(body)
        bad = body + str((int(good[-1]) + 1) % 10)
        out.append((fmt(good), brn_valid(good), "valid"))
        out.append((fmt(bad), brn_valid(bad), "bad_checksum"))
    return out


def ssns(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    for _ in range(n):
        area = rng.choice([f"{rng.randint(1, 665):03d}", f"{rng.randint(667, 899):03d}"])
        value = f"{area}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
        out.append((value, std_ssn.is_valid(value), "valid"))
        bad = rng.choice(["000", "666", f"9{rng.randint(0, 99):02d}"]) + value[3:]
        out.append((bad, std_ssn.is_valid(bad), "invalid_area"))
    return out


def phones(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    for _ in range(n):
        sep = rng.choice(["-", " ", "."])
        form = rng.choice(["mobile", "seoul", "area", "intl", "service"])
        if form == "mobile":
            v = f"010{sep}{_digits(rng, 4)}{sep}{_digits(rng, 4)}"
        elif form == "seoul":
            v = f"02{sep}{rng.randint(200, 999)}{sep}{_digits(rng, 4)}"
        elif form == "area":
            v = f"0{rng.choice(['31', '32', '51', '53', '62', '64'])}{sep}{rng.randint(200, 999)}{sep}{_digits(rng, 4)}"
        elif form == "intl":
            v = f"+82 10 {_digits(rng, 4)} {_digits(rng, 4)}"
        else:
            v = f"{rng.choice(['1588', '1544', '1577', '1661'])}-{_digits(rng, 4)}"
        try:
            ok = phonenumbers.is_valid_number(phonenumbers.parse(v, "KR"))
        except phonenumbers.NumberParseException:
            ok = False
        out.append((v, ok, "valid"))
    return out


NEAR_MISSES = [
    ("phone", "2024-01-15 10:30:00", "timestamp"),
    ("phone", "v1.2.3", "version"),
    ("phone", "ORD-20240115-0042", "order_number"),
    ("card", "order 1234567812345678", "order_number"),
    ("card", "1700000000000", "timestamp"),
    ("ipv4", "1.2.3", "version"),
    ("ipv4", "10.0.300.1", "invalid_octet"),
    ("ipv6", "12:30:45", "timestamp"),
    ("email", "user@localhost", "no_tld"),
    ("us_ssn", "2024-01-1500", "date"),
    ("iban", "ISBN 978-3-16-148410-0", "isbn"),
]


# ---- secrets -------------------------------------------------------------------------------
# No oracle library exists for secrets; positives are built to the published formats
# (docs/pii-formats: prefixes, lengths, alphabets) and near-misses break exactly one rule.

SECRETS = ["openai_key", "anthropic_key", "aws_access_key", "github_token", "slack_token",
           "google_api_key", "jwt", "private_key", "secret_assignment"]
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
URLSAFE = ALNUM + "-_"
UPPER_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _key_body(rng: random.Random, n: int) -> str:
    """A key body over the whole base64url alphabet, so some end in '-' (not a word character)."""
    return _chars(rng, URLSAFE, n)


def openai_keys(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    for _ in range(n):
        out.append((rng.choice([f"sk-{_chars(rng, ALNUM, 48)}", f"sk-proj-{_key_body(rng, 156)}",
                                f"sk-svcacct-{_key_body(rng, 120)}"]), True, "valid"))
        out.append((f"sk-{_chars(rng, ALNUM, rng.randint(4, 19))}", False, "too_short"))
        out.append((f"pk-{_chars(rng, ALNUM, 48)}", False, "wrong_prefix"))
    return out


def anthropic_keys(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    for _ in range(n):
        out.append((f"sk-ant-api03-{_key_body(rng, 93)}AA", True, "valid"))
        out.append((f"sk-ant-{_chars(rng, ALNUM, rng.randint(4, 12))}", False, "too_short"))
    return out


def aws_keys(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    for _ in range(n):
        out.append((rng.choice(["AKIA", "ASIA"]) + _chars(rng, UPPER_ALNUM, 16), True, "valid"))
        out.append(("akia" + _chars(rng, UPPER_ALNUM, 16).lower(), False, "lowercase"))
        out.append(("AKIA" + _chars(rng, UPPER_ALNUM, rng.randint(8, 15)), False, "too_short"))
        out.append(("AKIB" + _chars(rng, UPPER_ALNUM, 16), False, "wrong_prefix"))
    return out


def github_tokens(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    for _ in range(n):
        out.append((rng.choice([f"gh{rng.choice('pousr')}_{_chars(rng, ALNUM, 36)}",
                                f"github_pat_{_chars(rng, ALNUM, 22)}_{_chars(rng, ALNUM, 59)}"]),
                    True, "valid"))
        out.append((f"ghp_{_chars(rng, ALNUM, rng.randint(10, 35))}", False, "too_short"))
        out.append((f"ghx_{_chars(rng, ALNUM, 36)}", False, "wrong_prefix"))
    return out


def slack_tokens(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    for _ in range(n):
        team, user = _digits(rng, rng.randint(10, 13)), _digits(rng, rng.randint(10, 13))
        out.append((rng.choice([
            f"xoxb-{team}-{user}-{_chars(rng, ALNUM, 24)}",
            f"xoxp-{team}-{user}-{_digits(rng, 13)}-{_chars(rng, 'abcdef0123456789', 32)}",
            f"https://hooks.slack.com/services/T{_chars(rng, UPPER_ALNUM, 8)}/B{_chars(rng, UPPER_ALNUM, 10)}/{_chars(rng, ALNUM, 24)}",
        ]), True, "valid"))
        out.append((f"xoxq-{team}-{user}-{_chars(rng, ALNUM, 24)}", False, "wrong_prefix"))
        out.append((f"xoxb-{_digits(rng, rng.randint(3, 9))}", False, "too_short"))
    return out


def google_keys(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    for _ in range(n):
        # The full alphabet: about one key in 64 ends in '-'.
        out.append(("AIza" + _chars(rng, URLSAFE, 35), True, "valid"))
        out.append(("AIza" + _chars(rng, URLSAFE, rng.randint(10, 30)) + rng.choice(ALNUM), False, "too_short"))
        out.append(("Aiza" + _chars(rng, ALNUM, 35), False, "wrong_prefix"))
    return out


def jwts(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    for _ in range(n):
        header = {"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
        payload = {"sub": _digits(rng, 10), "name": rng.choice(["Kim Minsu", "Jane Doe"]),
                   "iat": 1_700_000_000 + rng.randint(0, 10**7)}
        parts = [_b64url(json.dumps(header, separators=(",", ":")).encode()),
                 _b64url(json.dumps(payload, separators=(",", ":")).encode()),
                 _b64url(rng.randbytes(rng.choice([32, 64])))]
        assert parts[0].startswith("eyJ") and json.loads(base64.urlsafe_b64decode(parts[0] + "=="))
        out.append((".".join(parts), True, "valid"))
        out.append((base64.b64encode(rng.randbytes(rng.randint(24, 60))).decode(), False, "base64_blob"))
        out.append((".".join(_b64url(rng.randbytes(24)) for _ in range(3)), False, "not_json_header"))
        out.append((parts[0], False, "header_only"))
    return out


PEM_TYPES = ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY",
             "ENCRYPTED PRIVATE KEY"]


def _pem(rng: random.Random, label: str) -> str:
    body = base64.b64encode(rng.randbytes(rng.choice([120, 300, 900]))).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])


def private_keys(rng: random.Random, n: int) -> list[tuple[str, bool, str]]:
    out = []
    for _ in range(n):
        out.append((_pem(rng, rng.choice(PEM_TYPES)), True, "valid"))
        out.append((_pem(rng, rng.choice(["PUBLIC KEY", "CERTIFICATE"])), False, "public_block"))
    return out


def secret_assignments(rng: random.Random, n: int) -> list[tuple[str, str, bool, str]]:
    """(text, value, positive, kind): the finding covers the assigned value, not the name."""
    out = []
    for _ in range(n):
        value = _chars(rng, ALNUM + "!@#$%^&*-_+", rng.randint(8, 32))
        form = rng.choice(["password={v}", "API_KEY={v}", "secret: {v}", 'DB_PASSWORD="{v}"',
                           '"client_secret": "{v}"', "export ACCESS_TOKEN='{v}'", "pwd = {v}"])
        line = form.format(v=value)
        out.append((rng.choice(["{l}", "config:\n  {l}\n", "Set {l} in .env first.", "값: {l}"]).format(l=line),
                    value, True, "valid"))
    for prose in ["Your password must be at least 12 characters long.",
                  "I forgot my password again, can you reset it?",
                  "The API key is stored in the vault, never in code.",
                  "Keep the secret between us.",
                  "password reset emails go out within 5 minutes"]:
        out.append((prose, prose, False, "prose"))
    out.append(("password=abc", "abc", False, "too_short"))
    return out


SECRET_NEAR_MISSES = [
    ("openai_key", "risk-assessment-framework-document-v2", "inside_word"),
    ("jwt", "1.2.3", "version"),
    ("jwt", "v2.10.3-rc.1", "version"),
    ("aws_access_key", "AKIA", "prefix_only"),
]


def secret_samples(rng: random.Random, n: int) -> list[Sample]:
    out: list[Sample] = []
    for entity, gen in [("openai_key", openai_keys), ("anthropic_key", anthropic_keys),
                        ("aws_access_key", aws_keys), ("github_token", github_tokens),
                        ("slack_token", slack_tokens), ("google_api_key", google_keys),
                        ("jwt", jwts), ("private_key", private_keys)]:
        for value, ok, kind in gen(rng, n):
            out.append(Sample(rng.choice(TEMPLATES).format(v=value), value, entity, ok, kind))
    for text, value, ok, kind in secret_assignments(rng, n):
        out.append(Sample(text, value, "secret_assignment", ok, kind))
    for entity, value, kind in SECRET_NEAR_MISSES:
        out.append(Sample(f"see {value} please", value, entity, False, kind))
    return out


def samples(seed: int = 7, n: int = 60, secrets: bool = True) -> list[Sample]:
    rng = random.Random(seed)
    fake = Faker(["en_US", "ko_KR"])
    Faker.seed(seed)
    out: list[Sample] = []

    def add(entity: str, rows: list) -> None:
        for row in rows:
            value, ok, kind = row[0], row[1], row[2]
            ent = row[3] if len(row) > 3 else entity
            out.append(Sample(rng.choice(TEMPLATES).format(v=value), value, ent, ok, kind))

    add("card", cards(rng, n))
    add("iban", ibans(rng, n))
    add("kr_rrn", rrns(rng, n))
    add("kr_brn", brns(rng, n))
    add("us_ssn", ssns(rng, n))
    add("phone", phones(rng, n))
    add("email", [(fake.unique.email(), True, "valid") for _ in range(n)])
    add("ipv4", [(str(ipaddress.IPv4Address(fake.ipv4())), True, "valid") for _ in range(n)])
    add("ipv6", [(fake.ipv6(), True, "valid") for _ in range(n)])
    for entity, value, kind in NEAR_MISSES:
        out.append(Sample(f"see {value} please", value, entity, False, kind))
    if secrets:
        out.extend(secret_samples(rng, n))
    return out


def scan(tollgate: Path, texts: list[str]) -> list[dict]:
    """Runs ``tollgate pii-scan`` once over all texts."""
    stdin = "\n".join(json.dumps(t, ensure_ascii=False) for t in texts) + "\n"
    proc = subprocess.run([str(tollgate), "pii-scan"], input=stdin.encode(), capture_output=True,
                          check=True, timeout=120)
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(texts), (len(lines), len(texts))
    return [json.loads(line) for line in lines]


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def score(corpus: list[Sample], results: list[dict],
          on_miss: Callable[[Sample, dict], None] | None = None,
          own_only: bool = False) -> dict[str, Score]:
    """Per-entity precision/recall. A finding counts for the sample's value only when it
    covers exactly the value's bytes; any other finding is a false positive. With
    ``own_only``, findings of other entities (e.g. a Luhn-valid card inside a bad IBAN) are
    not counted, so each detector is judged on its own samples."""
    scores: dict[str, Score] = {}
    for s, r in zip(corpus, results):
        start, end = s.span
        exact = [f for f in r["findings"] if (f["start"], f["end"]) == (start, end)]
        hit = any(f["entity"] == s.entity for f in exact)
        sc = scores.setdefault(s.entity, Score())
        if s.positive:
            if hit:
                sc.tp += 1
            else:
                sc.fn += 1
        for f in r["findings"]:
            if s.positive and f["entity"] == s.entity and (f["start"], f["end"]) == (start, end):
                continue
            if own_only and f["entity"] != s.entity:
                continue
            scores.setdefault(f["entity"], Score()).fp += 1
        if on_miss and (hit != s.positive or len(r["findings"]) > int(hit)):
            on_miss(s, r)
    return scores
