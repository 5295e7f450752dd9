"""Secrets stay home (rlmcli/secrets_scan.py): possible secrets in the input are reported by
path:line, and with --redact-secrets replaced before the sandbox sees them. A found secret never
shows in stdout, stderr, the trace, the history or a model request. Scripted runs through the real
CLI in the bubblewrap sandbox, and the scanner on its own."""

from __future__ import annotations

import base64
import json
import random
import string
from pathlib import Path

import pytest
from conftest import ask_args, clean_env
from fake_llm import reply

from rlmcli.secrets_scan import Scanner, placeholder

AWS_KEY = "AKIAZ7QW3ERT5YUI9OPL"
GITHUB_TOKEN = "ghp_" + "Xq7Lm2Nc9Rt4Vb8Kd3Fh6Jw1Ps5Gz0Ay2Ue4Q"
_rng = random.Random(13)
KEY_LINES = [
    "".join(_rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(64)) for _ in range(6)
]
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(KEY_LINES) + "\n-----END RSA PRIVATE KEY-----\n"
SECRETS = [AWS_KEY, GITHUB_TOKEN, *KEY_LINES]


def plant(root: Path) -> Path:
    """A small repository with three planted secrets: (file, line) = (id_rsa, 1), (settings.py, 3),
    (ci.yml, 4)."""
    tree = root / "tree"
    (tree / "deploy").mkdir(parents=True)
    (tree / "README.md").write_text("# Service\n\nDeploys with the key in deploy/.\n")
    (tree / "deploy" / "id_rsa").write_text(PRIVATE_KEY)
    (tree / "settings.py").write_text(
        f'REGION = "eu-west-1"\nBUCKET = "logs"\nAWS_ACCESS_KEY_ID = "{AWS_KEY}"\n'
    )
    (tree / "ci.yml").write_text(f"jobs:\n  build:\n    env:\n      GH_TOKEN: {GITHUB_TOKEN}\n")
    return tree


def leaks(data: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in data]


def everything_written(tmp_path: Path) -> bytes:
    """Every file of the run's record: the --trace file and the history (database and traces)."""
    home = Path(clean_env(tmp_path)["RLM_HOME"])
    files = [tmp_path / "trace.jsonl", *(p for p in home.rglob("*") if p.is_file())]
    assert (tmp_path / "trace.jsonl").is_file() and len(files) > 2, files
    return b"".join(p.read_bytes() for p in files)


GREP_CELL = (
    "found = {name: len(grep(re.escape(s))) for name, s in SECRETS.items()}\n"
    "print('found:', sorted(found.items()), 'placeholders:', len(grep(r'\\[REDACTED')))"
)


def _cell(code: str) -> str:
    """A cell that knows the planted secrets without spelling them (the cell's code is in the
    requests and the trace too): base64, decoded in the sandbox."""
    secrets = {"aws": AWS_KEY, "github": GITHUB_TOKEN, **{f"key{i}": s for i, s in enumerate(KEY_LINES)}}
    encoded = {name: base64.b64encode(s.encode()).decode() for name, s in secrets.items()}
    decode = f"{{k: base64.b64decode(v).decode() for k, v in {encoded!r}.items()}}"
    return f"import base64, re\nSECRETS = {decode}\n{code}"


def test_secrets_are_reported_by_path_and_line_and_never_shown(fake_llm, run_cli, tmp_path):
    tree = plant(tmp_path)
    fake_llm.add_root(reply("", "FINAL('checked')"))
    proc = run_cli(ask_args(fake_llm, "tree", extra=["--trace", str(tmp_path / "trace.jsonl")]))
    assert proc.returncode == 0, proc.stderr.decode()
    err = proc.stderr.decode()
    assert "3 possible secrets in the input" in err
    assert "1 aws-access-key" in err and "1 github-token" in err and "1 private-key" in err
    for where in ("tree/deploy/id_rsa:1", "tree/settings.py:3", "tree/ci.yml:4"):
        assert where in err
    assert "--redact-secrets" in err
    assert leaks(proc.stdout + proc.stderr) == []
    # The model saw the input as it is (the first 500 characters are in its first prompt, which the
    # trace keeps): every other event of the record, the warning included, names where, never what.
    events = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert leaks(json.dumps([e for e in events if e["event"] != "ModelCall"]).encode()) == []
    assert any(e["event"] == "Notice" and "tree/settings.py:3" in e["message"] for e in events)
    home = Path(clean_env(tmp_path)["RLM_HOME"])
    assert leaks(b"".join(p.read_bytes() for p in home.glob("history.sqlite3*"))) == []
    assert tree.joinpath("settings.py").read_text().count(AWS_KEY) == 1  # the input is left alone


