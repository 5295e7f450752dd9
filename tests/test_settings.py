"""Settings precedence: flags > RLM_* environment > config file > defaults."""

from __future__ import annotations

import json

import pytest
from conftest import MODEL, ask_args

from rlmcli.errors import UsageError
from rlmcli.settings import Settings, load_config, resolve


def test_defaults():
    s = resolve({}, config={})
    assert s == Settings()
    assert s.effective_sub_model == "openai/gpt-5-mini" and s.effective_sub_api_base is None


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
