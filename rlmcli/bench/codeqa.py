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
A bare letter (`B`, `(B)`, `**B.**`) is accepted too: an RLM's `FINAL(B)` is the same choice, and
parsing only LongBench's sentence would score it 0 against `direct`.

`--profile paper` asks in the RLM paper's CodeQA wording (Appendix E.4): choices indexed 0-3 and
"answer with exactly one number choice"; the gold is the index and the scorer takes a bare index
(`2`, `(2)`, `Answer: 2`) or LongBench's sentence with the index. Contexts are sized so that context
+ question are within `length` real tokens. Gold locations (`meta.gold_lines`, context line
ranges): the definition sites a question rests on (the `class`/`def` line; for a default, the
`def` header; for a method count, each `def` in the class body; for subclasses, each subclass).
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

from .common import char_budget, check_args, fit_tokens, make_row, rng, sha256_text

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
PAPER_TEMPLATE = (  # Appendix E.4
    "You are a helpful assistant that can answer questions about code repositories. You must answer the "
    "given question: {question} Based on the stored context, answer with exactly one number choice using "
    "only the choices provided:\n0: {A}\n1: {B}\n2: {C}\n3: {D}\n(indexed from 0 to 3)."
)
# Where a gold answer rests: (file path, first line, last line) in that file.
Site = tuple[str, int, int]
Built = tuple[str, str, list[str], list[Site]]


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


def choose_files(
    seed: int, length: int, index: int, reserve: int, chars: int | None = None
) -> list[SourceFile]:
    files = list(package_files())
    rng("codeqa-files", seed, length, index).shuffle(files)
    budget, used, chosen = (char_budget(length) if chars is None else chars) - reserve, 0, []
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


def _def_line(f: SourceFile, name: str) -> int:
    return next(n.lineno for n in f.tree.body if getattr(n, "name", None) == name)


def _defines(files: list[SourceFile], r: Any) -> Built | None:
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
    line = _def_line(next(f for f in files if f.path == path), name)
    question = f"Which file defines the top-level {kind} `{name}`?"
    return question, path, r.sample(sorted(others), 3), [(path, line, line)]


def _subclasses(files: list[SourceFile], r: Any) -> Built | None:
    counts: dict[str, int] = {}
    sites: dict[str, list[Site]] = {}
    for f in files:
        for node in ast.walk(f.tree):
            if isinstance(node, ast.ClassDef):
                for base in {base_name(b) for b in node.bases} - {None}:
                    counts[base] = counts.get(base, 0) + 1
                    sites.setdefault(base, []).append((f.path, node.lineno, node.lineno))
    if not counts:
        return None
    base = r.choice(sorted(counts))
    question = (
        f"In the provided code, how many classes name `{base}` directly among their base classes "
        f"(written `{base}`, `module.{base}` or `{base}[...]`)?"
    )
    return question, str(counts[base]), _near(counts[base], r), sites[base]


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


def _default(files: list[SourceFile], r: Any) -> Built | None:
    options, pool = [], set(STOCK_DEFAULTS)
    for f in files:
        for qualname, fn in sorted(_functions(f).items()):
            # The `def` header: from its line to the line before the body (the same line if one-line).
            header = (f.path, fn.lineno, max(fn.lineno, fn.body[0].lineno - 1))
            for param, value in defaults(fn).items():
                if len(value) <= 60 and "\n" not in value:
                    options.append((f.path, qualname, param, value, header))
                    pool.add(value)
    if not options:
        return None
    path, qualname, param, value, header = r.choice(options)
    question = f"In `{path}`, what is the default value of the parameter `{param}` of `{qualname}`?"
    return question, value, r.sample(sorted(pool - {value}), 3), [header]


