"""`rlm bench run`: answer every task row with one or more methods and append a scored result row each.

Methods (the columns of the RLM paper's Table 1 that this tool can run):
- `rlm`: the full loop, `rlmcli.run.ask` on the row's context, with `llm_query` sub-calls;
- `rlm-no-subcalls`: the paper's ablation, the same REPL without `llm_query`;
- `rlm-d0` ... `rlm-d3`: the paper's depth study (v3, Table 1): d0 is `rlm-no-subcalls`, d1 is
  `rlm`, d2 and d3 let `rlm_query` start child RLMs (--max-depth 2 and 3), so a user sees whether
  depth helps their model;
- `direct`: the paper's base model, one completion holding the whole context and the question. A
  context over the model's input window is cut to fit, and the result row says so and by how much.

Results are appended to RESULTS one JSON line per (row, method), flushed as each finishes, so Ctrl-C
or a crash loses at most the rows in flight; a rerun skips every (row id, method, model) already there.
Every run leaves a JSONL trace in RESULTS.traces/ (the `rlm ask --trace` format; `direct` too).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__
from .. import events as ev
from ..budget import Budget
from ..errors import ExitReason, RlmError
from ..settings import Settings
from . import CHARS_PER_TOKEN, estimate_tokens, score
from .citations import citation_fields
from .parallel import run_parallel
from .report import is_error, read_results, result_key

METHODS = ("rlm", "rlm-no-subcalls", "direct", "rlm-d0", "rlm-d1", "rlm-d2", "rlm-d3")
SUBCALL_METHODS = ("rlm", "rlm-d1", "rlm-d2", "rlm-d3")  # those that call the sub model
FALLBACK_WINDOW = 128_000  # input tokens assumed for a model litellm has no window for
# Tokens kept free in a `direct` prompt beyond the question: chat template, truncation note, and
# slack for the chars/4 estimate, which undercounts some texts.
DIRECT_RESERVE_TOKENS = 512
DIRECT_SYSTEM = (
    "You are a helpful assistant. The user gives you a long context followed by a question about it. "
    "Answer the question from the context."
)
TRUNCATION_NOTE = "[... the rest of the context ({chars:,} characters) was cut to fit the model's window ...]"


def method_settings(settings: Settings, method: str) -> Settings:
    """The settings an rlm method runs with: sub-calls off (rlm-no-subcalls, rlm-d0), or the
    depth of recursion a depth method names (rlm-d2: --max-depth 2)."""
    if method in ("rlm-no-subcalls", "rlm-d0"):
        return replace(settings, no_subcalls=True, max_depth=1)
    if method.startswith("rlm-d"):
        return replace(settings, max_depth=int(method.removeprefix("rlm-d")))
    return settings


@dataclass
class BenchOptions:
    methods: list[str]
    out: Path  # RESULTS.jsonl
    concurrency: int = 1  # rows in flight at once
    window: int | None = None  # `direct`: the model's input window in tokens (None: litellm's, or fallback)
    retry_errors: bool = False  # redo rows whose earlier result is an error (provider, sandbox, ...)


@dataclass
class Outcome:
    ran: list[dict[str, Any]]  # result rows written by this invocation
    skipped: int  # (row, method) pairs already in RESULTS
    results: list[dict[str, Any]]  # every result row in RESULTS for this invocation's jobs, newest wins


# -- the run -------------------------------------------------------------------------------------


def preflight(settings: Settings, methods: list[str]) -> None:
    """Failures that would hit every row alike (a missing key, an unknown provider, no Docker
    daemon for --sandbox docker) stop the bench once, before anything runs (exit 4 / 2 / 5),
    rather than filling RESULTS with identical error rows."""
    from ..run import make_client

    make_client(settings, Budget()).check_credentials()
    if settings.sandbox == "docker" and any(m != "direct" for m in methods):
        from ..repl.docker import require

        require()


def run_bench(
    rows: list[dict[str, Any]],
    settings: Settings,
    options: BenchOptions,
    on_result: Callable[[dict[str, Any], int, int], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> Outcome:
    """Run every (row, method) not yet in RESULTS; `on_result(result, done, total)` after each."""
    preflight(settings, options.methods)
    window = _window(settings.model, options.window) if "direct" in options.methods else None

    previous = read_results(options.out)
    done = {result_key(r): r for r in previous}
    jobs, skipped = [], 0
    for row in rows:
        for method in options.methods:
            key = (str(row["id"]), method, settings.model)
            if key in done and not (options.retry_errors and is_error(done[key])):
                skipped += 1
            else:
                jobs.append((row, method))

    options.out.parent.mkdir(parents=True, exist_ok=True)
    trace_dir = options.out.with_name(options.out.stem + ".traces")
    warned: set[str] = set()
    lock = threading.Lock()

    def warn_once(text: str) -> None:  # e.g. "no Docker daemon": one line per bench, not per row
        with lock:
            if text in warned or say is None:
                return
            warned.add(text)
        say(text)

    ran: list[dict[str, Any]] = []
    with options.out.open("a", encoding="utf-8") as out:
        if not _ends_with_newline(options.out):
            out.write("\n")  # a line cut by a kill: start ours on a fresh line

        def record(result: dict[str, Any]) -> None:
            out.write(json.dumps(result, ensure_ascii=False, sort_keys=True) + "\n")
            out.flush()
            ran.append(result)
            if on_result is not None:
                on_result(result, len(ran), len(jobs))

        def work(job: tuple[dict[str, Any], str]) -> dict[str, Any]:
            row, method = job
            return run_one(row, method, settings, trace_dir, options.out.parent, window, warn_once)

        if options.concurrency <= 1 or len(jobs) <= 1:
            # On the main thread Ctrl-C reaches run.ask itself, which stops the sandbox cleanly.
            for job in jobs:
                record(work(job))
        else:
            run_parallel(jobs, options.concurrency, work, record)

    wanted = {(str(r["id"]), m, settings.model) for r in rows for m in options.methods}
    latest = {result_key(r): r for r in [*previous, *ran]}
    return Outcome(ran, skipped, [r for k, r in latest.items() if k in wanted])


def run_one(
    row: dict[str, Any],
    method: str,
    settings: Settings,
    trace_dir: Path,
    base_dir: Path,
    window: int | None,
    warn: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """One (row, method): run it, score it, and describe it as a result row. Never raises for a
    failure of this row alone (that is an error row); KeyboardInterrupt stops the bench."""
    from ..record.trace import TraceWriter

    safe_id = re.sub(r"[^\w.-]", "_", str(row["id"]))
    trace = trace_dir / f"{safe_id}.{method}.jsonl"
    trace.unlink(missing_ok=True)  # a rerun of a row cut short: start its trace afresh
    writer = TraceWriter(trace, on_error=warn)

    def emit(event: Any) -> None:
        writer(event)
        if isinstance(event, ev.Notice) and event.warning:
            warn(event.message)

    started, wall = time.time(), time.monotonic()
    fields: dict[str, Any] = {"answer": None, "exit_reason": "", "partial": False, "error": None}
    try:
        if method == "direct":
            fields.update(run_direct(row, settings, window or FALLBACK_WINDOW, emit))
        else:
            fields.update(_run_rlm(row, method_settings(settings, method), emit))
    except RlmError as exc:
        fields.update(exit_reason=exc.reason.value, error=str(exc))
    except Exception as exc:  # a bug in one row must not sink a bench of hundreds; it is recorded
        fields.update(exit_reason=ExitReason.ERROR.value, error=f"unexpected {type(exc).__name__}: {exc}")
    finally:
        writer.close()
    latency = time.monotonic() - wall
    if fields["exit_reason"] == ExitReason.INTERRUPTED:
        raise KeyboardInterrupt  # not a result: the row is redone on resume
    try:
        value = score(row, fields["answer"] or "")
    except Exception as exc:  # a scorer tripping over odd output scores 0 and says why
        value = 0.0
        fields["error"] = fields["error"] or f"scorer failed: {type(exc).__name__}: {exc}"
    return {
        "id": row["id"],
        "task": row.get("task"),
        "index": row.get("index"),
        "seed": row.get("seed"),
        "length": row.get("length"),
        "context_tokens": row.get("context_tokens", estimate_tokens(str(row.get("context", "")))),
        "method": method,
        "model": settings.model,
        "sub_model": settings.effective_sub_model if method in SUBCALL_METHODS else None,
        "score": value,
        "iterations": 0,
        "subcalls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
        "cost_known": True,
        "truncated": False,
        "truncated_chars": 0,
        **fields,
        "latency_s": round(latency, 3),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "trace": _relative(trace, base_dir),
        "rlm_version": __version__,
    }


def _run_rlm(row: dict[str, Any], settings: Settings, emit: ev.Emit) -> dict[str, Any]:
    from ..run import ask

    workdir = Path(tempfile.mkdtemp(prefix="rlm-bench-"))
    try:
        # A neutral file name: the row id would tell the model the task family and length.
        path = workdir / "context.txt"
        with path.open("w", encoding="utf-8", newline="") as f:
            f.write(str(row["context"]))
        report = ask(settings, [str(path)], str(row["question"]), emit)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result, usage = report.result, report.budget.usage
    return {
        "answer": result.answer,
        "exit_reason": result.exit_reason.value,
        "partial": result.partial,
        "error": result.message if result.exit_reason.is_error else None,
        "iterations": result.iterations,
        "subcalls": usage.subcalls,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cost_usd": usage.cost_usd,
        "cost_known": usage.cost_known,
        **citation_fields(row, result.evidence),  # cited / verified / precision / recall (citations.py)
    }


# -- direct: the base model ----------------------------------------------------------------------


def _window(model: str, override: int | None) -> int:
    """The model's input window in tokens: --context-window, else litellm's table, else 128k."""
    if override is not None:
        return override
    from ..model.client import load_litellm

    try:
        # Not `max_tokens`: in litellm's table that is usually the output limit.
        window = load_litellm().get_model_info(model=model).get("max_input_tokens")
    except Exception:  # not in litellm's table: a model on some server
        window = None
    return int(window) if window else FALLBACK_WINDOW


def direct_messages(row: dict[str, Any], window: int) -> tuple[list[dict[str, str]], int]:
    """The base model's prompt: the context (cut to fit `window` tokens, chars ≈ 4 × tokens) and then
    the question. Returns the messages and how many context characters were cut."""
    context, question = str(row["context"]), str(row["question"])
    overhead = estimate_tokens(DIRECT_SYSTEM) + estimate_tokens(question) + DIRECT_RESERVE_TOKENS
    room = max(0, window - overhead) * CHARS_PER_TOKEN
    cut = max(0, len(context) - room)
    if cut:
        context = context[:room] + "\n" + TRUNCATION_NOTE.format(chars=cut)
    messages = [
        {"role": "system", "content": DIRECT_SYSTEM},
        {"role": "user", "content": f"{context}\n\n{question}"},
    ]
    return messages, cut


def run_direct(row: dict[str, Any], settings: Settings, window: int, emit: ev.Emit) -> dict[str, Any]:
    """One completion, traced like a one-iteration run so `rlm replay` can show it."""
    from ..run import make_client

    question = str(row["question"])
    run = ev.RunStarted(
        question, settings.model, settings.model, "none", inputs=[str(row["id"])], version=__version__,
        id=ev.new_run_id(),
    )  # fmt: skip
    emit(run)
    budget = Budget(settings.limits())  # one root call: only cost, tokens and time can stop it
    client = make_client(settings, budget)
    messages, cut = direct_messages(row, window)
    context_chars = len(str(row["context"]))
    if cut:
        what = f"context cut to a {window:,}-token window: {cut:,} of {context_chars:,} characters dropped"
        emit(ev.Notice(what, parent=run.id))
    # The trace never holds the context itself (as for `rlm ask`), only its size.
    shown = f"[context: {context_chars - cut:,} characters]\n\n{question}"

    def finish(reason: ExitReason, answer: str | None) -> None:
        u = budget.usage
        emit(ev.RunFinished(reason.value, answer, False, 1, 0, u.prompt_tokens, u.completion_tokens,
                            u.cost_usd, u.cost_known, time.time() - run.ts, parent=run.id))  # fmt: skip

    try:
        completion = asyncio.run(_complete(client, messages))
    except RlmError as exc:
        emit(ev.RunStopped(exc.reason.value, str(exc), exc.hint, parent=run.id))
        finish(exc.reason, None)
        raise
    c = completion
    emit(ev.ModelCall("root", c.model, c.prompt_tokens, c.completion_tokens, c.cost_usd, c.latency_s,
                      ev.cap(shown), ev.cap(c.text), parent=run.id))  # fmt: skip
    emit(ev.FinalAnswer(completion.text, parent=run.id))
    finish(ExitReason.FINAL, completion.text)
    usage = budget.usage
    return {
        "answer": completion.text,
        "exit_reason": ExitReason.FINAL.value,
        "iterations": 1,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cost_usd": usage.cost_usd,
        "cost_known": usage.cost_known,
        "truncated": bool(cut),
        "truncated_chars": cut,
        "window_tokens": window,
    }


async def _complete(client: Any, messages: list[dict[str, str]]) -> Any:
    try:
        return await client.root(messages)
    finally:
        await client.aclose()


def _ends_with_newline(path: Path) -> bool:
    """True for an empty file or one whose last byte is a newline."""
    with path.open("rb") as f:
        if f.seek(0, 2) == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _relative(path: Path, base: Path) -> str:
    """Trace paths are stored relative to the RESULTS file, so results and traces move together."""
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
