"""One `rlm ask`: load the context, start the sandbox, run the loop, clean up on every path."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import __version__
from .agent import Agent, RunResult, Task
from .budget import Budget
from .context import Context, load_context, write_error
from .errors import ExitReason, ProviderError, RlmError, SandboxError
from .events import (
    ContextLoaded,
    Emit,
    Notice,
    RunFinished,
    RunStarted,
    RunStopped,
    SandboxChosen,
    new_run_id,
)
from .model.client import ModelClient, ModelConfig
from .model.providers import provider_of
from .repl.backends import make_sandbox
from .repl.protocol import Repl
from .settings import Settings
from .signals import Signals
from .walk import display_name
from .windows import Windows
from .windows import resolve as resolve_windows

MAX_TRACED_SOURCES = 1000  # inputs named in the trace (path, size, digest); the count says the rest


@dataclass
class Report:
    """Everything the CLI needs to print about a finished run."""

    result: RunResult
    budget: Budget
    context: Context
    settings: Settings
    sandbox: str


def load(settings: Settings, paths: list[str], workdir: Path, stdin: BinaryIO | None) -> Context:
    return load_context(paths, workdir, settings.load_options(), stdin)


def make_client(settings: Settings, budget: Budget) -> ModelClient:
    """The model client of a run (`rlm ask`, and each row of `rlm bench run`)."""
    common = dict(request_timeout=settings.request_timeout, max_retries=settings.max_retries)
    root = ModelConfig(settings.model, settings.api_base, **common)
    sub = ModelConfig(settings.effective_sub_model, sub_api_base(settings), **common)
    return ModelClient(
        root, sub, budget, concurrency=settings.concurrency, allow_models=settings.allow_models
    )


def run_windows(settings: Settings) -> Windows:
    """The context windows of the run's models: --root-window/--sub-window, else litellm's table."""
    return resolve_windows(
        settings.model, settings.effective_sub_model, settings.root_window, settings.sub_window,
        others=settings.allow_models,
    )  # fmt: skip


def sub_api_base(settings: Settings) -> str | None:
    """--sub-api-base, else --api-base only when the sub model has the root model's provider: that
    server was paired with the root's provider, and must not receive another provider's key."""
    if settings.sub_api_base or not settings.api_base or not settings.sub_model:
        return settings.sub_api_base or settings.api_base
    same = provider_of(settings.sub_model) == provider_of(settings.model)
    return settings.api_base if same else None


def ask(
    settings: Settings,
    paths: list[str],
    question: str,
    emit: Emit,
    stdin: BinaryIO | None = None,
    run_id: str | None = None,
) -> Report:
    """Run one question to the end. Input, credential and usage errors raise; everything after
    the loop starts (limits, provider and sandbox failures, interruption) comes back as a result.
    Either way the events start with RunStarted and end with RunFinished.

    Loading and the litellm import happen before the event loop starts, so Ctrl-C during a long
    load is an ordinary KeyboardInterrupt; SIGTERM and SIGHUP are made one too (see Signals).
    """
    question = display_name(question)  # argv bytes that are not UTF-8, as walk.py shows names
    run = RunStarted(
        question, settings.model, settings.effective_sub_model, settings.sandbox,
        inputs=[display_name(p) for p in paths], cwd=display_name(os.getcwd()), version=__version__,
        id=run_id or new_run_id(),
    )  # fmt: skip
    budget = Budget(settings.limits())
    workdir: Path | None = None
    with Signals() as signals:
        try:
            try:
                emit(run)
                workdir = _make_workdir()
                share = workdir / f"share-{secrets.token_hex(8)}"  # what the sandbox sees, read-only
                context = load(settings, paths, share, stdin)
                emit(context_event(context, parent=run.id))
                index = share / "index.json"
                context.write_index(index)
                client = make_client(settings, budget)
                client.check_credentials()
                for warning in client.cost_limit_warnings():  # before any call: --max-cost off for these
                    emit(Notice(warning, warning=True))
                sandbox = make_sandbox(settings, share, emit)
                emit(SandboxChosen(sandbox.name, parent=run.id))  # RunStarted may say "auto"
                if context.path.parent != share:  # a named file used in place
                    sandbox.add_input(context.path)
                repl = Repl(
                    sandbox,
                    context.path,
                    index,
                    cell_timeout=settings.cell_timeout,
                    max_output_chars=settings.max_output_chars,
                )
                task = Task(
                    question, context, run.id, settings.max_output_chars, subcalls=not settings.no_subcalls,
                    instructions=settings.instructions, windows=run_windows(settings),
                    schema=settings.answer_schema, cite=settings.cite,
                )  # fmt: skip
                agent = Agent(task, client, repl, budget, emit)
                result = asyncio.run(_drive(agent, repl, signals))
            finally:
                signals.hold()  # nothing interrupts the clean-up and the record from here on
                if workdir is not None:
                    shutil.rmtree(workdir, ignore_errors=True)
        except RlmError as exc:  # each error declares the reason it ends a run with
            stopped = RunResult(None, exc.reason, budget.iterations, message=str(exc), hint=exc.hint)
            _end(emit, stopped, budget, run)
            raise
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP before the loop ran (see Signals)
            stopped = RunResult(None, ExitReason.INTERRUPTED, budget.iterations, message="interrupted")
            _end(emit, stopped, budget, run)
            raise
        except Exception as exc:  # a bug: the CLI says so (exit 1); the record still ends
            message = f"unexpected {type(exc).__name__}: {exc}"
            _end(emit, RunResult(None, ExitReason.ERROR, budget.iterations, message=message), budget, run)
            raise
        _end(emit, result, budget, run)
    return Report(result, budget, context, settings, sandbox.name)


def _make_workdir() -> Path:
    """The run's private temp dir (TMPDIR decides where): the copy of the input, the index."""
    try:
        return Path(tempfile.mkdtemp(prefix="rlm-run-"))
    except OSError as exc:
        raise write_error(Path(tempfile.gettempdir()), exc) from exc