def test_redacted_secrets_are_not_in_the_sandbox_nor_anywhere_else(fake_llm, run_cli, tmp_path):
    plant(tmp_path)
    fake_llm.add_root(
        reply("Looking for the planted secrets.", _cell(GREP_CELL)),
        reply("", "m = cite('tree/settings.py', 3)\nFINAL(f'The key is configured in settings.py {m}.')"),
    )
    args = ask_args(fake_llm, "tree", extra=["--redact-secrets", "--trace", str(tmp_path / "trace.jsonl")])
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr.decode()
    second = json.dumps(fake_llm.root_requests[1]["body"]["messages"][-1])
    assert "found: [('aws', 0), ('github', 0), ('key0', 0), ('key1', 0)" in second, second
    assert all(f"('key{i}', 0)" in second for i in range(len(KEY_LINES)))
    assert "placeholders: 8" in second  # the AWS key, the token and the key's six body lines
    err = proc.stderr.decode()
    assert "3 possible secrets redacted before the sandbox" in err
    assert "tree/settings.py:3" in err and "tree/ci.yml:4" in err and "tree/deploy/id_rsa:1" in err
    out = proc.stdout.decode()
    assert "[1] tree/settings.py:3 (secrets redacted)" in out
    assert 'AWS_ACCESS_KEY_ID = "[REDACTED]**********"' in out  # the cited line, as the sandbox had it
    assert leaks(proc.stdout + proc.stderr) == []
    assert leaks(everything_written(tmp_path)) == []
    assert leaks(b"".join(r["raw"] for r in fake_llm.requests)) == []  # nor any model request


def test_a_named_file_with_a_secret_is_redacted_in_a_copy(fake_llm, run_cli, tmp_path):
    tree = plant(tmp_path)
    named = tree / "ci.yml"
    before = named.read_bytes()
    fake_llm.add_root(
        reply("", _cell(GREP_CELL + "\nprint('length:', len(context))")),
        reply("", "FINAL('done')"),
    )
    proc = run_cli(ask_args(fake_llm, str(named), extra=["--redact-secrets"]))
    assert proc.returncode == 0, proc.stderr.decode()
    second = json.dumps(fake_llm.root_requests[1]["body"]["messages"][-1])
    assert "('github', 0)" in second and "placeholders: 1" in second
    assert f"length: {len(before.decode())}" in second  # same length: offsets stay right
    assert named.read_bytes() == before  # the user's file is never touched
    assert f"{named}:4" in proc.stderr.decode()
    assert leaks(b"".join(r["raw"] for r in fake_llm.requests)) == []


# -- the scanner on its own --------------------------------------------------------------------


def scan(data: bytes, redact: bool = True, step: int | None = None) -> tuple[bytes, Scanner]:
    scanner = Scanner(redact=redact)
    scanner.start("f")
    step = step or len(data) or 1
    out = b"".join(scanner.feed(data[i : i + step]) for i in range(0, len(data), step)) + scanner.finish()
    return out, scanner


def test_redaction_keeps_every_length_and_line_whatever_the_chunking():
    text = ("intro\n" + PRIVATE_KEY + f"x = '{AWS_KEY}'\nurl = https://user:pässwörd@example.com/\n").encode()
    whole, scanner = scan(text)
    assert [(f.line, f.rule) for f in scanner.findings] == [(2, "private-key"), (10, "aws-access-key"),
                                                           (11, "basic-auth")]  # fmt: skip
    assert len(whole.decode()) == len(text.decode())  # characters, not bytes: the offsets are in characters
    assert whole.count(b"\n") == text.count(b"\n")
    assert scanner.redacted_lines == [(3, 8), (10, 11)]  # line ranges, adjacent ones merged
    assert b"BEGIN RSA PRIVATE KEY" in whole and b"END RSA PRIVATE KEY" in whole  # visible: a key was here
    assert leaks(whole) == [] and "pässwörd".encode() not in whole
    for step in (1, 7, 64, 4096):
        assert scan(text, step=step)[0] == whole


def test_an_inline_key_in_json_is_redacted_and_a_mention_of_one_is_not():
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
    text = (
        f'{{"private_key": "-----BEGIN PRIVATE KEY-----\\n{body}\\n-----END PRIVATE KEY-----\\n"}}\n'
        'if "BEGIN RSA PRIVATE KEY" in text:\n    return parse(text)\n'
    ).encode()
    out, scanner = scan(text)
    assert body.encode() not in out and b"-----END PRIVATE KEY-----" in out
    assert b"    return parse(text)\n" in out  # code after a mere mention stays as it was
    assert [f.line for f in scanner.findings] == [1, 2]


def test_without_redaction_the_bytes_pass_unchanged_and_clean_text_finds_nothing():
    text = PRIVATE_KEY.encode() + b"ok\n"
    assert scan(text, redact=False)[0] == text
    out, scanner = scan(b"2024-01-01 INFO started\n" * 1000)
    assert scanner.count == 0 and out == b"2024-01-01 INFO started\n" * 1000


def test_a_secret_on_a_line_longer_than_the_buffer_is_still_found():
    text = b"a " * 700_000 + AWS_KEY.encode() + b" " + b"b " * 700_000
    out, scanner = scan(text, step=1 << 20)
    assert scanner.count == 1 and AWS_KEY.encode() not in out and len(out) == len(text)


@pytest.mark.parametrize("chars", [3, 10, 20, 40])
def test_placeholders_have_the_secrets_length(chars: int):
    assert len(placeholder("aws-access-key", chars)) == chars
