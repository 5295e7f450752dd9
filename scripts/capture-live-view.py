#!/usr/bin/env python3
"""Regenerate docs/live-view.svg: the Rich live view of a realistic (scripted) run.

    python scripts/capture-live-view.py [OUT.svg]

Two iterations over a directory of logs: the root model looks at the file index, then fans 64
chunks out to a sub-model with llm_query_batched and answers. The transient footer (sub-call bar,
tokens, cost, time) is captured once, as it looked halfway through the batch.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from rich.console import Console

from rlmcli.events import (
    CellFinished,
    CellStarted,
    ContextLoaded,
    Event,
    FinalAnswer,
    IterationStarted,
    ModelCall,
    RunFinished,
    RunStarted,
    SubcallProgress,
)
from rlmcli.view.live import LiveView

ROOT, SUB = "openai/gpt-5-mini", "openai/gpt-5-nano"
QUESTION = "Which component logs the most errors, and what is the most likely root cause?"
REPLY_1 = """The logs are too big to read directly. I'll first look at which files there are and how
the lines are distributed over components.

```repl
print(len(context), "chars in", len(files), "files")
for path in sorted(files, key=lambda p: -len(files[p]))[:5]:
    print(f"{len(files[path]):>12,}  {path}")
```
"""
OUTPUT_1 = """48231127 chars in 16 files
  16,842,210  Thunderbird/Thunderbird_2k.log
   9,113,404  BGL/BGL_2k.log
   6,020,987  HDFS/HDFS_2k.log
   4,511,302  Hadoop/Hadoop_2k.log
   3,290,110  Spark/Spark_2k.log
"""
REPLY_2 = """Each file mixes many components. I'll split the whole context into 64 chunks and ask a
sub-model to count ERROR/FATAL lines per component in each, then aggregate the counts.

```repl
import json
from collections import Counter
step = len(context) // 64 + 1
chunks = [context[i:i + step] for i in range(0, len(context), step)]
prompt = "Count ERROR and FATAL lines per component. Reply with JSON {component: count}.\\n\\n"
replies = llm_query_batched([prompt + chunk for chunk in chunks])
counts = Counter()
for reply in replies:
    counts.update(json.loads(reply))
print(counts.most_common(3))
```
"""
OUTPUT_2 = "[('dfs.DataNode', 4127), ('kernel', 2210), ('RAS KERNEL', 1904)]\n"
ANSWER = (
    "dfs.DataNode logs the most errors (4,127 ERROR/FATAL lines, 41% of all). Nearly all are\n"
    '"Got exception while serving blk_... to /10.251.x.x: java.io.IOException: Connection reset\n'
    'by peer" — clients dropping block transfers mid-stream, most likely a flaky top-of-rack switch\n'
    "(they cluster on nodes 10.251.30.x–10.251.43.x within the same minutes)."
)


def run_events(batch: int = 64, concurrency: int = 16) -> tuple[list[Event], int]:
    """The run's events, and the index of the event after which to capture the live footer."""
    t = 1_700_000_000.0
    run = RunStarted(QUESTION, ROOT, SUB, "docker", inputs=["loghub/"], ts=t)
    summary = "context: 16 files, 46.0 MB, 512,604 lines, ~12.1M tokens; skipped 3 (2 binary, 1 hidden)"
    events: list[Event] = [run, ContextLoaded(summary, "dir", parent=run.id, ts=t + 0.4)]
    it1 = IterationStarted(1, parent=run.id, ts=t + 0.9)
    cell1 = CellStarted(1, REPLY_1.split("```repl\n")[1].split("```")[0], parent=it1.id, ts=t + 4.1)
    events += [
        it1,
        ModelCall("root", ROOT, 3412, 188, 0.00123, 3.2, None, REPLY_1, parent=it1.id, ts=t + 4.1),
        cell1,
        CellFinished(1, OUTPUT_1, None, 0.08, parent=cell1.id, ts=t + 4.2),
    ]
    it2 = IterationStarted(2, parent=run.id, ts=t + 4.3)
    cell2 = CellStarted(2, REPLY_2.split("```repl\n")[1].split("```")[0], parent=it2.id, ts=t + 9.0)
    events += [
        it2,
        ModelCall("root", ROOT, 4020, 402, 0.00181, 4.7, None, REPLY_2, parent=it2.id, ts=t + 9.0),
        cell2,
        (first := SubcallProgress(batch, 0, 0, concurrency, parent=cell2.id, ts=t + 9.1)),
    ]
    capture_at = 0
    for done in range(1, batch + 1):
        ts = t + 9.1 + done * 0.19
        events.append(ModelCall("sub", SUB, 48_210, 61, 0.00243, 2.8, parent=cell2.id, ts=ts))
        events.append(
            SubcallProgress(
                batch, done, 0, min(batch - done, concurrency), batch=first.id, parent=cell2.id, ts=ts
            )
        )
        if done == 40:
            capture_at = len(events)
    end = t + 9.1 + batch * 0.19 + 0.05
    events += [
        CellFinished(2, OUTPUT_2, None, end - (t + 9.0), parent=cell2.id, ts=end),
        FinalAnswer(ANSWER, parent=run.id, ts=end + 0.1),
    ]
    calls = [e for e in events if isinstance(e, ModelCall)]
    tokens_in, tokens_out = sum(e.prompt_tokens for e in calls), sum(e.completion_tokens for e in calls)
    cost = sum(e.cost_usd or 0.0 for e in calls)
    elapsed = end + 0.1 - t
    usage = dict(prompt_tokens=tokens_in, completion_tokens=tokens_out, cost_usd=cost, elapsed_s=elapsed)
    events.append(
        RunFinished("final", ANSWER, iterations=2, subcalls=batch, **usage, parent=run.id, ts=end + 0.1)
    )
    return events, capture_at


def main() -> None:
    default = Path(__file__).resolve().parents[1] / "docs" / "live-view.svg"
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    console = Console(
        record=True, width=100, file=io.StringIO(), force_terminal=True, color_system="truecolor"
    )
    view = LiveView(console=console, live=False)
    events, capture_at = run_events()
    for n, event in enumerate(events, 1):
        view(event)
        if n == capture_at:
            console.print(view.output.footer())
    view.close()
    console.save_svg(str(out), title=f'rlm ask loghub/ "{QUESTION[:40]}…"')
    print(out)


if __name__ == "__main__":
    main()
