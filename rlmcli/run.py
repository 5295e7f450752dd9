"""One `rlm ask`: load the context, start the sandbox, run the loop, clean up on every path."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from . import __version__, recursion
from . import survey as surveyed
from .agent import Agent, RunResult, Task
from .budget import Budget
from .context import Context, Progress, load_context, write_error
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
from .model import probe, timeouts
from .model.cache import endpoint_identity
from .model.client import ModelClient, ModelConfig
from .model.providers import max_reply_tokens, provider_of, table_priced
from .repl import context_memory
from .repl.backends import make_sandbox
from .repl.protocol import Repl
from .settings import DEFAULT_CONCURRENCY, Settings
from .signals import Signals
from .walk import display_name
from .windows import Windows
from .windows import resolve as resolve_windows

if TYPE_CHECKING:
    from .followup import FollowUp
    from .model.cache import CallCache

AUTO_MEMORY_FLOOR = 2**30  # --memory auto never gives less: cells build lists and slices of the context
MAX_TRACED_SOURCES = 1000  # inputs named in the trace (path, size, digest); the count says the rest
# The most the context's token count waits for the first request to go out (it goes in ~0.5 s).
REQUEST_OUT_WAIT_S = 3.0


@dataclass
class Report:
    """Everything the CLI needs to print about a finished run."""

    result: RunResult
    budget: Budget
    context: Context
    settings: Settings
    sandbox: str


def load(
    settings: Settings,
    paths: list[str],
    workdir: Path,
    stdin: BinaryIO | None,
    progress: Progress | None = None,
    survey: bool = False,
) -> Context:
    """The run's context, its tokens not counted yet (Context.count_tokens: the tokenizer loads once
    the first request is out, see before_start in ask); with `survey`, a big named file is only
    surveyed and its full pass goes on in a process of its own (survey.py, load_pass.py: the first
    request need not wait for it)."""
    options = settings.load_options()
    if survey and surveyed.deferrable(paths, options):
        return surveyed.survey(paths, workdir, options)
    return load_context(paths, workdir, options, stdin, progress, count=False)


def sandbox_memory(settings: Settings, context: Context) -> int:
    """--memory, or for `auto` (the default) what loading this context takes (context_memory.py:
    its bytes, and 1, 3 or 5 bytes a byte while it decodes, by what the load saw), at least 1 GiB."""
    if settings.memory_bytes:
        return settings.memory_bytes
    size = context.path.stat().st_size
    factor = context_memory.factor_of(size, context.stats.chars, context.stats.char_width)
    return max(AUTO_MEMORY_FLOOR, context_memory.needed(size, factor))


def make_client(settings: Settings, budget: Budget, warn: Callable[[str], None] | None = None) -> ModelClient:
    """The model client of a run (`rlm ask`, and each row of `rlm bench run`), with the cache of
    model calls unless --no-cache; `warn` hears of a cache that cannot be used."""
    sub_base = sub_api_base(settings)
    root = ModelConfig(settings.model, settings.api_base, **request_limits(settings, settings.api_base))
    sub = ModelConfig(settings.effective_sub_model, sub_base, **request_limits(settings, sub_base))
    for cfg, kind, reply, window in (
        (root, "root", settings.max_reply_tokens, settings.root_window),
        (sub, "sub", settings.max_sub_reply_tokens, settings.sub_window),
    ):
        # Priced as unknown (or at --price) when served from a server its provider does not run.
        cfg.table_priced, cfg.price = table_priced(cfg.model, cfg.api_base), settings.price_per_token
        cfg.max_reply_tokens = max_reply_tokens(kind, reply, cfg.model, cfg.api_base)
        cfg.window = window  # --root-window / --sub-window; else the server's (learn_servers)
    client = ModelClient(
        root, sub, budget, settings.concurrency or DEFAULT_CONCURRENCY, settings.allow_models
    )
    if not settings.no_cache:
        from .model.cache import CallCache

        client.cache = CallCache(max_bytes=settings.cache_size_bytes, only=settings.cache_only, warn=warn)
    return client


def request_limits(settings: Settings, api_base: str | None) -> dict:
    """--request-timeout, else the default for where the requests go (longer for a local server)."""
    timeout = settings.request_timeout or timeouts.default_for(api_base)
    return dict(request_timeout=timeout, max_retries=settings.max_retries)


def run_windows(settings: Settings, probes: probe.Probes | None = None) -> Windows:
    """The context windows of the run's models: --root-window/--sub-window, else what their servers
    said (model/probe.py), else litellm's table."""
    root = probes.result(settings.api_base) if probes else None
    sub = probes.result(sub_api_base(settings)) if probes else None
    return resolve_windows(
        settings.model, settings.effective_sub_model, settings.root_window, settings.sub_window,
        others=settings.allow_models, root_server=root.window if root else None,
        sub_server=sub.window if sub else None,
    )  # fmt: skip


