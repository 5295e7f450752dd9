"""C2: a sub-call's `model=` cannot send a provider's key to a server the user did not pair it with.

Two fake servers: the one --api-base names, and a second one listening as "the other provider"
(ANTHROPIC_API_BASE / AZURE_API_BASE point at it). Each provider has its own sentinel key. A cell
naming a model the run was not configured with gets an error string and nothing is sent anywhere;
an --allow-model model is sent either to the configured endpoint (same provider as the sub model)
or to its own provider's endpoint, with its own key, never to --api-base.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import MODEL, SENTINEL_KEY
from fake_llm import FakeLLM, reply
from typer.testing import CliRunner

from rlmcli.cli.app import app
from rlmcli.model.providers import ModelConfig, ModelNotAllowed, Router
from rlmcli.settings import load_config, resolve

ANTHROPIC_SENTINEL = "sk-ant-SENTINEL2-5d1c0e9b7a3f2468"
AZURE_SENTINEL = "azure-SENTINEL3-0b9e8d7c6a5f4321"
OVERRIDES = ["anthropic/claude-3-5-sonnet-latest", "azure/gpt-4o", "o1-pro"]
NOT_ALLOWED = "[llm_query error: model {!r} is not allowed in this run"


@pytest.fixture
def other() -> FakeLLM:
    with FakeLLM() as server:
        yield server


@pytest.fixture
def ask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other: FakeLLM):
    """ask(fake, code, *extra) -> (exit code, --json object): one cell, then FINAL, in this process."""
    for name in [k for k in os.environ if k.startswith(("RLM_", "OPENAI", "ANTHROPIC", "AZURE", "LITELLM"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.txt").write_text("some input\n")
    env = {
        "OPENAI_API_KEY": SENTINEL_KEY,
        "ANTHROPIC_API_KEY": ANTHROPIC_SENTINEL,
        "ANTHROPIC_API_BASE": other.url,
        "ANTHROPIC_BASE_URL": other.url,
        "AZURE_API_KEY": AZURE_SENTINEL,
        "AZURE_API_BASE": other.url,
        "AZURE_API_VERSION": "2024-06-01",
        "RLM_CONFIG": str(tmp_path / "no-config.toml"),
        "RLM_HOME": str(tmp_path / "rlm-home"),
    }

    def run(fake: FakeLLM, code: str, *extra: str) -> tuple[int, dict]:
        fake.add_root(reply("Asking.", code), "FINAL(done)")
        args = ["ask", "input.txt", "q?", "--model", MODEL, "--api-base", fake.url, "--sandbox", "local"]
        result = CliRunner().invoke(app, [*args, "--json", "--max-retries", "0", *extra], env=env)
        return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])

    return run


def cell_output(fake: FakeLLM) -> str:
    """What the root model was shown of the cell: the last user message of the second root call."""
    return fake.root_requests[1]["body"]["messages"][-1]["content"]


def every_request(*fakes: FakeLLM) -> list[dict]:
    return [r for fake in fakes for r in (*fake.requests, *fake.stray)]


def test_unconfigured_models_are_refused_and_no_key_goes_anywhere(
    fake_llm: FakeLLM, other: FakeLLM, ask
) -> None:
    code = "\n".join(f"print({m!r}, '->', llm_query('hello', model={m!r}))" for m in OVERRIDES)
    code += "\nprint(llm_query_batched(['a', 'b'], model='azure/gpt-4o'))"
    status, result = ask(fake_llm, code)
    assert status == 0 and result["answer"] == "done"
    shown = cell_output(fake_llm)
    for model in OVERRIDES:
        assert NOT_ALLOWED.format(model) in shown
        assert "--allow-model" in shown
    assert shown.count(NOT_ALLOWED.format("azure/gpt-4o")) == 3  # once alone, twice in the batch
    assert result["subcalls"] == 0  # nothing was dispatched
    assert fake_llm.sub_requests == [] and fake_llm.stray == []
    assert every_request(other) == []  # the "other provider" heard nothing at all
    for request in every_request(fake_llm, other):
        for sentinel in (ANTHROPIC_SENTINEL, AZURE_SENTINEL):
            assert sentinel not in json.dumps(request["headers"]) and sentinel.encode() not in request["raw"]
    # The OpenAI key went where the user paired it (--api-base for the openai root model), nowhere else.
    for request in fake_llm.requests:
        assert [k for k, v in request["headers"].items() if SENTINEL_KEY in v] == ["authorization"]


def test_allowed_models_reach_only_their_own_endpoints(fake_llm: FakeLLM, other: FakeLLM, ask) -> None:
    code = (
        "print('A', llm_query('same provider', model='openai/gpt-4o'))\n"
        "print('B', llm_query('other provider', model='anthropic/claude-3-5-sonnet-latest'))"
    )
    extra = ["--allow-model", "openai/gpt-4o", "--allow-model", "anthropic/claude-3-5-sonnet-latest"]
    status, result = ask(fake_llm, code, *extra)
    assert status == 0
    shown = cell_output(fake_llm)
    # Same provider as the sub model: the sub-calls' API base (--api-base here), the OpenAI key.
    assert "A sub: same provider" in shown
    [sub] = fake_llm.sub_requests
    assert sub["body"]["model"] == "gpt-4o" and sub["headers"]["authorization"] == f"Bearer {SENTINEL_KEY}"
    # Another provider: its own endpoint (here ANTHROPIC_API_BASE: the second fake, which speaks
    # only OpenAI's protocol, so the call fails), with its own key, and --api-base never sees it.
    assert "B [llm_query error:" in shown
    [stray] = other.stray
    assert "/messages" in stray["path"] and stray["headers"]["x-api-key"] == ANTHROPIC_SENTINEL
    assert other.requests == [] and fake_llm.stray == []
    for request in every_request(fake_llm):
        assert ANTHROPIC_SENTINEL not in json.dumps(request["headers"])
    for request in every_request(other):
        assert SENTINEL_KEY not in json.dumps(request["headers"])


def router(sub_model: str = MODEL, sub_base: str | None = "http://sub.test/v1", allow=()) -> Router:
    root = ModelConfig("openai/gpt-4o-mini", api_base="http://root.test/v1")
    return Router(root, ModelConfig(sub_model, api_base=sub_base), allow_models=allow)


def test_which_endpoint_an_override_gets() -> None:
    c = router(allow=["openai/gpt-4o", "gpt-4.1", "anthropic/claude-3-5-sonnet-latest"])
    assert c.config_for(None).api_base == "http://sub.test/v1"
    assert c.config_for("openai/gpt-4o-mini").api_base == "http://sub.test/v1"  # the sub model itself
    assert c.config_for("openai/gpt-4o").api_base == "http://sub.test/v1"  # same provider
    assert c.config_for("gpt-4.1").api_base == "http://sub.test/v1"  # openai without the prefix
    assert c.config_for("anthropic/claude-3-5-sonnet-latest").api_base is None  # its own endpoint
    for model in [*OVERRIDES[1:], "openai/o1-pro", "", 5, ["openai/gpt-4o"]]:
        with pytest.raises(ModelNotAllowed, match="not allowed in this run"):
            c.config_for(model)
    # The root model keeps the root's endpoint, whatever the sub model is.
    other = router(sub_model="anthropic/claude-3-5-sonnet-latest", sub_base=None)
    assert other.config_for("openai/gpt-4o-mini").api_base == "http://root.test/v1"
    with pytest.raises(
        ModelNotAllowed, match="allowed: openai/gpt-4o-mini, anthropic/claude-3-5-sonnet-latest"
    ):
        other.config_for("x" * 1000)


def test_allow_models_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('allow-models = ["openai/gpt-4o"]\n')
    assert resolve({}, load_config(path)).allow_models == ["openai/gpt-4o"]
    assert resolve({"allow_models": ["a/b"]}, load_config(path)).allow_models == ["a/b"]  # flags win


def test_a_sub_model_of_another_provider_does_not_inherit_api_base(
    fake_llm: FakeLLM, other: FakeLLM, ask
) -> None:
    """--api-base was paired with the root model's provider: an Anthropic sub model (no
    --sub-api-base) goes to Anthropic's own endpoint with its key, never to --api-base."""
    status, result = ask(
        fake_llm, "print('S', llm_query('hi'))", "--sub-model", "anthropic/claude-3-5-sonnet-latest"
    )
    assert status == 0
    assert "S [llm_query error:" in cell_output(fake_llm)  # the second fake speaks only OpenAI's protocol
    [stray] = other.stray
    assert "/messages" in stray["path"] and stray["headers"]["x-api-key"] == ANTHROPIC_SENTINEL
    assert fake_llm.sub_requests == [] and fake_llm.stray == []
    for request in every_request(fake_llm):
        assert ANTHROPIC_SENTINEL not in json.dumps(request["headers"])
        assert ANTHROPIC_SENTINEL.encode() not in request["raw"]
