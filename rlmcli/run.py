"""One `rlm ask`: load the context, start the sandbox, run the loop, clean up on every path."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import __version__, sandbox_docker
from .agent import Agent, RunResult
from .budget import Budget, Limits
from .context import Context, LoadOptions, load_context, parse_size
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
from .lm import ModelClient, ModelConfig
from .repl import Repl, Sandbox
from .sandbox_local import LocalSandbox, SandboxLimits
from .settings import Settings

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
    sub = ModelConfig(settings.effective_sub_model, settings.effective_sub_api_base, **common)
    return ModelClient(root, sub, budget, concurrency=settings.concurrency)


def make_sandbox(settings: Settings, share_dir: Path, emit: Emit) -> Sandbox:
    """Docker when asked, or for `auto` when a daemon answers within a second; else local."""
    limits = SandboxLimits(memory=parse_size(settings.memory), pids=settings.pids_limit)
    if settings.sandbox == "local":
        return LocalSandbox(limits)
    client = sandbox_docker.connect(timeout=1.0)
    if client is None:
        if settings.sandbox == "docker":
            raise sandbox_docker.no_daemon()
        emit(Notice("no Docker daemon answers; using the local sandbox (weaker isolation)", warning=True))
        return LocalSandbox(limits)
    sandbox_docker.prune(client)  # leftovers of runs that died without cleaning up
    sandbox_docker.ensure_image(client, settings.image, lambda text: emit(Notice(text)))
    options = sandbox_docker.DockerOptions(settings.image, settings.cpus, settings.pids_limit)
    return sandbox_docker.DockerSandbox(client, limits, options, share_dir)


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
    load is an ordinary KeyboardInterrupt.
    """
    run = RunStarted(
        question, settings.model, settings.effective_sub_model, settings.sandbox,
        inputs=list(paths), cwd=os.getcwd(), version=__version__, id=run_id or new_run_id(),
    )  # fmt: skip
    emit(run)
    budget = Budget(
        Limits(
            max_iterations=settings.max_iterations,
            max_subcalls=settings.max_subcalls,
            max_cost=settings.max_cost,
            max_tokens=settings.max_tokens,
            timeout=settings.timeout,
        )
    )
    workdir = Path(tempfile.mkdtemp(prefix="rlm-run-"))
    share = workdir / f"share-{secrets.token_hex(8)}"  # what the sandbox sees, read-only
    try:
        context = load(settings, paths, share, stdin)
        emit(context_event(context, parent=run.id))
        index = share / "index.json"
        context.write_index(index)
        client = make_client(settings, budget)
        client.check_credentials()
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
        result = asyncio.run(_drive(agent, repl))
    except RlmError as exc:
        reason = exc.__class__.__name__.replace("Error", "").lower() + "_error"
        emit(ErrorEvent(reason, str(exc), parent=run.id))
        emit(finished(RunResult(None, reason, budget.iterations, message=str(exc)), budget, run))
        raise
    except KeyboardInterrupt:
        emit(finished(RunResult(None, "interrupted", budget.iterations, message="interrupted"), budget, run))
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if result.exit_reason in ("provider_error", "sandbox_error"):
        emit(ErrorEvent(result.exit_reason, result.message or "", parent=run.id))
    elif result.exit_reason not in ("final", "interrupted"):
        emit(LimitReached(result.exit_reason, result.message or "", parent=run.id))
    emit(finished(result, budget, run))
    return Report(result, budget, context, settings, sandbox.name)


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


async def _drive(agent: Agent, repl: Repl) -> RunResult:
    """Start the REPL, run the agent, always stop the sandbox; SIGTERM counts as an interrupt."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    # Signal handlers belong to the main thread; runs driven from worker threads (rlm bench) skip it.
    on_main = threading.current_thread() is threading.main_thread()
    if task is not None and on_main:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await repl.start()
        agent.budget.restart_clock()  # --timeout bounds the loop, not start-up
        return await agent.run()
    except asyncio.CancelledError:
        return RunResult(
            agent.partial, "interrupted", agent.budget.iterations, partial=True, message="interrupted"
        )
    except (ProviderError, SandboxError) as exc:
        reason = "provider_error" if isinstance(exc, ProviderError) else "sandbox_error"
        return RunResult(
            agent.partial, reason, agent.budget.iterations, partial=True, message=str(exc), hint=exc.hint
        )
    finally:
        if on_main:
            loop.remove_signal_handler(signal.SIGTERM)
        await asyncio.shield(repl.close())
        await agent.client.aclose()
