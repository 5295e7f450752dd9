"""`rlm ask`: parse the options, resolve the settings, run, and map the outcome to an exit status.

Registered by cli/app.py. Nothing heavy is imported at module level: `rlm --help` must not pay for
litellm; the run's modules are imported when the command runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Annotated

import typer

from ..errors import ExitReason, ExitStatus, RlmError, UsageError
from ..settings import DEFAULT_CONCURRENCY
from . import options as o
from .guard import guarded
from .options import INPUT, LIMITS, MODEL, OUTPUT, SANDBOX, D

EPILOG = (
    "Examples:\n\n"
    '  rlm ask repo/ "Where is auth enforced?"\n\n'
    '  journalctl -u api | rlm ask - "What changed before the crash?"\n\n'
    '  rlm ask logs/ "Did anything flaky fail?" --json\n\n'
    '  rlm ask build.log "Which tests failed?" --schema failures.schema.json\n\n'
    "Exit status: 0 answered, 1 unexpected error, 2 usage or input error, 3 a limit was reached "
    "(partial answer printed), 4 model provider error, 5 sandbox failure, 6 the answer failed validation "
    "(--schema, --cite require) after one repair turn, 130 interrupted."
)


@guarded
def ask(
    # Not Annotated: PATH... may be left out (with -c) while QUESTION after it stays required.
    paths: list[str] | None = typer.Argument(None, help="Files, directories, or - for stdin (none with -c).",
        metavar="PATH", show_default=False),
    question: str = typer.Argument(..., help="The question to answer.", metavar="QUESTION", show_default=False),
    continue_last: Annotated[bool, typer.Option("--continue-last", "-c", rich_help_panel=INPUT,
        help="A follow-up question: continue the last run, on the same inputs (give no PATH). Its conversation "
             "is carried over and its cells run again (their sub-calls from the cache), so its variables are "
             "there.")] = False,
    continue_run: Annotated[str | None, typer.Option("--continue", metavar="RUN_ID", rich_help_panel=INPUT,
        help="As -c, for the run RUN_ID (an id, a unique prefix, or `last`).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", rich_help_panel=INPUT,
        help="With -c/--continue: continue even though the inputs changed since that run (else: a fresh "
             "run).")] = False,
    no_cache: o.NoCache = False,
    cache_only: o.CacheOnly = False,
    model: o.Model = None,
    sub_model: o.SubModel = None,
    api_base: o.ApiBase = None,
    sub_api_base: o.SubApiBase = None,
    allow_model: Annotated[list[str] | None, typer.Option("--allow-model", metavar="MODEL", rich_help_panel=MODEL,
        help="Another model llm_query(..., model=MODEL) may use (repeatable); by default only --model and "
             "--sub-model. It gets --sub-api-base only if it has the sub model's provider.",
        show_default=False)] = None,
    concurrency: Annotated[int | None, typer.Option(envvar="RLM_CONCURRENCY", rich_help_panel=MODEL,
        help="Sub-calls in flight at once. \\[default: the slots a llama.cpp server at --api-base reports, "
             f"else {DEFAULT_CONCURRENCY}]")] = None,
    request_timeout: o.RequestTimeout = None,
    no_subcalls: Annotated[bool, typer.Option("--no-subcalls", rich_help_panel=MODEL,
        help="The REPL without llm_query (the paper's ablation): the root model works with code alone.")] = False,
    max_retries: o.MaxRetries = None,
    instructions: o.Instructions = None,
    cite: o.Cite = None,
    root_window: o.RootWindow = None,
    sub_window: o.SubWindow = None,
    max_reply_tokens: o.MaxReplyTokens = None,
    max_sub_reply_tokens: o.MaxSubReplyTokens = None,
    price: o.Price = None,
    max_iterations: o.MaxIterations = None,
    max_subcalls: Annotated[int | None, typer.Option(envvar="RLM_MAX_SUBCALLS", rich_help_panel=LIMITS,
        help="Most llm_query sub-calls. \\[default: no limit]")] = None,
    max_cost: o.MaxCost = None,
    max_tokens: o.MaxTokens = None,
    max_depth: o.MaxDepth = None,
    max_children: o.MaxChildren = None,
    child_iterations: o.ChildIterations = None,
    timeout: o.Timeout = None,
    sandbox: o.Sandbox = None,
    image: o.Image = None,
    cpus: Annotated[float | None, typer.Option(envvar="RLM_CPUS", rich_help_panel=SANDBOX,
        help=f"CPUs for the Docker sandbox. \\[default: {D.cpus:g}]")] = None,
    pids_limit: Annotated[int | None, typer.Option(envvar="RLM_PIDS_LIMIT", rich_help_panel=SANDBOX,
        help=f"Most processes in the sandbox. \\[default: {D.pids_limit}]")] = None,
    memory: Annotated[str | None, typer.Option(envvar="RLM_MEMORY", rich_help_panel=SANDBOX,
        help="Memory cap of the REPL, e.g. 512m, 2g; auto: what the context needs as a Python str "
        f"(characters x 1, 2 or 4 bytes), at least 1g. \\[default: {D.memory}]")] = None,
    cell_timeout: Annotated[float | None, typer.Option(envvar="RLM_CELL_TIMEOUT", rich_help_panel=SANDBOX,
        help=f"Seconds a code cell may run (sub-calls excluded). \\[default: {D.cell_timeout:g}]")] = None,
    max_output_chars: Annotated[int | None, typer.Option(envvar="RLM_MAX_OUTPUT_CHARS",
        rich_help_panel=SANDBOX,
        help=f"Cell output shown to the model; the rest is cut. \\[default: {D.max_output_chars}]")] = None,
    include: o.Include = None,
    exclude: o.Exclude = None,
    no_ignore: o.NoIgnore = False,
    hidden: o.Hidden = False,
    redact_secrets: Annotated[bool, typer.Option("--redact-secrets", envvar="RLM_REDACT_SECRETS",
        rich_help_panel=INPUT,
        help="Replace possible secrets (private keys, cloud keys, tokens: detect-secrets' rules) with "
             "placeholders of the same length before the sandbox sees the input. Without it they are "
             "only reported, by path:line.")] = False,
    max_file_size: o.MaxFileSize = None,
    trace: Annotated[str | None, typer.Option("--trace", metavar="FILE", rich_help_panel=OUTPUT,
        help="Also write the JSONL trace to FILE (every run's trace is kept in the history; see `rlm logs`).")] = None,
    no_log: Annotated[bool, typer.Option("--no-log", rich_help_panel=OUTPUT,
        help="Keep no record of this run in the history (an explicit --trace is still written).")] = False,
    schema: Annotated[str | None, typer.Option("--schema", envvar="RLM_SCHEMA", metavar="FILE|JSON",
        rich_help_panel=OUTPUT, show_default=False,
        help="The answer must be JSON valid against this JSON Schema (a file, or inline JSON): stdout then holds "
             "the JSON document alone, on one line. An invalid answer gets one repair turn; still invalid: exit 6.")]
        = None,
    as_json: Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT,
        help="Print one JSON object, whatever the exit status: answer, exit_reason, error, usage, cost, ...")]
        = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=OUTPUT,
        help="Nothing on stderr but errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", rich_help_panel=OUTPUT,
        help="List skipped files and show more progress detail.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", rich_help_panel=INPUT,
        help="Load nothing into a sandbox and call no model: list the files that would be loaded with their "
             "tokens (largest first), the skipped ones and an estimated cost range, as `rlm files` does.")]
        = False,
    top: Annotated[int, typer.Option("--top", "-n", min=0, rich_help_panel=OUTPUT, metavar="N",
        help="With --dry-run: how many files to list.")] = 20,
    yes: Annotated[bool, typer.Option("--yes", "-y", rich_help_panel=INPUT,
        help="Do not ask before loading an input above confirm-tokens (a config setting, default "
             f"{D.confirm_tokens:,} tokens; asked on a terminal only).")] = False,
) -> None:  # fmt: skip
    """Answer QUESTION about PATHS (files, directories, or - for stdin).

    The input is never pasted into a prompt: the root model explores it with code in a sandboxed REPL and calls sub-models on pieces. The answer goes to stdout; progress to stderr.
    """  # Rich re-flows help text: a line break inside a paragraph would show
    started = started_at()
    explicit = dict(
        model=model, sub_model=sub_model, api_base=api_base, sub_api_base=sub_api_base,
        allow_models=allow_model or [],
        concurrency=concurrency, request_timeout=request_timeout, max_retries=max_retries,
        max_iterations=max_iterations, max_subcalls=max_subcalls, max_cost=max_cost,
        max_tokens=max_tokens, timeout=timeout, sandbox=sandbox, image=image, cpus=cpus,
        pids_limit=pids_limit, memory=memory,
        cell_timeout=cell_timeout, max_output_chars=max_output_chars, include=include or [],
        exclude=exclude or [], no_ignore=no_ignore or None, hidden=hidden or None,
        redact_secrets=redact_secrets or None,
        max_file_size=max_file_size, no_subcalls=no_subcalls or None, instructions=instructions,
        root_window=root_window, sub_window=sub_window, schema=schema, cite=cite,
        max_reply_tokens=max_reply_tokens, max_sub_reply_tokens=max_sub_reply_tokens, price=price,
        no_cache=no_cache or None, cache_only=cache_only or None,
        max_depth=max_depth, max_children=max_children, child_iterations=child_iterations,
    )  # fmt: skip
    output = Output(
        as_json=as_json, quiet=quiet, verbose=verbose, trace=trace, log=not no_log, started=started,
        dry_run=dry_run, top=top, yes=yes,
    )  # fmt: skip
    try:
        follow = continue_run or ("last" if continue_last else None)
        _run(explicit, paths or [], question, output, follow, force)
    except (typer.Exit, typer.Abort):
        raise
    except (Exception, KeyboardInterrupt) as exc:  # an early failure: --json still prints its object
        if output.as_json and not output.printed:
            _print_json(output, failure_document(exc))
        raise  # @guarded says it on stderr and exits with its status


@dataclass
class Output:
    """Where a run's answer and record go."""

    as_json: bool = False
    quiet: bool = False
    verbose: bool = False
    trace: str | None = None  # an extra JSONL trace the user asked for
    log: bool = True  # keep the run (row + trace) in the history
    started: float = field(default_factory=time.monotonic)  # process start, on the monotonic clock
    # Known once reached, for the --json object of a run that fails early.
    run_id: str | None = None
    trace_path: str | None = None
    settings: object | None = None  # settings.Settings, imported lazily
    printed: bool = False  # the --json object is out: never a second one
    dry_run: bool = False  # --dry-run: the preview of cli/files.py instead of a run
    top: int = 20  # files the preview lists
    yes: bool = False  # no confirmation for a large load


