"""`rlm bench`: list the task families, generate task sets, run methods on them, report the scores.

Mounted by cli/app.py as `app.add_typer(bench_app, name="bench")`. Only typer, the standard library and
the shared options (cli/options.py) at module level: this module is imported whenever `rlm --help` runs, which must not
pay for litellm, rich tables or the generators' data.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from . import options as o
from .guard import guarded, say

bench_app = typer.Typer(
    help="Long-context benchmarks: generate task sets, run rlm / rlm-no-subcalls / direct on them, "
    "and compare scores, cost and latency (docs/BENCHMARKS.md).",
    no_args_is_help=True,
)

TASKS, OUTPUT = "Tasks", o.OUTPUT  # the Model, Limits and Sandbox panels come with the shared options


# `bench run TASK` (a family name instead of a file): a small set, enough to smoke-test a setup
# (under --profile paper: the paper's n and length for the family, rlmcli/bench/profile.py).
DEFAULT_SEED = 0
PROFILE_HELP = (
    "cli: this tool's setup (lengths in characters / 4). paper: the RLM paper's, so numbers can stand "
    "beside its Table 1: OOLONG's line counts and validated TREC subset, real token counts, the paper's "
    "task descriptions and answer forms (docs/BENCHMARKS.md)."
)
Profile = Annotated[str, typer.Option("--profile", help=PROFILE_HELP, rich_help_panel=TASKS)]


def load_tasks(
    source: str, n: int | None, length: int | None, seed: int | None, profile: str = "cli"
) -> list[dict[str, Any]]:
    """Rows from a JSONL file, or a freshly generated set when `source` names a task family."""
    from ..bench import FAMILIES, generate, read_jsonl
    from ..bench.profile import default_length, default_n
    from ..errors import InputError

    path = Path(source)
    if path.is_file():
        if n is not None or length is not None or seed is not None:
            raise InputError("--n, --length and --seed apply to a TASK name, not to a tasks file")
        try:
            rows = read_jsonl(path)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the tasks file {path}: {exc}") from exc
        for number, row in enumerate(rows, 1):
            if not isinstance(row, dict) or not {"id", "task", "context", "question"} <= row.keys():
                raise InputError(f"{path} line {number} is not a benchmark row (see `rlm bench generate`)")
        if not rows:
            raise InputError(f"{path} holds no benchmark rows")
        return rows
    if source in FAMILIES:
        n = default_n(source, profile) if n is None else n
        length = default_length(source, profile) if length is None else length
        return generate(source, n, length, DEFAULT_SEED if seed is None else seed, profile)
    raise InputError(
        f"{source!r} is neither a tasks file nor a task family",
        hint=f"pass a file from `rlm bench generate`, or one of: {', '.join(FAMILIES)}",
    )


def parse_methods(values: list[str], profile: str = "cli") -> list[str]:
    """`--method rlm --method direct` or `--method rlm,direct`; order kept, duplicates dropped. None
    given: the profile's list (`rlm`; under paper `direct,rlm-d0,rlm-d1,rlm-d2`)."""
    from ..bench.profile import default_methods
    from ..bench.runner import METHODS
    from ..errors import InputError

    values = values or default_methods(profile)
    methods: list[str] = []
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if name not in METHODS:
                raise InputError(f"unknown method {name!r}", hint=f"choose from: {', '.join(METHODS)}")
            if name not in methods:
                methods.append(name)
    return methods


@bench_app.command("list")
@guarded
def bench_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    stats: Annotated[Path | None, typer.Option("--stats", metavar="FILE.jsonl",
        help="Instead, describe a task set: rows, context sizes and, for the OOLONG families, lines, "
             "users and gold pairs per context.")] = None,
) -> None:  # fmt: skip
    """The task families: what each measures, where its data comes from, how it is scored."""
    from ..bench import FAMILIES

    if stats is not None:
        from ..bench.stats import describe

        for line in describe(load_tasks(str(stats), None, None, None)):
            typer.echo(line)
        return
    if as_json:
        keys = ("name", "description", "provenance", "scorer")
        typer.echo(json.dumps([{k: getattr(f, k) for k in keys} for f in FAMILIES.values()], indent=2))
        return
    for family in FAMILIES.values():
        typer.echo(f"{family.name}\n  {family.description}")
        typer.echo(f"  source: {family.provenance}\n  scorer: {family.scorer}\n")


