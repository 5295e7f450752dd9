"""Settings precedence: flags > RLM_* environment > config file > defaults."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import MODEL, SENTINEL_KEY, ask_args
from typer.testing import CliRunner

from rlmcli.cli.app import app
from rlmcli.errors import UsageError
from rlmcli.record.history import History
from rlmcli.repl.backends import docker_options, sandbox_limits
from rlmcli.repl.docker import DockerOptions
from rlmcli.settings import Settings, load_config, resolve


def test_defaults():
    s = resolve({}, config={})
    assert s == Settings()
    assert s.effective_sub_model == "openai/gpt-5-mini"


def test_config_fills_what_flags_leave_unset(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('model = "openai/from-config"\nsub-model = "openai/cheap"\nmax-cost = 0.5\n')
    config = load_config(path)
    s = resolve({"model": "openai/from-flag", "max_cost": None, "include": []}, config=config)
    assert (s.model, s.sub_model, s.max_cost) == ("openai/from-flag", "openai/cheap", 0.5)


def test_unknown_config_key_is_a_usage_error(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("modle = 'typo'\n")
    with pytest.raises(UsageError, match="modle"):
        load_config(path)


def test_env_beats_config_and_flag_beats_env(fake_llm, run_rlm, tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    config = tmp_path / "rlm.toml"
    config.write_text('max-iterations = 1\nmodel = "openai/unused-config-model"\n')
    env = {"RLM_CONFIG": str(config), "RLM_MAX_ITERATIONS": "2"}
    fake_llm.add_root(*["no answer"] * 10)
    args = ["ask", str(tmp_path / "a.txt"), "q", "--api-base", fake_llm.url, "--sandbox", "local", "--json"]
    # Config says 1 iteration, the environment 2: the environment wins (2 turns + the last call).
    proc = run_rlm(args + ["-m", MODEL], env=env)
    assert json.loads(proc.stdout)["iterations"] == 2 and len(fake_llm.root_requests) == 3
    # The flag beats both.
    proc = run_rlm(args + ["-m", MODEL, "--max-iterations", "3"], env=env)
    assert json.loads(proc.stdout)["iterations"] == 3
    # The model comes from the config file when neither flag nor environment sets it.
    proc = run_rlm(args, env=env)
    assert json.loads(proc.stdout)["model"] == "openai/unused-config-model"
    assert fake_llm.root_requests[-1]["body"]["model"] == "unused-config-model"


def test_bad_sandbox_value_is_a_usage_error(fake_llm, run_rlm, tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    proc = run_rlm(ask_args(fake_llm, str(tmp_path / "a.txt"))[:-2] + ["--sandbox", "vm"])
    assert proc.returncode == 2 and b"unknown sandbox" in proc.stderr


# -- every value checked before any input is read --------------------------------------------------

# (setting, a value out of range, what the error says)
BAD_NUMBERS = [
    ("cell_timeout", 0.0, "--cell-timeout must be a number > 0"),  # would turn the host's backstop off
    ("cell_timeout", -1.0, "--cell-timeout must be a number > 0"),  # would kill every cell
    ("cell_timeout", math.inf, "--cell-timeout must be a number > 0"),
    ("timeout", -5.0, "--timeout must be a number > 0"),
    ("timeout", math.nan, "--timeout must be a number > 0"),
    ("request_timeout", 0.0, "--request-timeout must be a number > 0"),
    ("max_cost", math.nan, "--max-cost must be a number >= 0"),  # every comparison would be false
    ("max_cost", math.inf, "--max-cost must be a number >= 0"),
    ("max_cost", -0.01, "--max-cost must be a number >= 0"),
    ("max_tokens", 0, "--max-tokens must be a whole number >= 1"),
    ("max_tokens", -100, "--max-tokens must be a whole number >= 1"),
    ("max_subcalls", -1, "--max-subcalls must be a whole number >= 0"),
    ("max_retries", -1, "--max-retries must be a whole number >= 0"),
    ("cpus", 0.0, "--cpus must be a number > 0"),
    ("cpus", -2.0, "--cpus must be a number > 0"),
    ("pids_limit", 0, "--pids-limit must be a whole number >= 1"),
    ("concurrency", 0, "--concurrency must be a whole number >= 1"),
    ("max_iterations", 0, "--max-iterations must be a whole number >= 1"),
    ("max_output_chars", -5, "--max-output-chars must be a whole number >= 1"),
]


@pytest.mark.parametrize("name,value,message", BAD_NUMBERS, ids=[f"{n}={v}" for n, v, _ in BAD_NUMBERS])
def test_a_number_out_of_range_is_a_usage_error(name, value, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve({name: value}, config={})


GOOD_NUMBERS = [
    ("max_cost", 0.0),
    ("max_subcalls", 0),
    ("max_retries", 0),
    ("cell_timeout", 0.5),
    ("cpus", 0.25),
]


@pytest.mark.parametrize("name,value", GOOD_NUMBERS)
def test_the_smallest_sensible_values_are_accepted(name, value):
    assert getattr(resolve({name: value}, config={}), name) == value


# (setting, a bad size, what the error says)
BAD_SIZES = [
    ("memory", "0", "--memory must be more than 0 bytes"),
    ("memory", "1x", "--memory must be a size such as 512m or 2g"),
    ("max_file_size", "lots", "--max-file-size must be a size such as 512m or 2g"),
]


@pytest.mark.parametrize("name,value,message", BAD_SIZES, ids=[f"{n}={v}" for n, v, _ in BAD_SIZES])
def test_a_bad_size_is_a_usage_error_naming_its_flag(name, value, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve({name: value}, config={})


def test_sizes_are_parsed_once_to_bytes_and_keep_their_text(tmp_path):
    s = resolve({"memory": "512m"}, config={})
    assert (s.memory, s.memory_bytes, s.max_file_size_bytes) == ("512m", 512 * 2**20, 10 * 2**20)
    path = tmp_path / "config.toml"
    path.write_text('memory = "2g"\nmax-file-size = 4096\n')  # a whole number in TOML: bytes
    s = resolve({}, config=load_config(path))
    assert (s.memory_bytes, s.max_file_size_bytes) == (2 * 2**30, 4096)
    assert s.load_options().max_file_size == 4096
    assert replace(s, no_subcalls=True).memory_bytes == 2 * 2**30  # a copy is parsed again
    path.write_text('memory = "1x"\n')
    with pytest.raises(UsageError, match=re.escape(f"memory in {path} must be a size such as 512m or 2g")):
        load_config(path)


def test_derived_configs_come_from_the_settings():
    s = resolve(
        {"max_iterations": 3, "max_subcalls": 7, "max_cost": 0.5, "timeout": 9.0, "pids_limit": 40,
         "include": ["*.py"], "hidden": True, "memory": "256m", "image": "img:1", "cpus": 2.0},
        config={},
    )  # fmt: skip
    limits = s.limits()
    assert (limits.max_iterations, limits.max_subcalls, limits.max_cost, limits.timeout) == (3, 7, 0.5, 9.0)
    options = s.load_options()
    assert (options.include, options.hidden, options.max_file_size) == (["*.py"], True, 10 * 2**20)
    assert sandbox_limits(s).memory == 256 * 2**20 and sandbox_limits(s).pids == 40
    assert docker_options(s) == DockerOptions("img:1", 2.0, 40)


# (config line, what the error says besides the key and the file)
BAD_CONFIG = [
    ('max-iterations = "ten"', "must be a whole number"),
    ('include = "*.log"', "must be a list of strings"),
    ("include = [1, 2]", "must be a list of strings"),
    ('max-cost = "0.5"', "must be a number"),
    ("concurrency = 2.5", "must be a whole number"),
    ("concurrency = true", "must be a whole number"),
    ("hidden = 1", "must be true or false"),
    ("model = 5", "must be a string"),
    ("cell-timeout = 0", "must be a number > 0"),
    ("max-cost = nan", "must be a number >= 0"),
]


@pytest.mark.parametrize("line,message", BAD_CONFIG, ids=[line for line, _ in BAD_CONFIG])
def test_a_config_value_of_the_wrong_type_names_the_key_and_the_file(tmp_path, line, message):
    path = tmp_path / "config.toml"
    path.write_text(line + "\n")
    key = line.split(" =")[0]
    with pytest.raises(UsageError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{key} in {path} {message}")


def test_config_values_of_the_right_type(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('max-cost = 1\ninclude = ["*.log"]\nallow-model = ["openai/gpt-4o"]\nhidden = true\n')
    config = load_config(path)
    assert config == {
        "max_cost": 1.0,
        "include": ["*.log"],
        "allow_models": ["openai/gpt-4o"],
        "hidden": True,
    }
    assert isinstance(config["max_cost"], float)


@pytest.mark.parametrize("source", ["flag", "config"])
def test_a_bad_setting_stops_the_run_before_anything_starts(fake_llm, tmp_path, monkeypatch, source):
    """End to end: exit 2 naming the setting, no request, no history row."""
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("RLM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RLM_HOME", str(tmp_path / "rlm-home"))  # History() below reads the same one
    (tmp_path / "in.txt").write_text("data\n")
    config = tmp_path / "config.toml"
    config.write_text("cell-timeout = 0\n" if source == "config" else "")
    fake_llm.add_root("FINAL(never)")
    args = [
        "ask",
        "in.txt",
        "q",
        "--model",
        MODEL,
        "--api-base",
        fake_llm.url,
        "--sandbox",
        "local",
        "--json",
    ]
    extra = ["--cell-timeout", "0"] if source == "flag" else []
    env = {"OPENAI_API_KEY": SENTINEL_KEY, "RLM_CONFIG": str(config), "RLM_HOME": str(tmp_path / "rlm-home")}
    result = CliRunner().invoke(app, [*args, *extra], env=env)
    assert result.exit_code == 2, result.output
    said = "--cell-timeout must be a number > 0" if source == "flag" else f"cell-timeout in {config} must be"
    assert said in result.stderr
    document = json.loads(result.stdout)  # --json: the failure as the one object on stdout
    assert document["exit_reason"] == "usage_error" and said in document["error"]
    assert fake_llm.requests == [] and History().recent() == []


# -- end to end, in-process: what a setting does to the record ----------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A clean environment for CliRunner runs: no RLM_* variables, a private history (RLM_HOME,
    read by History() here too) and an empty config file."""
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("RLM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RLM_HOME", str(tmp_path / "rlm-home"))
    monkeypatch.setenv("RLM_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL_KEY)
    (tmp_path / "in.txt").write_text("data\n")
    return tmp_path


def ask(fake_llm, *extra: str, path: str = "in.txt", env: dict | None = None):  # noqa: ANN201
    args = ["ask", path, "q", "--model", MODEL, "--api-base", fake_llm.url, "--json", *extra]
    return CliRunner().invoke(app, args, env=env)


def test_a_bad_memory_size_stops_before_the_input_is_read_and_leaves_no_record(fake_llm, home):
    fake_llm.add_root("FINAL(never)")
    trace = home / "trace.jsonl"
    # The input does not exist: had it been read first, that would be the error.
    result = ask(fake_llm, "--memory", "1x", "--trace", str(trace), "--sandbox", "local", path="missing.txt")
    assert result.exit_code == 2, result.output
    assert "--memory must be a size such as 512m or 2g, or auto, not '1x'" in result.stderr
    assert "missing.txt" not in result.stderr
    document = json.loads(result.stdout)  # --json: the failure as the one object on stdout
    assert document["exit_reason"] == "usage_error" and "--memory" in document["error"]
    assert "missing.txt" not in result.stdout
    assert History().recent() == [] and not trace.exists() and fake_llm.requests == []
    assert not (home / "rlm-home").exists() or not list((home / "rlm-home").rglob("*.jsonl"))


@pytest.mark.parametrize("where", ["config", "flag", "both"])
def test_no_log_works_from_the_config_file_and_the_flag(fake_llm, home, where):
    if where in ("config", "both"):
        (home / "config.toml").write_text("no-log = true\n")
    fake_llm.add_root("FINAL(x)")
    result = ask(fake_llm, "--sandbox", "local", *(["--no-log"] if where in ("flag", "both") else []))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["answer"] == "x"
    assert History().recent() == []


def test_a_run_is_logged_without_no_log(fake_llm, home):
    """The counterpart of the test above: the same run without no-log leaves its row."""
    (home / "config.toml").write_text("no-log = false\n")
    fake_llm.add_root("FINAL(x)")
    result = ask(fake_llm, "--sandbox", "local")
    assert result.exit_code == 0, result.output
    assert [r.id for r in History().recent()] == [json.loads(result.stdout)["run_id"]]


def test_the_history_records_the_sandbox_auto_chose(fake_llm, home):
    # No Docker daemon answers: `auto` falls back to bubblewrap, and the record says so.
    fake_llm.add_root("FINAL(x)")
    result = ask(fake_llm, env={"DOCKER_HOST": "unix:///nonexistent"})
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["sandbox"] == "local"
    assert History().get(run["run_id"]).sandbox == "local"
    logs = CliRunner().invoke(app, ["logs", "--json"])
    assert logs.exit_code == 0, logs.output
    assert [(r["id"], r["sandbox"]) for r in json.loads(logs.stdout)] == [(run["run_id"], "local")]
    trace = Path(History().get(run["run_id"]).trace_path)
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    started = next(e for e in events if e["event"] == "RunStarted")
    chosen = next(e for e in events if e["event"] == "SandboxChosen")
    assert (started["sandbox"], chosen["sandbox"], chosen["parent"]) == ("auto", "local", run["run_id"])