# The process's start on the monotonic clock, set by app.main before Typer parses anything; a
# command run in-process (tests, CliRunner) counts from its own start.
PROCESS_START: float | None = None


def started_at() -> float:
    return PROCESS_START if PROCESS_START is not None else time.monotonic()


def process_start() -> float:
    """When this process started, on the monotonic clock: Linux says (interpreter start-up and the
    imports included); elsewhere, now."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])  # field 22: starttime, since boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - age if 0 <= age < 3600 else now  # a nonsense age (clock quirks) counts from now


def _run(
    explicit: dict, paths: list[str], question: str, output: Output, follow_ref: str | None = None,
    force: bool = False,
) -> None:  # fmt: skip
    from ..events import broadcast, new_run_id
    from ..run import ask as run_ask
    from ..settings import resolve
    from ..view.escape import echo
    from ..view.live import LiveView
    from .guard import say

    follow = None
    if follow_ref is not None:  # the earlier run's inputs, models and servers (followup.py)
        if paths:
            raise UsageError(
                "with -c/--continue, give only the question", hint="the earlier run's inputs are loaded again"
            )
        from ..followup import load as load_follow_up

        follow = load_follow_up(follow_ref, force)
        follow.defaults(explicit)
        paths = follow.inputs
    elif not paths:
        raise UsageError(
            "no input given", hint="pass files, directories, or - for stdin; -c continues the last run"
        )
    settings = output.settings = resolve(explicit)
    output.log = output.log and not settings.no_log  # --no-log, or `no-log = true` in the config
    if not question.strip():
        raise UsageError("the question is empty")
    if output.dry_run:
        from .files import show_preview

        output.printed = True  # the preview is the one object --json prints
        show_preview(settings, paths, output.top, output.as_json, output.verbose, output.quiet)
        return
    view = LiveView(quiet=output.quiet, verbose=output.verbose, answer_panel=not sys.stdout.isatty())
    run_id = output.run_id = new_run_id()
    # The trace writers come first: whatever happens to the view, the record is complete.
    subscribers, writers, trace_path = _recorders(output, run_id, view.warn)
    output.trace_path = trace_path
    here = os.getcwd()
    from .files import LoadProgress, confirm_load

    # No tokens.preload() here: loading the tokenizer holds the GIL ~0.3 s, which delayed the first
    # request as much; the model client starts it once that request is out (tokens.py).
    progress = LoadProgress(sys.stderr, quiet=output.quiet)
    try:
        if follow is not None:  # its inputs are named as they were given, from where it ran
            os.chdir(follow.cwd)
        report = run_ask(
            settings, paths, question, broadcast([*subscribers, view]), stdin=sys.stdin.buffer, run_id=run_id,
            follow=follow, progress=progress, confirm=lambda c: confirm_load(c, settings, output.yes, view.close),
        )  # fmt: skip
    finally:
        progress.close()
        os.chdir(here)
        view.close()
        for writer in writers:
            writer.close()
    result = report.result
    status = result.exit_reason.status  # each ExitReason carries its exit status
    try:  # the answer as given when piped; escaped on a terminal (see view/escape.py)
        if output.as_json:
            output.printed = True  # even if stdout is gone: a second object would not fare better
            _print_json(output, _json_result(report, output))
        elif result.answer is not None:
            echo(result.answer)
            if result.evidence is not None and result.evidence.citations and settings.schema is None:
                from ..cite import sources_block

                echo("\n" + sources_block(result.evidence.citations))  # --schema: the JSON alone
    except OSError:
        if status == ExitStatus.OK:
            raise
        # Interrupted or stopped, and stdout is gone too (a closed terminal): the status still says so.
    if status != ExitStatus.OK:
        what = "limit reached" if status == ExitStatus.LIMIT else result.exit_reason.replace("_", " ")
        tail = "; partial answer printed" if result.answer else ""
        view.error(f"{what}: {result.message}{tail}")
        if result.hint:
            say(f"hint: {result.hint}")
    raise typer.Exit(int(status))


def _recorders(output: Output, run_id: str, warn) -> tuple[list, list, str | None]:  # noqa: ANN001
    """(subscribers, writers to close, the trace path to report) for the trace and the history."""
    from pathlib import Path

    from ..record.history import History
    from ..record.trace import TraceWriter

    subscribers, writers, reported = [], [], None
    if output.trace:  # asked for: an unwritable path is the user's error (exit 2), before any spend
        writers.append(TraceWriter(Path(output.trace), on_error=warn))
        reported = output.trace
    if output.log:  # the history must never stop a run: problems are warnings
        history = History()
        kept: Path | None = history.trace_path_for(run_id)
        try:
            writers.append(TraceWriter(kept, on_error=warn))
        except RlmError as exc:
            warn(str(exc))
            kept = None
        subscribers.append(history.recorder(kept, on_error=warn))
        reported = reported or (str(kept) if kept else None)
    return [*writers, *subscribers], writers, reported


def _print_json(output: Output, fields: dict) -> None:
    """The one --json object: every key, always (null where the run did not get that far)."""
    from ..view.escape import echo, safe_json

    output.printed = True
    document = {**_json_skeleton(output), **fields}
    echo(safe_json(json.dumps(document, ensure_ascii=False)))


def _json_skeleton(output: Output) -> dict:
    settings = output.settings
    return {
        "answer": None,  # only a final answer; see partial_answer
        "partial_answer": None,  # the best text of a run that stopped without one
        "exit_reason": None,
        "partial": False,
        "message": None,
        "error": None,  # why the run did not answer (any status but 0)
        "hint": None,
        "iterations": None,
        "subcalls": None,
        "usage": None,
        "cost_usd": None,  # null when unknown: a call had no price, or the run never got that far
        "cost_known": False,
        "usage_by_depth": None,  # {"0": the root run, "1": its rlm_query children, ...}: calls, tokens, cost
        "elapsed_s": round(time.monotonic() - output.started, 3),
        "model": getattr(settings, "model", None),
        "sub_model": getattr(settings, "effective_sub_model", None),
        "sandbox": None,
        "context": None,
        "run_id": output.run_id,
        "trace": output.trace_path,
        "citations": None,  # --cite check|require, once an answer was checked: see cite/check.py
        "unverified": None,
        "cache": None,  # calls the cache of model calls served: hits, misses, saved_tokens, saved_cost_usd
    }


def failure_document(exc: BaseException) -> dict:
    """The --json fields of a run that failed before it had a result (usage, input, key, sandbox
    start-up, Ctrl-C during loading, a bug), as @guarded reports it on stderr."""
    if isinstance(exc, RlmError):
        reason, message, hint = exc.reason, str(exc), exc.hint
    elif isinstance(exc, KeyboardInterrupt):
        reason, message, hint = ExitReason.INTERRUPTED, "interrupted", None
    else:
        reason, message = ExitReason.ERROR, f"unexpected {type(exc).__name__}: {exc}"
        hint = "this is a bug; RLM_DEBUG=1 shows the traceback"
    return {"exit_reason": reason.value, "message": message, "error": message, "hint": hint}


def _usage_by_depth(budget) -> dict:  # noqa: ANN001 - budget.Budget, imported lazily
    """The run's usage per level of the tree (every call at every depth; the levels add up to it)."""
    levels = budget.by_depth or {0: budget.usage}
    return {
        str(depth): {
            "root_calls": level.root_calls,
            "subcalls": level.subcalls,
            "prompt_tokens": level.prompt_tokens,
            "completion_tokens": level.completion_tokens,
            "total_tokens": level.total_tokens,
            "cost_usd": round(level.cost_usd, 6) if level.cost_known else None,
        }
        for depth, level in sorted(levels.items())
    }