@bench_app.command("generate")
@guarded
def bench_generate(
    task: Annotated[str, typer.Argument(help="Task family (see `rlm bench list`).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write, or - for stdout.")],
    n: Annotated[int | None, typer.Option("--n", show_default=False,
        help="Number of rows per length. \\[default: 10; paper: the paper's, e.g. 50 for oolong]")] = None,
    length: Annotated[int | None, typer.Option(show_default=False,
        help="Target tokens of context + question (chars / 4; paper: real tokens, OOLONG's rule for "
             "oolong and oolong-pairs). \\[default: 8192; paper: the Table 1 length]")] = None,
    seed: Annotated[int, typer.Option(help="Seed; the same arguments give the same bytes.")] = 0,
    profile: Annotated[str, typer.Option("--profile", help=PROFILE_HELP)] = "cli",
    sweep: Annotated[bool, typer.Option("--sweep",
        help="Every length of the paper's sweep for TASK (Figure 1: 2^13..2^20 for sniah, 2^13..2^18 for "
             "oolong and oolong-pairs), N rows each, in one file.")] = False,
) -> None:  # fmt: skip
    """Write N rows of TASK, each with a context of about LENGTH tokens, its question and gold answer."""
    from .. import bench
    from ..bench.profile import default_n, lengths
    from ..bench.stats import describe
    from ..errors import UsageError

    if profile not in bench.PROFILES:
        raise UsageError(f"unknown --profile {profile!r}", hint=f"choose one of: {', '.join(bench.PROFILES)}")
    if sweep and length is not None:
        raise UsageError("--sweep and --length exclude each other")
    bench.family(task)  # an unknown family is an error before any work
    count = default_n(task, profile) if n is None else n
    rows = [
        row
        for size in lengths(task, profile, length, sweep)
        for row in bench.generate(task, count, size, seed, profile)
    ]
    if str(out) == "-":
        for row in rows:
            sys.stdout.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
        return
    bench.write_jsonl(rows, out)
    say(f"wrote {len(rows)} {task} rows ({profile} profile) to {out}")
    for line in describe(rows):
        say(line)


RUN_HELP = (
    "Run each method on each task row and append a scored result per (row, method) to OUT.\n\n"
    "Each result holds the score, tokens, cost, latency, exit reason, iterations, sub-calls and the "
    "trace path. A row's own failure (provider, sandbox) becomes an error row with score 0; a missing "
    "API key stops the bench before any row (exit 4). The limits apply to each row. Ctrl-C keeps every "
    "finished row: run the same command again to resume."
)
REPORT_HELP = (
    "Compare methods: mean score with a bootstrap 95% CI, cost per query and median latency, overall, "
    "by task family and by context length; and a plot of mean score vs context length."
)