def context_event(context: Context, parent: str) -> ContextLoaded:
    stats = context.stats
    return ContextLoaded(
        context.summary(), context.kind, stats.chars, stats.bytes, stats.files, stats.est_tokens,
        sources=[[f.path, f.bytes, f.sha256] for f in context.files[:MAX_TRACED_SOURCES]],
        skipped=stats.skipped, parent=parent,
    )  # fmt: skip


def _end(emit: Emit, result: RunResult, budget: Budget, run: RunStarted) -> None:
    """A run's last events: RunStopped when it ended without an answer, then RunFinished."""
    if result.exit_reason != ExitReason.FINAL:
        emit(RunStopped(result.exit_reason.value, result.message or "", result.hint, parent=run.id))
    emit(finished(result, budget, run))


def finished(result: RunResult, budget: Budget, run: RunStarted) -> RunFinished:
    usage = budget.usage
    return RunFinished(
        result.exit_reason.value, result.answer, result.partial, result.iterations, usage.subcalls,
        usage.prompt_tokens, usage.completion_tokens, usage.cost_usd, usage.cost_known,
        time.time() - run.ts, parent=run.id,
    )  # fmt: skip


async def _drive(agent: Agent, repl: Repl, signals: Signals | None = None) -> RunResult:
    """Start the REPL, run the agent, always stop the sandbox; SIGTERM and SIGHUP interrupt."""
    task = asyncio.current_task()
    if signals is not None and task is not None:
        signals.watch(task)
    try:
        await repl.start()
        agent.budget.restart_clock()  # --timeout bounds the loop, not start-up
        return await agent.run()
    except asyncio.CancelledError:
        return _interrupted(agent)
    except (ProviderError, SandboxError) as exc:
        if signals is not None and signals.received is not None:
            return _interrupted(agent)  # e.g. a hang-up that also reached the sandbox's process
        return RunResult(
            agent.partial, exc.reason, agent.budget.iterations, partial=True, message=str(exc), hint=exc.hint
        )
    finally:
        if signals is not None:
            signals.hold()
        await asyncio.shield(repl.close())
        await agent.client.aclose()


def _interrupted(agent: Agent) -> RunResult:
    return RunResult(
        agent.partial, ExitReason.INTERRUPTED, agent.budget.iterations, partial=True, message="interrupted"
    )
