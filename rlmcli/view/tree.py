"""The tree of a recursive run (rlm_query children), folded from its events for the live view.

Each node is the root run or one child RLM: its depth, turns, tokens, cost and state. A child's
events carry its depth and descend from its ChildStarted, whose parent is the cell that called it;
so each event is owned by the node its parent belongs to. Tokens and cost count a node's own calls
while it runs, then (ChildFinished) everything it and its children spent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import events as ev
from ..errors import ExitReason
from ..text import plural


@dataclass
class Node:
    label: str  # "root", "child 2", "child 2.1"
    depth: int
    query: str = ""
    iterations: int = 0
    tokens: int = 0
    cost: float = 0.0
    cost_known: bool = True
    state: str = "running"  # running, done, or why it stopped (an exit reason)
    children: list[Node] = field(default_factory=list)
    cell: str | None = None  # the id of the cell that started it

    def usage(self) -> str:
        cost = f"${self.cost:.4f}" if self.cost_known else "cost unknown"
        return f"{self.tokens:,} tokens  {cost}"


class Tree:
    def __init__(self) -> None:
        self.root = Node("root", 0)
        self.owner: dict[str, Node] = {}  # event id -> the child node it belongs to (root: absent)
        self.by_start: dict[str, Node] = {}  # ChildStarted id -> its node
        self.running = 0

    @property
    def grown(self) -> bool:
        return bool(self.root.children)

    def update(self, event: ev.Event) -> Node | None:
        """Fold one event in; the node a ChildStarted or ChildFinished is about, else None."""
        owner = self.owner.get(event.parent or "", self.root)
        if isinstance(event, ev.ChildStarted):
            number = len(owner.children) + 1
            label = f"child {number}" if owner is self.root else f"{owner.label}.{number}"
            node = Node(label, event.depth, event.query, cell=event.parent)
            owner.children.append(node)
            self.owner[event.id] = self.by_start[event.id] = node
            self.running += 1
            return node
        if isinstance(event, ev.ChildFinished):
            node = self.by_start.get(event.parent or "")
            if node is None:
                return None
            node.state = "done" if event.exit_reason == ExitReason.FINAL else event.exit_reason
            node.iterations, node.tokens, node.cost = event.iterations, event.tokens, event.cost_usd
            self.running -= 1
            return node
        if event.depth > 0:
            self.owner[event.id] = owner
        elif owner is not self.root:  # a depth-0 event under a child's scope: not ours to place
            return None
        if isinstance(event, ev.IterationStarted):
            owner.iterations = event.iteration
        elif isinstance(event, ev.ModelCall) and not event.cached:
            owner.tokens += event.prompt_tokens + event.completion_tokens
            owner.cost += event.cost_usd or 0.0
            owner.cost_known = owner.cost_known and event.cost_usd is not None
        return None

    def rows(self) -> list[tuple[str, Node]]:
        """(the node's name with its branch, the node), depth first."""
        out: list[tuple[str, Node]] = []

        def walk(node: Node, indent: str) -> None:
            out.append((f"{indent}`- {node.label}" if node.depth else node.label, node))
            for child in node.children:
                walk(child, indent + ("   " if node.depth else ""))

        walk(self.root, "")
        return out

    def lines(self) -> list[str]:
        """The tree as aligned text columns: node, depth, turns, tokens, cost, state."""
        rows = self.rows()
        width = max(len(name) for name, _ in rows)
        return [
            f"{name.ljust(width)}  depth {node.depth}  {plural(node.iterations, 'iteration')}  "
            f"{node.usage()}  {node.state}"
            for name, node in rows
        ]


def finished_line(node: Node, event: ev.ChildFinished) -> str:
    """What a plain view says when a child ends."""
    how = "done" if event.exit_reason == ExitReason.FINAL else f"stopped ({event.exit_reason})"
    line = (
        f"{node.label} (depth {node.depth}): {how}, {plural(event.iterations, 'iteration')}, "
        f"{event.tokens:,} tokens, ${event.cost_usd:.4f}, {event.elapsed_s:.1f}s"
    )
    return line + (f": {event.message}" if event.message and how != "done" else "")
