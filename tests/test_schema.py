"""`--schema FILE|JSON`: the answer is a JSON document valid against a JSON Schema.

What a user sees: stdout holds the document alone (one line, it parses and validates); an invalid
answer gets one repair turn that quotes the validation errors (the fake model server sees it); one
still invalid ends the run with exit 6 and, under --json, the answer in `partial_answer`; a bad
schema is exit 2 before any request.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from conftest import ask_args
from fake_llm import reply

SCHEMA = {
    "type": "object",
    "properties": {
        "failed": {"type": "array", "items": {"type": "string"}},
        "count": {"type": "integer", "minimum": 0},
    },
    "required": ["failed", "count"],
    "additionalProperties": False,
}
BUILD = "result = {'failed': ['test_beta'], 'count': 1}\nprint(result)"  # a dict, as the prompt asks


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "build.log"
    path.write_text("PASS test_alpha\nFAIL test_beta\nPASS test_gamma\n" * 40)
    return path


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "failures.schema.json"
    path.write_text(json.dumps(SCHEMA))
    return path


def ask_schema(fake_llm, data: Path, schema: str, *extra: str) -> list[str]:
    return ask_args(fake_llm, str(data), question="Which tests failed?", extra=["--schema", schema, *extra])


def told(request: dict) -> str:
    """The newest user message of a root request: what the model was told before that reply."""
    return request["body"]["messages"][-1]["content"]


def system(request: dict) -> str:
    return request["body"]["messages"][0]["content"]


# ---------- a valid answer ----------


def test_a_valid_answer_is_printed_as_json_alone(fake_llm, run_cli, data, schema_file):
    fake_llm.add_root(reply("", BUILD), "FINAL_VAR(result)")
    proc = run_cli(ask_schema(fake_llm, data, str(schema_file)))
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1  # the document alone, on one line
    document = json.loads(lines[0])
    jsonschema.validate(document, SCHEMA)
    assert document == {"failed": ["test_beta"], "count": 1}
    # The model was told the schema, and how to answer with it.
    prompt = system(fake_llm.root_requests[0])
    assert '"additionalProperties": false' in prompt and "FINAL_VAR" in prompt
    assert "JSON Schema" in prompt


def test_inline_schema_and_a_json_fence_around_the_answer(fake_llm, run_cli, data):
    """FINAL with the JSON text works too; a ```json fence and whitespace around it are tolerated,
    and the printed document is normalised."""
    fenced = 'FINAL(\n```json\n{ "failed" : [ "test_beta" ],\n  "count": 1 }\n```\n)'
    fake_llm.add_root(reply("", "print(context.count('FAIL'))"), fenced)
    proc = run_cli(ask_schema(fake_llm, data, json.dumps(SCHEMA)))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b'{"failed": ["test_beta"], "count": 1}\n'


def test_json_output_holds_the_document_as_answer(fake_llm, run_cli, data, schema_file):
    fake_llm.add_root(reply("", BUILD + "\nFINAL_VAR(result)"))  # FINAL_VAR called in the cell
    proc = run_cli(ask_schema(fake_llm, data, str(schema_file), "--json"))
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["exit_reason"] == "final" and out["error"] is None
    assert json.loads(out["answer"]) == {"failed": ["test_beta"], "count": 1}


def test_schema_from_the_config(fake_llm, run_cli, data, schema_file, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f"schema = {json.dumps(str(schema_file))}\n")
    fake_llm.add_root(reply("", BUILD), "FINAL_VAR(result)")
    proc = run_cli(ask_args(fake_llm, str(data)), env={"RLM_CONFIG": str(config)})
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == {"failed": ["test_beta"], "count": 1}


def test_without_schema_the_prompt_says_nothing_of_it(fake_llm, run_cli, data):
    fake_llm.add_root(reply("", BUILD), "FINAL_VAR(result)")
    proc = run_cli(ask_args(fake_llm, str(data)))
    assert proc.returncode == 0, proc.stderr.decode()
    assert "JSON Schema" not in system(fake_llm.root_requests[0])
    # A dict given with FINAL_VAR comes back as JSON text, schema or not.
    assert json.loads(proc.stdout) == {"failed": ["test_beta"], "count": 1}


# ---------- an invalid answer: one repair turn ----------


def test_an_invalid_answer_is_repaired_in_one_turn(fake_llm, run_cli, data, schema_file):
    fake_llm.add_root(
        reply("", "bad = {'failed': 'test_beta', 'count': -1}\nprint(bad)"),
        "FINAL_VAR(bad)",
        reply("", BUILD),  # the repair turn: the model fixes it
        "FINAL_VAR(result)",
    )
    proc = run_cli(ask_schema(fake_llm, data, str(schema_file)))
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == {"failed": ["test_beta"], "count": 1}
    requests = fake_llm.root_requests
    assert len(requests) == 4
    repair = told(requests[2])  # what the model read before its repair reply
    assert "not valid against the JSON Schema" in repair
    assert "at $.count: -1 is less than the minimum of 0" in repair
    assert "at $.failed: 'test_beta' is not of type 'array'" in repair
    assert "only repair turn" in repair


def test_prose_instead_of_json_is_repaired(fake_llm, run_cli, data, schema_file):
    fake_llm.add_root(
        reply("", "print(context.count('FAIL'))"),
        "FINAL(40)",  # seen in the output: the protocol accepts it, the schema does not
        '```repl\nresult = {"failed": ["test_beta"], "count": 40}\n```\nFINAL_VAR(result)',
    )
    proc = run_cli(ask_schema(fake_llm, data, str(schema_file)))
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == {"failed": ["test_beta"], "count": 40}
    assert "at $: 40 is not of type 'object'" in told(fake_llm.root_requests[2])


def test_many_errors_are_capped_in_the_repair_message(fake_llm, run_cli, data):
    schema = {"type": "array", "items": {"type": "integer"}}
    fake_llm.add_root(
        reply("", "bad = [str(i) for i in range(12)]\nprint(len(bad))"),
        "FINAL_VAR(bad)",
        reply("", "good = list(range(12))\nprint(len(good))"),
        "FINAL_VAR(good)",
    )
    proc = run_cli(ask_schema(fake_llm, data, json.dumps(schema)))
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == list(range(12))
    repair = told(fake_llm.root_requests[2])
    assert repair.count("is not of type 'integer'") == 5 and "(and 7 more)" in repair


# ---------- never valid: exit 6 ----------


def never_valid(fake_llm) -> None:
    fake_llm.add_root(
        reply("", "bad = {'failed': 'test_beta', 'count': 1}\nprint(bad)"),
        "FINAL_VAR(bad)",
        "It is test_beta.\nFINAL(test_beta failed)",  # the repair turn: still not JSON
    )


def test_never_valid_is_exit_6(fake_llm, run_cli, data, schema_file):
    never_valid(fake_llm)
    proc = run_cli(ask_schema(fake_llm, data, str(schema_file)))
    assert proc.returncode == 6, proc.stderr.decode()
    assert len(fake_llm.root_requests) == 3  # one repair turn, no more
    assert proc.stdout == b"test_beta failed\n"  # the invalid answer, as a partial answer is
    err = proc.stderr.decode()
    assert "invalid answer: the answer failed validation against the schema file" in err
    assert "the answer is not JSON" in err


def test_never_valid_with_json_keeps_the_answer_in_partial_answer(fake_llm, run_cli, data, schema_file):
    never_valid(fake_llm)
    proc = run_cli(ask_schema(fake_llm, data, str(schema_file), "--json"))
    assert proc.returncode == 6, proc.stderr.decode()
    (line,) = proc.stdout.decode().splitlines()
    out = json.loads(line)
    assert out["exit_reason"] == "invalid_answer" and out["answer"] is None
    assert out["partial_answer"] == "test_beta failed"
    assert "the answer is not JSON" in out["error"] and out["message"] == out["error"]
    assert out["hint"]


def test_an_invalid_answer_on_the_last_turn_ends_the_run(fake_llm, run_cli, data, schema_file):
    """The turn for the answer after the last iteration leaves no room for a repair turn."""
    fake_llm.add_root(reply("", "print(1)"), 'FINAL({"failed": []})')
    proc = run_cli(ask_schema(fake_llm, data, str(schema_file), "--max-iterations", "1", "--json"))
    assert proc.returncode == 6, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["exit_reason"] == "invalid_answer" and out["partial_answer"] == '{"failed": []}'
    assert "'count' is a required property" in out["error"]
    assert len(fake_llm.root_requests) == 2


# ---------- a bad schema: exit 2 before any request ----------


@pytest.mark.parametrize(
    "schema, error",
    [
        ('{"type": "nonsense"}', "the inline --schema is not a valid JSON Schema: at $.type:"),
        ("{not json", "the inline --schema is not JSON"),
        ('{"$schema": "https://example.com/my-draft"}', "names an unknown $schema"),
        ("missing.schema.json", "cannot read the schema file missing.schema.json: No such file or directory"),
    ],
    ids=["not a schema", "not JSON", "unknown draft", "no such file"],
)
def test_a_bad_schema_is_exit_2_before_any_request(fake_llm, run_cli, data, schema, error):
    proc = run_cli(ask_schema(fake_llm, data, schema, "--json"))
    assert proc.returncode == 2, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["exit_reason"] == "usage_error" and error in out["error"]
    assert error in proc.stderr.decode()
    assert fake_llm.requests == []


def test_a_schema_file_that_is_not_json_is_exit_2(fake_llm, run_cli, data, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "object",}')
    proc = run_cli(ask_schema(fake_llm, data, str(bad)))
    assert proc.returncode == 2
    assert f"the schema file {bad} is not JSON" in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode() and fake_llm.requests == []