def learn_servers(settings: Settings, probes: probe.Probes, client: ModelClient, emit: Emit) -> None:
    """What the servers at the run's base URLs said, put to use: sub-calls run no more at once than
    the sub-calls' server has slots (unless --concurrency was given); one line says so per server."""
    root, sub = probes.result(settings.api_base), probes.result(sub_api_base(settings))
    if settings.concurrency is None and sub is not None and sub.slots is not None:
        client.concurrency = sub.slots
    for cfg, info in ((client.root_config, root), (client.sub_config, sub)):
        cfg.window = cfg.window or (info.window if info else None)  # replies fit in what is left
    for url in probes.urls():
        info = probes.result(url)
        if info is not None and (info.slots is not None or info.window is not None):
            emit(Notice(info.describe(client.concurrency if info is sub else None)))


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
    follow: FollowUp | None = None,
    cache: CallCache | None = None,
    progress: Progress | None = None,
    confirm: Callable[[Context], None] | None = None,
) -> Report:
    """Run one question to the end. Input, credential and usage errors raise; everything after
    the loop starts (limits, provider and sandbox failures, interruption) comes back as a result.
    Either way the events start with RunStarted and end with RunFinished.

    Loading and the litellm import happen before the event loop starts, so Ctrl-C during a long
    load is an ordinary KeyboardInterrupt; SIGTERM and SIGHUP are made one too (see Signals).
    `follow`: the earlier run this one continues (`rlm ask -c`, followup.py); `cache`: where model
    replies come from instead of the settings' cache (`rlm replay --rerun`: the record's).
    `progress` hears how the loading goes; `confirm` may stop a large load before any spend.
    """
    question = display_name(question)  # argv bytes that are not UTF-8, as walk.py shows names
    run = RunStarted(
        question, settings.model, settings.effective_sub_model, settings.sandbox,
        inputs=[display_name(p) for p in paths], cwd=display_name(os.getcwd()), version=__version__,
        id=run_id or new_run_id(), parent_run=follow.run_id if follow else None,
        endpoint=endpoint_identity(settings.api_base), sub_endpoint=endpoint_identity(sub_api_base(settings)),
    )  # fmt: skip
    budget = Budget(settings.limits())
    workdir: Path | None = None
    context: Context | None = None
    announced = False  # the ContextLoaded event is out (it waits for the count of the tokens)
    with Signals() as signals:
        try:
            try:
                emit(run)
                # Asked on threads while the input loads: the servers' slots and windows.
                bases = [(settings.model, settings.api_base), (run.sub_model, sub_api_base(settings))]
                probes = probe.start(bases)
                workdir = _make_workdir()
                share = workdir / f"share-{secrets.token_hex(8)}"  # what the sandbox sees, read-only
                context = load(settings, paths, share, stdin, progress, survey=follow is None)
                if context.pending is not None:  # its full pass goes on (survey.py): say why cells wait
                    emit(Notice(surveyed.notice(context)))
                if confirm is not None:
                    confirm(context)  # counts the tokens first when they may pass its threshold
                index = share / "index.json"
                client = make_client(settings, budget, lambda m: emit(Notice(m, warning=True)))
                client.cache = cache or client.cache
                if follow is not None:  # the inputs the earlier run read, unchanged (or --force)
                    follow = follow.checked(context, emit)
                if not settings.cache_only:  # offline: no key needed
                    client.check_credentials()
                    client.warm_up()  # the HTTP client loads while the sandbox starts
                for warning in client.cost_limit_warnings():  # before any call: --max-cost off for these
                    emit(Notice(warning, warning=True))
                sandbox = make_sandbox(settings, share, emit)
                learn_servers(settings, probes, client, emit)
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
                    instructions=settings.instructions, windows=run_windows(settings, probes),
                    schema=settings.answer_schema, cite=settings.cite, follow=follow,
                    max_depth=settings.max_depth,
                )  # fmt: skip
                agent = Agent(task, client, repl, budget, emit)

                async def before_start() -> None:
                    """What the REPL's start waits for: the full pass of a surveyed input, or the
                    count of the context's tokens (the index's chars_per_token, the record); and
                    the memory it needs. Runs while the first model request is out."""
                    nonlocal announced
                    if context.pending is not None:
                        await asyncio.wrap_future(context.pending)
                        context.finish()
                    # Before any wait below: the agent takes agent.calls.recursion as it sends its first cell.
                    memory = sandbox_memory(settings, context)
                    sandbox.limits = dataclasses.replace(sandbox.limits, memory=memory)
                    children = recursion.for_run(settings, task, repl, client, budget, emit, memory)
                    agent.calls.recursion = children
                    if context.stats.est_tokens is None:
                        # Once the request is out: loading the tokenizer holds the GIL for ~0.3 s.
                        # Not for a follow-up: it runs the earlier cells, in this REPL, first.
                        if follow is None:
                            # Bounded: should anything ever need the REPL before the first request,
                            # the count goes ahead rather than wait forever (it is correct either way).
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(client.request_out(), REQUEST_OUT_WAIT_S)
                        await asyncio.to_thread(context.count_tokens)
                    announce(context, emit, run.id)
                    announced = True
                    context.write_index(index)

                result = asyncio.run(_drive(agent, repl, signals, before_start))
            finally:
                signals.hold()  # nothing interrupts the clean-up and the record from here on
                if context is not None and context.pending is None and not announced:
                    _announce_late(context, emit, run.id)  # the run ended before before_start did
                if context is not None:
                    context.cancel()  # a pass still running (load_pass.py) is stopped, and waited for
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