@bench_app.command(
    "run",
    help=RUN_HELP,
    epilog="Examples:\n\n"
    "  rlm bench run oolong.jsonl --method rlm --method direct --model openai/gpt-5 "
    "--sub-model openai/gpt-5-mini --out results.jsonl\n\n"
    "  rlm bench run sniah --method rlm,rlm-no-subcalls,direct --api-base http://127.0.0.1:8000/v1 "
    "--model openai/my-model --out smoke.jsonl",
)
@guarded
def bench_run(
    source: Annotated[str, typer.Argument(metavar="FILE.jsonl|TASK", show_default=False,
        help="Tasks from `rlm bench generate`, or a family name to generate a small set "
             "(--n 10 --length 8192 --seed 0 unless given).")],
    out: Annotated[Path, typer.Option("--out", "-o", rich_help_panel=OUTPUT,
        help="Results JSONL. Appended to; rows already in it are skipped (resume). "
             "Traces go to OUT.traces/.")],
    method: Annotated[list[str] | None, typer.Option("--method", rich_help_panel=TASKS,
        help="rlm, rlm-no-subcalls (the REPL without llm_query) or direct (the whole context in one "
             "prompt to --model); repeatable or comma-separated. \\[default: rlm; paper: "
             "direct,rlm-d0,rlm-d1,rlm-d2]")] = None,
    profile: Profile = "cli",
    n: Annotated[int | None, typer.Option("--n", rich_help_panel=TASKS,
        help="Rows to generate for a TASK. \\[default: 10; paper: the paper's]")] = None,
    length: Annotated[int | None, typer.Option(rich_help_panel=TASKS,
        help="Tokens per row for a TASK. \\[default: 8192; paper: the Table 1 length]")] = None,
    seed: Annotated[int | None, typer.Option(rich_help_panel=TASKS, help="Seed for a TASK.")] = None,
    limit: Annotated[int | None, typer.Option(rich_help_panel=TASKS,
        help="Only the first LIMIT rows.")] = None,
    concurrency: Annotated[int, typer.Option(rich_help_panel=TASKS, help="Rows in flight at once.")] = 1,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", rich_help_panel=TASKS,
        help="Redo rows whose earlier result is an error (provider, sandbox); the new result wins.")] = False,
    model: o.Model = None,
    sub_model: o.SubModel = None,
    api_base: o.ApiBase = None,
    sub_api_base: o.SubApiBase = None,
    context_window: Annotated[int | None, typer.Option(rich_help_panel=o.MODEL,
        help="direct: the model's input window in tokens; longer contexts are cut to fit. \\[default: "
             "litellm's table, else 128000]")] = None,
    request_timeout: o.RequestTimeout = None,
    max_retries: o.MaxRetries = None,
    price: o.Price = None,
    root_window: o.RootWindow = None,
    sub_window: o.SubWindow = None,
    max_iterations: o.MaxIterations = None,
    max_cost: o.MaxCost = None,
    max_tokens: o.MaxTokens = None,
    timeout: o.Timeout = None,
    sandbox: o.Sandbox = None,
    image: o.Image = None,
    no_cache: o.NoCache = False,
    cite: Annotated[str | None, typer.Option("--cite", rich_help_panel=TASKS,
        help="rlm methods: off, check or require, as for `rlm ask`; the report shows citation precision "
             "and recall. \\[default: the config's (check); paper: off, the paper's prompt]")] = None,
    as_json: Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT,
        help="Print the summary as JSON instead of a table.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=OUTPUT,
        help="No progress lines on stderr.")] = False,
) -> None:  # fmt: skip
    explicit = dict(
        model=model, sub_model=sub_model, api_base=api_base, sub_api_base=sub_api_base,
        request_timeout=request_timeout, max_retries=max_retries, max_iterations=max_iterations,
        max_cost=max_cost, max_tokens=max_tokens, timeout=timeout, sandbox=sandbox, image=image,
        root_window=root_window, sub_window=sub_window, no_cache=no_cache or None, price=price,
        # The paper's prompt teaches no cite(): under --profile paper citations are off unless asked for.
        cite=cite if cite is not None or profile != "paper" else "off",
    )  # fmt: skip

    from ..bench import report, runner
    from ..errors import UsageError
    from ..settings import resolve

    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    if context_window is not None and context_window < 1:
        raise UsageError("--context-window must be at least 1")
    from .. import bench

    if profile not in bench.PROFILES:
        raise UsageError(f"unknown --profile {profile!r}", hint=f"choose one of: {', '.join(bench.PROFILES)}")
    methods = parse_methods(method or [], profile)
    # Each family scores its own answer format: a --schema from the config must not reach the rows.
    settings = dataclasses.replace(resolve(explicit), schema=None)
    runner.preflight(settings, methods)  # e.g. a missing key: exit 4 before generating anything
    rows = load_tasks(source, n, length, seed, profile)[:limit]
    mixed = {str(row.get("profile", "cli")) for row in rows} - {profile}
    if mixed and not quiet:
        say(f"note: the tasks were generated with --profile {', '.join(sorted(mixed))}, not {profile}")
    options = runner.BenchOptions(methods, out, concurrency, context_window, retry_errors)

    def progress(result: dict, done: int, total: int) -> None:
        if quiet:
            return
        extra = ", context cut" if result.get("truncated") else ""
        extra += f": {result['error']}" if result.get("error") else ""
        say(
            f"[{done}/{total}] {result['id']} {result['method']}: score {result['score']:.2f}, "
            f"{result['exit_reason']}, {result['latency_s']:.1f}s, ${result['cost_usd']:.4f}{extra}"
        )

    if not quiet:
        say(f"{len(rows)} rows × {len(methods)} method(s) ({', '.join(methods)}), model {settings.model}")
    try:
        outcome = runner.run_bench(rows, settings, options, progress, None if quiet else say)
    except KeyboardInterrupt:
        say(f"stopped; finished rows are in {out}: run the same command again to resume")
        raise
    if not quiet and outcome.skipped:
        say(f"skipped {outcome.skipped} (row, method) pair(s) already in {out}")
    summary = report.build_report(outcome.results) if outcome.results else {}
    if as_json:
        errors = sum(report.is_error(r) for r in outcome.ran)
        payload = {"results": str(out), "ran": len(outcome.ran), "skipped": outcome.skipped,
                   "errors": errors, "report": summary}  # fmt: skip
        typer.echo(json.dumps(payload, ensure_ascii=False, default=str))
    elif summary:
        report.print_report(summary, sections=("overall", "by_family"))


@bench_app.command("report", help=REPORT_HELP)
@guarded
def bench_report(
    results: Annotated[list[Path], typer.Argument(metavar="RESULTS.jsonl...", show_default=False,
        help="Results of `rlm bench run` (several files are merged).")],
    out: Annotated[Path | None, typer.Option("--out", "-o",
        help="Plot of score vs context length: .svg, or .png with matplotlib (the `plot` extra). "
             "\\[default: the first RESULTS with .svg]")] = None,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Write no plot.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the aggregated numbers as JSON.")] = False,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:  # fmt: skip

    from ..bench import report
    from ..errors import UsageError

    if resamples < 1:
        raise UsageError("--resamples must be at least 1")
    rows = report.load_results(results)
    summary = report.build_report(rows, resamples, seed)
    plot = None
    if not no_plot:
        target = out or results[0].with_suffix(".svg")
        plot = report.write_plot(summary["by_family_length"], target, say)
    if as_json:
        typer.echo(json.dumps({**summary, "plot": str(plot) if plot else None}, default=str))
    else:
        report.print_report(summary)
    if plot is not None:
        say(f"plot written to {plot}")
