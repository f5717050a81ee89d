"""Redaction: which values are secrets, every form they are written in, and every place
(text, bytes, nested data, dataclasses, files of any size) they are replaced."""

from __future__ import annotations

import json
import os
import tracemalloc
from dataclasses import dataclass, field

import pytest

from scientist import redaction
from scientist.redaction import CHUNK, MARK, Redactor, forms, redact, secret_values

SECRETISH = ("OPENAI_API_KEY", "GH_TOKEN", "MY_SECRET", "DB_PASSWORD", "FTP_PASSWD", "AWS_CREDENTIALS",
             "lower_api_key")


@pytest.fixture
def env(monkeypatch):
    """An environment with nothing secret in it but what a test puts there."""
    for k in list(os.environ):
        if redaction.SECRET_NAME.search(k):
            monkeypatch.delenv(k)
    return monkeypatch


def test_secret_values_are_those_of_secret_looking_names(env):
    for i, name in enumerate(SECRETISH):
        env.setenv(name, f"value-{i}-" + "x" * i)
    env.setenv("HOME_DIRECTORY", "not-a-secret-value")
    env.setenv("KEYBOARD", "layout-us")  # KEY in the name counts, wherever it is
    got = secret_values()
    assert set(got) == {f"value-{i}-" + "x" * i for i in range(len(SECRETISH))} | {"layout-us"}
    assert "not-a-secret-value" not in got


def test_short_values_are_not_secrets_and_extras_are(env):
    env.setenv("A_TOKEN", "12345")  # 5 characters: would redact half of every log
    env.setenv("B_TOKEN", "123456")  # 6: a secret
    got = secret_values(["extra-secret", "", "short", "extra-secret"])
    assert got == ["extra-secret", "123456"]  # longest first, each once


def test_forms_are_the_value_as_serialisers_write_it():
    value = 'pw-"q\\b\nñé'
    assert forms(value) == {value, 'pw-\\"q\\\\b\\nñé', 'pw-\\"q\\\\b\\n\\u00f1\\u00e9', 'pw-"q\\\\b\\nñé'}
    assert forms("plain-secret") == {"plain-secret"}
    assert forms('abcd"') == {'abcd\\"'}  # the value itself is too short; its escaped form is not


def test_from_environment_knows_every_form_longest_first(env):
    env.setenv("X_TOKEN", 'tok"en-1')
    r = Redactor.from_environment(["run-seed-123456"])
    assert set(r.secrets) == {'tok"en-1', 'tok\\"en-1', "run-seed-123456"}
    assert [len(s) for s in r.secrets] == sorted((len(s) for s in r.secrets), reverse=True)
    assert r.text(json.dumps({"log": 'tok"en-1 and run-seed-123456'})) == json.dumps({"log": f"{MARK} and {MARK}"})


def test_text_replaces_every_occurrence_and_the_longest_secret_first():
    r = Redactor(("abcdefgh", "abcdef"))
    assert r.text("abcdefgh abcdef abcdefgh!") == f"{MARK} {MARK} {MARK}!"
    assert r.text("nothing here") == "nothing here"
    assert Redactor(()).text("abcdefgh") == "abcdefgh"


def test_bytes_are_redacted_as_utf8():
    r = Redactor(("sécret-1", "token-22"))
    assert r.bytes("a sécret-1 b token-22 c".encode()) == f"a {MARK} b {MARK} c".encode()
    assert r.bytes(b"\xff\xfe binary token-22") == b"\xff\xfe binary " + MARK.encode()
    assert r.bytes(b"clean") == b"clean"


def test_obj_redacts_strings_in_containers_keys_too():
    r = Redactor(("secret-1",))
    value = {"secret-1": ["a secret-1", ("secret-1", 3)], "n": 1.5, "none": None, "b": b"secret-1"}
    got = r.obj(value)
    assert got == {MARK: [f"a {MARK}", (MARK, 3)], "n": 1.5, "none": None, "b": b"secret-1"}
    assert type(got[MARK][1]) is tuple
    assert value["secret-1"][0] == "a secret-1"  # a copy: the original is untouched


@dataclass
class Outcome:
    status: str
    code: int
    tails: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    seconds: float = 0.0


def test_dataclass_gives_a_redacted_copy():
    r = Redactor(("secret-1",))
    o = Outcome("crash: secret-1", 1, ["x secret-1"], {"k": "secret-1"}, 2.0)
    got = r.dataclass(o)
    assert got == Outcome(f"crash: {MARK}", 1, [f"x {MARK}"], {"k": MARK}, 2.0)
    assert o.status == "crash: secret-1"