def _methods(files: list[SourceFile], r: Any) -> Built | None:
    options = []
    for f in files:
        names = [node.name for node in f.tree.body if isinstance(node, ast.ClassDef)]
        for node in f.tree.body:
            if isinstance(node, ast.ClassDef) and names.count(node.name) == 1:
                defs = [
                    item for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                ]
                sites = [(f.path, d.lineno, d.lineno) for d in defs] or [(f.path, node.lineno, node.lineno)]
                options.append((f.path, node.name, len(defs), sites))
    if not options:
        return None
    path, name, count, sites = r.choice(options)
    question = (
        f"How many functions are defined directly in the body of the class `{name}` in `{path}` "
        "(methods, properties and special methods each count once per `def`)?"
    )
    return question, str(count), _near(count, r), sites


BUILDERS = {"defines": _defines, "subclasses": _subclasses, "default": _default, "methods": _methods}


def generate(n: int, length: int, seed: int, profile: str = "cli") -> list[dict[str, Any]]:
    check_args(n, length, profile)
    version = importlib.metadata.version(PACKAGE)
    if profile == "paper":
        return [
            fit_tokens(
                lambda chars, i=index: _row(i, length, seed, version, chars, profile),
                lambda row: f"{row['context']}\n{row['question']}",
                length,
            )
            for index in range(n)
        ]
    return [_row(index, length, seed, version, None, profile) for index in range(n)]


def _row(index: int, length: int, seed: int, version: str, chars: int | None, profile: str) -> dict[str, Any]:
    files = choose_files(seed, length, index, reserve=1200, chars=chars)
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
    question, gold, wrong, sites = built
    options = [gold, *wrong]
    r.shuffle(options)
    position = options.index(gold)
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
        "gold_lines": _context_lines(context, sites),
    }
    if profile == "paper":
        meta["answer_form"] = "index"
        text, answer = PAPER_TEMPLATE.format(question=question, **choices), str(position)
    else:
        text, answer = TEMPLATE.format(question=question, **choices), LETTERS[position]
    return make_row(TASK, index, seed, length, context, text, [answer], meta, profile)


def _context_lines(context: str, sites: list[Site]) -> list[list[int]]:
    """File line ranges as context line ranges: line j of a file is j lines below its header."""
    out = []
    for path, start, end in sites:
        header = context[: context.index(f"### File: {path}\n")].count("\n") + 1
        out.append([header + start, header + end])
    return sorted(out)


def extract_answer(response: str) -> str | None:
    """LongBench-v2 (THUDM/LongBench, pred.py) extract_answer."""
    response = response.replace("*", "")
    match = re.search(r"The correct answer is \(([A-D])\)", response)
    if match:
        return match.group(1)
    match = re.search(r"The correct answer is ([A-D])", response)
    return match.group(1) if match else None


_BARE_LETTER = re.compile(r"\(?([A-D])\)?\.?")
_BARE_INDEX = re.compile(r"(?:(?:the )?(?:answer|choice)(?: is)?\s*:?\s*)?\(?([0-3])\)?\.?", re.IGNORECASE)


def _bare(output: str) -> str:
    """The output less asterisks, surrounding whitespace, quotes and backticks."""
    return output.replace("*", "").strip().strip("`'\"").strip()


def extract_choice(output: str, form: str = "letter") -> str | None:
    """The choice an output names: LongBench-v2's sentence first, else the whole output as a bare
    letter (`B`, `(B)`, `B.`) or, for the paper's prompt, a bare index (`2`, `(2)`, `Answer: 2`)."""
    if form == "index":
        found = re.search(r"The correct answer is \(?([0-3])\)?", output.replace("*", ""))
        if found:
            return found.group(1)
        match = _BARE_INDEX.fullmatch(_bare(output))
        return match.group(1) if match else None
    letter = extract_answer(output)
    if letter is not None:
        return letter
    match = _BARE_LETTER.fullmatch(_bare(output))
    return match.group(1) if match else None


def score(output: str, row: dict[str, Any]) -> float:
    form = str(row.get("meta", {}).get("answer_form", "letter"))
    return 1.0 if extract_choice(output, form) == str(row["answer"][0]) else 0.0
