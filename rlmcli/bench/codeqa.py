"""Four-choice questions about a real codebase: the source of the installed `rich` package.

The RLM paper's Table 1 uses LongBench-v2 CodeQA (Bai et al., 2024, arXiv 2412.15204), multiple
choice over a code repository; that data is not offline, so this family asks the same kind of
question about a codebase that is: `rich` (MIT licence, Will McGugan / Textualize), a dependency of
this project, read from its installed .py files (its data-table modules are left out). A context is
"### File: rich/<path>" sections in path order, the files chosen in a seeded order while they fit.
Gold comes from the AST of the included files only:
- defines: which file defines a top-level class or function (defined in exactly one package file);
- subclasses: how many classes anywhere in the included files name Y as a direct base (`Y`,
  `module.Y` or `Y[...]` all count);
- default: the default of a parameter of a function or method, as `ast.unparse` prints it;
- methods: how many functions are defined directly in a class body.
The prompt and the scorer are LongBench-v2's: choices "(A) ..", the reply "The correct answer is (X)",
parsed by its extract_answer (asterisks removed, "The correct answer is (X)" then "... is X"); the
letter must equal the gold letter. Gold depends on the installed rich version, recorded per row.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import char_budget, check_args, make_row, rng, sha256_text

TASK = "codeqa"
PACKAGE = "rich"
LETTERS = "ABCD"
KINDS = ("defines", "subclasses", "default", "methods")
STOCK_DEFAULTS = ("None", "True", "False", "0", "1", "''", "()", "-1", "'default'")
TEMPLATE = (
    "What is the correct answer to this question: {question}\n"
    "Choices:\n(A) {A}\n(B) {B}\n(C) {C}\n(D) {D}\n\n"
    'Format your response as follows: "The correct answer is (insert answer here)".'
)


@dataclass(frozen=True)
class SourceFile:
    path: str  # "rich/console.py"
    text: str
    tree: ast.Module


@functools.cache
def package_files() -> tuple[SourceFile, ...]:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the {PACKAGE} package is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    files = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        has_code = any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in ast.walk(tree))
        if not has_code and len(text) > 20000:  # generated tables (emoji codes, cell widths)
            continue
        files.append(SourceFile(f"{PACKAGE}/{path.relative_to(root).as_posix()}", text, tree))
    return tuple(files)


def section(f: SourceFile) -> str:
    return f"### File: {f.path}\n{f.text}\n"


def choose_files(seed: int, length: int, index: int, reserve: int) -> list[SourceFile]:
    files = list(package_files())
    rng("codeqa-files", seed, length, index).shuffle(files)
    budget, used, chosen = char_budget(length) - reserve, 0, []
    for f in files:
        if used + len(section(f)) + 1 <= budget:
            chosen.append(f)
            used += len(section(f)) + 1
    return sorted(chosen, key=lambda f: f.path)


def base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Subscript):
        return base_name(node.value)
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def _top_level(f: SourceFile) -> dict[str, str]:
    kinds = {ast.ClassDef: "class", ast.FunctionDef: "function", ast.AsyncFunctionDef: "function"}
    return {node.name: kinds[type(node)] for node in f.tree.body if type(node) in kinds}


def _near(gold: int, r: Any) -> list[str]:
    return [str(v) for v in r.sample([v for v in range(gold - 3, gold + 4) if v >= 0 and v != gold], 3)]


def _defines(files: list[SourceFile], r: Any) -> tuple[str, str, list[str]] | None:
    everywhere: dict[str, int] = {}
    for f in package_files():
        for name in _top_level(f):
            everywhere[name] = everywhere.get(name, 0) + 1
    options = sorted(
        (name, kind, f.path) for f in files for name, kind in _top_level(f).items() if everywhere[name] == 1
    )
    if not options:
        return None
    name, kind, path = r.choice(options)
    others = [f.path for f in files if f.path != path]
    if len(others) < 3:  # small contexts: fill with package files that do not define it either
        others += [f.path for f in package_files() if f.path != path and f.path not in others]
    return f"Which file defines the top-level {kind} `{name}`?", path, r.sample(sorted(others), 3)


def _subclasses(files: list[SourceFile], r: Any) -> tuple[str, str, list[str]] | None:
    counts: dict[str, int] = {}
    for f in files:
        for node in ast.walk(f.tree):
            if isinstance(node, ast.ClassDef):
                for base in {base_name(b) for b in node.bases} - {None}:
                    counts[base] = counts.get(base, 0) + 1
    if not counts:
        return None
    base = r.choice(sorted(counts))
    question = (
        f"In the provided code, how many classes name `{base}` directly among their base classes "
        f"(written `{base}`, `module.{base}` or `{base}[...]`)?"
    )
    return question, str(counts[base]), _near(counts[base], r)


def _functions(f: SourceFile) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level functions and methods of module-level classes whose qualname is unique in the file."""
    found: dict[str, list] = {}
    for node in f.tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found.setdefault(f"{node.name}.{item.name}", []).append(item)
    return {name: nodes[0] for name, nodes in found.items() if len(nodes) == 1}


