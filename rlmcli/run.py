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
from .agent import Agent, RunResult
from .budget import Budget, Limits
from .context import Context, LoadOptions, load_context, parse_size, write_error
from .errors import ProviderError, RlmError, SandboxError
from .events import (
    ContextLoaded,
    Emit,
    ErrorEvent,
    LimitReached,
    Notice,
    RunFinished,
    RunStarted,
    new_run_id,
)
from .model.client import ModelClient, ModelConfig
from .model.providers import provider_of
from .repl.backends import make_sandbox
from .repl.protocol import Repl
from .settings import Settings
from .signals import Signals
from .walk import display_name

INTERRUPTED = "interrupted"
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
    options = LoadOptions(
        include=list(settings.include),
        exclude=list(settings.exclude),
        no_ignore=settings.no_ignore,
        hidden=settings.hidden,
        max_file_size=parse_size(settings.max_file_size),
    )
    return load_context(paths, workdir, options, stdin)


def make_client(settings: Settings, budget: Budget) -> ModelClient:
    common = dict(request_timeout=settings.request_timeout, max_retries=settings.max_retries)
    root = ModelConfig(settings.model, settings.api_base, **common)
    sub = ModelConfig(settings.effective_sub_model, sub_api_base(settings), **common)
    return ModelClient(
        root, sub, budget, concurrency=settings.concurrency, allow_models=settings.allow_models
    )


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
    budget = Budget(
        Limits(
            max_iterations=settings.max_iterations,
            max_subcalls=settings.max_subcalls,
            max_cost=settings.max_cost,
            max_tokens=settings.max_tokens,
            timeout=settings.timeout,
        )
    )
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
                if context.path.parent != share:  # a named file used in place
                    sandbox.add_input(context.path)
                repl = Repl(
                    sandbox,
                    context.path,
                    index,
                    cell_timeout=settings.cell_timeout,
                    max_output_chars=settings.max_output_chars,
                )
                agent = Agent(
                    client, repl, context, question, budget, emit, settings.max_output_chars,
                    run_id=run.id, subcalls=not settings.no_subcalls,
                )  # fmt: skip
                repl.on_subcalls = agent.subcalls
                result = asyncio.run(_drive(agent, repl, signals))
            finally:
                signals.hold()  # nothing interrupts the clean-up and the record from here on
                if workdir is not None:
                    shutil.rmtree(workdir, ignore_errors=True)
        except RlmError as exc:
            reason = exc.__class__.__name__.replace("Error", "").lower() + "_error"
            emit(ErrorEvent(reason, str(exc), parent=run.id))
            emit(finished(RunResult(None, reason, budget.iterations, message=str(exc)), budget, run))
            raise
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP before the loop ran (see Signals)
            emit(finished(RunResult(None, INTERRUPTED, budget.iterations, message=INTERRUPTED), budget, run))
            raise
        except Exception as exc:  # a bug: the CLI says so (exit 1); the record still ends
            message = f"unexpected {type(exc).__name__}: {exc}"
            emit(ErrorEvent("error", message, parent=run.id))
            emit(finished(RunResult(None, "error", budget.iterations, message=message), budget, run))
            raise
        if result.exit_reason in ("provider_error", "sandbox_error"):
            emit(ErrorEvent(result.exit_reason, result.message or "", parent=run.id))
        elif result.exit_reason not in ("final", "interrupted"):
            emit(LimitReached(result.exit_reason, result.message or "", parent=run.id))
        emit(finished(result, budget, run))
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


def finished(result: RunResult, budget: Budget, run: RunStarted) -> RunFinished:
    usage = budget.usage
    return RunFinished(
        result.exit_reason, result.answer, result.partial, result.iterations, usage.subcalls,
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
        reason = "provider_error" if isinstance(exc, ProviderError) else "sandbox_error"
        return RunResult(
            agent.partial, reason, agent.budget.iterations, partial=True, message=str(exc), hint=exc.hint
        )
    finally:
        if signals is not None:
            signals.hold()
        await asyncio.shield(repl.close())
        await agent.client.aclose()


def _interrupted(agent: Agent) -> RunResult:
    return RunResult(agent.partial, INTERRUPTED, agent.budget.iterations, partial=True, message=INTERRUPTED)