def _json_result(report, output: Output) -> dict:  # noqa: ANN001 - run.Report, imported lazily
    result, usage, stats = report.result, report.budget.usage, report.context.stats
    final = result.exit_reason == ExitReason.FINAL
    evidence = result.evidence.to_dict() if result.evidence is not None else {}
    return {
        "citations": evidence.get("citations"),
        "unverified": evidence.get("unverified"),
        "answer": result.answer if final else None,
        "partial_answer": None if final else result.answer,
        "exit_reason": result.exit_reason,
        "partial": result.partial,
        "message": result.message,
        "error": None if final else result.message,
        "hint": result.hint,
        "iterations": result.iterations,
        "subcalls": usage.subcalls,
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "estimated": usage.estimated,  # some provider usage was missing or bogus: counted from the text
        },
        "cost_usd": round(usage.cost_usd, 6) if usage.cost_known else None,
        "cost_known": usage.cost_known,
        "usage_by_depth": _usage_by_depth(report.budget),
        "model": report.settings.model,
        "sub_model": report.settings.effective_sub_model,
        "sandbox": report.sandbox,
        "cache": {
            "hits": usage.cache_hits,
            "misses": usage.cache_misses,
            "saved_tokens": usage.saved_tokens,
            "saved_cost_usd": round(usage.saved_cost_usd, 6),
        },
        "context": {
            "kind": report.context.kind,
            "files": stats.files,
            "bytes": stats.bytes,
            "chars": stats.chars,
            "est_tokens": stats.est_tokens,
            "skipped": {reason: len(paths) for reason, paths in stats.skipped.items() if paths},
        },
    }
