"""Settings precedence: flags > RLM_* environment > config file > defaults."""

from __future__ import annotations

import json
import math
import os
import re

import pytest
from conftest import MODEL, SENTINEL_KEY, ask_args
from typer.testing import CliRunner

from rlmcli.cli.app import app
from rlmcli.errors import InputError, UsageError
from rlmcli.record.history import History
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


def test_sizes_are_checked():
    with pytest.raises(UsageError, match="--memory must be more than 0 bytes"):
        resolve({"memory": "0"}, config={})
    with pytest.raises(InputError, match="invalid size"):
        resolve({"max_file_size": "lots"}, config={})


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
    assert said in result.stderr and result.stdout == ""
    assert fake_llm.requests == [] and History().recent() == []
