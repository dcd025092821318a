"""tollgate's exact token counts (tiktoken-rs) against OpenAI's `tiktoken` Python package.

The Python package downloads its vocabulary files at run time, which this machine cannot; the
same files ship inside the tiktoken-rs crate. The test serves those bytes to tiktoken's own
loader, which checks them against the SHA-256 that tiktoken pins for each encoding and builds
the encoding with its own regex: a vocabulary or a pattern that differed would fail here."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import harness

tiktoken = pytest.importorskip("tiktoken", reason="install e2e/requirements.txt into .venv")

CORPUS = [
    "",
    "hello world",
    "tiktoken is great!",
    "The quick brown fox jumps over the lazy dog.\n\n\tIndented\r\nCRLF",
    "fn main() { println!(\"{}\", 42); }  // code   with   runs    of spaces",
    "数字 1234567890 和 中文文本，日本語のテキスト、한국어 텍스트",
    "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 and combining e\u0301 a\u0308",
    "special-looking text <|endoftext|> <|im_start|>user is counted as ordinary text",
    "'s 't 're 've 'm 'll 'd contractions: it's, they're, I'VE, WE'LL",
    "    leading and trailing whitespace    \n\n\n",
    "a" * 1000,
    " ".join(str(i) for i in range(300)),
    "https://example.com/path?query=1&x=%20#frag user@example.com 192.168.0.1",
    "\u0000\u0001 control \u007f chars \ufeff bom",
]


def _crate_asset(name: str) -> Path:
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        cwd=harness.REPO_ROOT, capture_output=True, text=True, check=True, timeout=120,
    ).stdout)
    [pkg] = [p for p in meta["packages"] if p["name"] == "tiktoken-rs"]
    path = Path(pkg["manifest_path"]).parent / "assets" / name
    assert path.is_file(), path
    return path


@pytest.fixture(scope="module")
def encodings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import tiktoken.load

    files = {name: _crate_asset(f"{name}.tiktoken") for name in ("o200k_base", "cl100k_base")}
    real = tiktoken.load.read_file

    def read_file(blobpath: str) -> bytes:
        for name, path in files.items():
            if blobpath.endswith(f"/{name}.tiktoken"):
                return path.read_bytes()
        return real(blobpath)

    os.environ["TIKTOKEN_CACHE_DIR"] = str(tmp_path_factory.mktemp("tiktoken-cache"))
    tiktoken.load.read_file = read_file
    try:
        return {name: tiktoken.get_encoding(name) for name in files}
    finally:
        tiktoken.load.read_file = real


def _rust_count(encoding: str, text: str) -> int:
    exe = harness.require_binary(harness.target_dir() / "tollgate", "cargo build")
    out = subprocess.run(
        [str(exe), "count-tokens", "--encoding", encoding],
        input=text.encode(), capture_output=True, check=True, timeout=30,
    )
    return int(out.stdout)


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_counts_match_the_tiktoken_package(encodings: dict[str, Any], encoding: str) -> None:
    enc = encodings[encoding]
    for text in CORPUS:
        expected = len(enc.encode_ordinary(text))
        assert _rust_count(encoding.split("_")[0], text) == expected, repr(text[:60])