def announce(context: Context, emit: Emit, parent: str) -> None:
    """The loaded context in the record, and the secrets warning (counts and path:line only)."""
    emit(context_event(context, parent=parent))
    if context.secrets_warning:
        emit(Notice(context.secrets_warning, warning=True))


def _announce_late(context: Context, emit: Emit, parent: str) -> None:
    """announce() for a run that ended before its tokens were counted (an error, a limit, Ctrl-C):
    the record still names its input. A count that fails (the input went away) must not hide the
    run's own outcome."""
    try:
        context.count_tokens()
    except Exception:  # noqa: BLE001 - the record goes without the event
        return
    announce(context, emit, parent)


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
        time.time() - run.ts, usage.cache_hits, usage.cache_misses, usage.saved_tokens, usage.saved_cost_usd,
        parent=run.id,
    )  # fmt: skip


async def _drive(
    agent: Agent,
    repl: Repl,
    signals: Signals | None = None,
    before_start: Callable[[], Awaitable[None]] | None = None,
) -> RunResult:
    """Run the agent while the REPL starts (after `before_start`), always stop the sandbox; SIGTERM
    and SIGHUP interrupt. The record waits for `before_start` (a surveyed input's full pass) unless
    the run was interrupted."""
    task = asyncio.current_task()
    if signals is not None and task is not None:
        signals.watch(task)
    prepared = asyncio.ensure_future(before_start()) if before_start is not None else None
    starting = repl.begin(prepared)
    agent.budget.restart_clock()  # --timeout bounds the loop, not the load before it
    running = asyncio.ensure_future(agent.run())
    # A loop that ended without a model call: `before_start` waits for no first request then.
    running.add_done_callback(lambda _: agent.client.note_request_out())
    try:
        await asyncio.wait((running, starting), return_when=asyncio.FIRST_COMPLETED)
        if not running.done() and starting.exception() is not None:
            # The sandbox cannot start (or the input's pass failed): that is the run's error, and
            # there is no point waiting for a model reply no cell can run.
            running.cancel()
            await asyncio.wait((running,))
            await repl.ready()  # raises the start's error
        result = await running
        if prepared is not None:
            await prepared  # the record ends with the input's figures and digests, and its warning
        return result
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
        for left in (running, prepared):
            if left is not None and not left.done():
                left.cancel()
        await asyncio.wait((running,))  # the agent's own clean-up (an interrupted call) ends first
        await asyncio.shield(repl.close())
        await agent.client.aclose()


def _interrupted(agent: Agent) -> RunResult:
    return RunResult(
        agent.partial, ExitReason.INTERRUPTED, agent.budget.iterations, partial=True, message="interrupted"
    )
