"""`rlm bench` through the installed console script (the wheel as shipped, not the source tree)."""

from __future__ import annotations

import json

import pytest


def test_bench_list_and_deterministic_generate(run_rlm, shared_data, tmp_path):
    listed = run_rlm(["bench", "list"])
    assert listed.returncode == 0, listed.stderr.decode()
    for family in ("sniah", "oolong", "oolong-pairs", "needle-threading", "logs", "codeqa"):
        assert family.encode() in listed.stdout
    env = {"RLM_DATA_DIR": str(shared_data)}
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        args = [
            "bench",
            "generate",
            "oolong",
            "--n",
            "2",
            "--length",
            "4096",
            "--seed",
            "7",
            "--out",
            str(tmp_path / name),
        ]
        proc = run_rlm(args, env=env)
        assert proc.returncode == 0, proc.stderr.decode()
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    rows = [json.loads(line) for line in outputs[0].splitlines()]
    assert len(rows) == 2 and all(r["task"] == "oolong" and r["answer"] for r in rows)


def test_bench_generate_without_data_is_one_clear_error(run_rlm, tmp_path):
    proc = run_rlm(
        ["bench", "generate", "oolong", "--n", "1", "--out", str(tmp_path / "x.jsonl")],
        env={"RLM_DATA_DIR": str(tmp_path / "nowhere")},
    )
    assert proc.returncode == 2
    assert b"rlm: error:" in proc.stderr and b"Traceback" not in proc.stderr


def test_bench_generate_paper_profile_through_the_console_script(run_rlm, shared_data, tmp_path):
    if not (shared_data / "oolong" / "trec_coarse_validated.jsonl").is_file():
        pytest.skip("OOLONG's validated subset is not in ../shared/data/oolong")
    args = [
        "bench",
        "generate",
        "oolong",
        "--profile",
        "paper",
        "--length",
        "32768",
        "--n",
        "1",
        "--out",
        "-",
    ]
    proc = run_rlm(args, env={"RLM_DATA_DIR": str(shared_data)})
    assert proc.returncode == 0, proc.stderr.decode()
    (row,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert row["profile"] == "paper" and row["context"].count("\nDate: ") == 787  # OOLONG's 32K window
    assert row["question"].startswith("The following lines contain thousands of general-knowledge questions")