def defaults(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, str]:
    args = fn.args
    positional = args.posonlyargs + args.args
    # Defaults align with the last positional parameters; kw_defaults has None for "no default".
    with_defaults = positional[len(positional) - len(args.defaults) :]
    out = {a.arg: ast.unparse(d) for a, d in zip(with_defaults, args.defaults, strict=True)}
    kw = zip(args.kwonlyargs, args.kw_defaults, strict=True)
    out.update({a.arg: ast.unparse(d) for a, d in kw if d is not None})
    return out


def _default(files: list[SourceFile], r: Any) -> tuple[str, str, list[str]] | None:
    options, pool = [], set(STOCK_DEFAULTS)
    for f in files:
        for qualname, fn in sorted(_functions(f).items()):
            for param, value in defaults(fn).items():
                if len(value) <= 60 and "\n" not in value:
                    options.append((f.path, qualname, param, value))
                    pool.add(value)
    if not options:
        return None
    path, qualname, param, value = r.choice(options)
    question = f"In `{path}`, what is the default value of the parameter `{param}` of `{qualname}`?"
    return question, value, r.sample(sorted(pool - {value}), 3)


def _methods(files: list[SourceFile], r: Any) -> tuple[str, str, list[str]] | None:
    options = []
    for f in files:
        names = [node.name for node in f.tree.body if isinstance(node, ast.ClassDef)]
        for node in f.tree.body:
            if isinstance(node, ast.ClassDef) and names.count(node.name) == 1:
                count = sum(isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) for item in node.body)
                options.append((f.path, node.name, count))
    if not options:
        return None
    path, name, count = r.choice(options)
    question = (
        f"How many functions are defined directly in the body of the class `{name}` in `{path}` "
        "(methods, properties and special methods each count once per `def`)?"
    )
    return question, str(count), _near(count, r)


BUILDERS = {"defines": _defines, "subclasses": _subclasses, "default": _default, "methods": _methods}


def generate(n: int, length: int, seed: int) -> list[dict[str, Any]]:
    check_args(n, length)
    version = importlib.metadata.version(PACKAGE)
    rows = []
    for index in range(n):
        files = choose_files(seed, length, index, reserve=1200)
        if not files:
            raise ValueError(f"length {length} is too small for one file of {PACKAGE}")
        r = rng(TASK, seed, length, index)
        order = KINDS[index % len(KINDS) :] + KINDS[: index % len(KINDS)]
        for kind in order:
            built = BUILDERS[kind](files, r)
            if built is not None:
                break
        else:
            raise ValueError("no question could be asked about the chosen files")
        question, gold, wrong = built
        options = [gold, *wrong]
        r.shuffle(options)
        letter = LETTERS[options.index(gold)]
        choices = dict(zip(LETTERS, options, strict=True))
        context = "\n".join(section(f) for f in files)
        meta = {
            "kind": kind,
            "package": PACKAGE,
            "package_version": version,
            "files": [f.path for f in files],
            "choices": choices,
            "gold_text": gold,
            "source_sha256": sha256_text(context),
            "scorer": "longbench_v2_choice",
        }
        text = TEMPLATE.format(question=question, **choices)
        rows.append(make_row(TASK, index, seed, length, context, text, [letter], meta))
    return rows


def extract_answer(response: str) -> str | None:
    """LongBench-v2 (THUDM/LongBench, pred.py) extract_answer."""
    response = response.replace("*", "")
    match = re.search(r"The correct answer is \(([A-D])\)", response)
    if match:
        return match.group(1)
    match = re.search(r"The correct answer is ([A-D])", response)
    return match.group(1) if match else None


def score(output: str, row: dict[str, Any]) -> float:
    return 1.0 if extract_answer(output) == str(row["answer"][0]) else 0.0