def test_a_file_without_secrets_is_left_alone(tmp_path):
    p = tmp_path / "log"
    p.write_bytes(b"nothing to see\n")
    before = p.stat().st_mtime_ns
    assert Redactor(("secret-1",)).file(p) is False
    assert p.read_bytes() == b"nothing to see\n" and p.stat().st_mtime_ns == before
    assert Redactor(()).file(p) is False
    assert Redactor(("secret-1",)).file(tmp_path / "missing") is False


def test_a_file_is_redacted_in_place(tmp_path):
    p = tmp_path / "train.err"
    p.write_bytes(b"key=secret-1\nagain secret-1 and other-secret\n")
    assert Redactor(("other-secret", "secret-1")).file(p) is True
    assert p.read_bytes() == f"key={MARK}\nagain {MARK} and {MARK}\n".encode()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["train.err"]  # no temporary file left


@pytest.mark.parametrize("offset", [-12, -5, -1, 0, 3])
def test_a_secret_across_a_chunk_boundary_is_found_and_replaced(tmp_path, offset):
    secret = "secret-across-the-boundary"
    p = tmp_path / "big.log"
    head = b"a" * (CHUNK + offset)
    tail = b"b" * (CHUNK // 2)
    p.write_bytes(head + secret.encode() + tail + secret.encode())
    assert Redactor((secret,)).file(p) is True
    assert p.read_bytes() == head + MARK.encode() + tail + MARK.encode()


def test_a_large_file_keeps_everything_but_the_secrets(tmp_path):
    p = tmp_path / "big.log"
    lines = [f"line {i} token-{i % 7}\n" for i in range(200_000)]  # several chunks
    p.write_text("".join(lines))
    assert Redactor(("token-3",)).file(p) is True
    assert p.read_text() == "".join(ln.replace("token-3", MARK) for ln in lines)


def test_redact_uses_the_environment_and_extras(env):
    env.setenv("LAB_DB_PASSWORD", "hunter22")
    assert redact("a hunter22 b extra-99 c", ("extra-99",)) == f"a {MARK} b {MARK} c"
    assert redact("short extra") == "short extra"


def test_secret_values_are_longest_first_not_in_alphabetical_order(env):
    # an extra of exactly MIN_LENGTH characters is a secret; the longest comes first even
    # where the alphabet would put it last
    assert secret_values(["zzzzzz", "a-longer-secret", "yyyyyyy"]) == ["a-longer-secret", "yyyyyyy", "zzzzzz"]


def test_a_secret_with_an_undecodable_byte_does_not_break_bytes():
    # os.environ gives a byte that is not UTF-8 as a lone surrogate; bytes() must not raise on it
    r = Redactor(("tok\udc80en-12",))
    assert r.bytes(b"plain log line\n") == b"plain log line\n"
    assert r.bytes("a tok\udc80en-12 b".encode("utf-8", "surrogatepass")) == f"a {MARK} b".encode()


@pytest.mark.parametrize("where", [0, 3, 9])
def test_a_secret_longer_than_a_chunk_is_found_and_replaced(tmp_path, monkeypatch, where):
    # chunks of 4 bytes, a secret of 14: it spans four chunks, from the file's first byte on
    monkeypatch.setattr(redaction, "CHUNK", 4)
    secret = "XXXX-XXXX-4242"
    p = tmp_path / "log"
    p.write_bytes(b"a" * where + secret.encode() + b" tail\n")
    assert Redactor((secret,)).file(p) is True
    assert p.read_bytes() == b"a" * where + MARK.encode() + b" tail\n"


def test_the_end_of_a_secret_alone_is_not_a_secret(tmp_path, monkeypatch):
    monkeypatch.setattr(redaction, "CHUNK", 4)
    p = tmp_path / "log"
    p.write_bytes(b"-XXXX-4242 and the rest\n")  # the secret without its first four bytes
    assert Redactor(("XXXX-XXXX-4242",)).file(p) is False
    assert p.read_bytes() == b"-XXXX-4242 and the rest\n"


def test_a_large_file_is_read_and_rewritten_in_chunks_not_whole(tmp_path):
    # a 24 MiB log with a secret at its end: both the search and the rewrite hold a chunk or
    # two (1 MiB each) in memory at a time, never the whole file
    p = tmp_path / "huge.log"
    p.write_bytes(b"a" * (24 * CHUNK) + b" secret-at-the-end\n")
    tracemalloc.start()
    try:
        assert Redactor(("secret-at-the-end",)).file(p) is True
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * CHUNK, peak
    assert p.stat().st_size == 24 * CHUNK + len(f" {MARK}\n")
