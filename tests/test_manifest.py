"""The manifest tells the truth: what rlmcli/ imports is what pyproject.toml declares, and every
module of the installed package imports.

Read from the source with `ast` (lazy imports inside functions count: they run too), mapped from
import names to distributions by the installed metadata (google-re2 is imported as `re2`).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "rlmcli"
TOOL_EXTRAS = {"test"}  # extras of tools that run the code, not imported by it


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them: `Google_RE2` == `google-re2`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return normalise(match.group(1))


def top_level_imports(path: Path) -> set[str]:
    """The top-level names `path` imports (absolute imports only: relative ones are rlmcli's own)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party(names: set[str]) -> set[str]:
    return {name for name in names if name not in sys.stdlib_module_names and name != "rlmcli"}


def imported_by_package() -> dict[str, set[str]]:
    """Third-party top-level module -> the files of rlmcli/ that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in third_party(top_level_imports(path)):
            found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def distribution_of(module: str, installed: dict[str, list[str]]) -> str:
    # An optional extra may not be installed here; its import name is then taken as its name.
    return normalise(installed.get(module, [module])[0])


def manifest() -> tuple[set[str], set[str]]:
    """(required dependencies, dependencies of the optional extras the code imports), normalised."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    required = {requirement_name(r) for r in project["dependencies"]}
    extras = project.get("optional-dependencies", {})
    optional = {
        requirement_name(r) for extra, reqs in extras.items() if extra not in TOOL_EXTRAS for r in reqs
    }
    return required, optional


def test_the_walker_sees_lazy_and_dotted_imports(tmp_path: Path):
    source = tmp_path / "m.py"
    source.write_text(
        "import os, yarl.helpers\nfrom aiohttp.helpers import x\nfrom . import sibling\n"
        "def f():\n    import re2\n    from .x import y\n"
    )
    assert third_party(top_level_imports(source)) == {"yarl", "aiohttp", "re2"}


def test_every_import_is_declared_and_every_dependency_imported():
    imported = imported_by_package()
    installed = packages_distributions()
    required, optional = manifest()
    by_distribution: dict[str, set[str]] = {}
    for module, files in imported.items():
        by_distribution.setdefault(distribution_of(module, installed), set()).update(files)

    undeclared = {
        dist: sorted(files) for dist, files in by_distribution.items() if dist not in required | optional
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    unused = sorted((required | optional) - by_distribution.keys())
    assert not unused, f"declared in pyproject.toml but imported nowhere in rlmcli/: {unused}"
    # The known cases, so a walker that found nothing could not pass.
    assert {"litellm", "google-re2", "h11", "typer"} <= by_distribution.keys()
    # The direct path's transport is h11 (model/http1.py): aiohttp, installed for litellm, and its
    # yarl are no dependencies of rlm's own.
    assert not {"aiohttp", "yarl"} & (by_distribution.keys() | required)
    assert distribution_of("re2", installed) == "google-re2"


def test_the_repl_server_uses_the_standard_library_only():
    """sandbox/repl_server.py runs inside arbitrary images, where nothing else is installed."""
    assert third_party(top_level_imports(REPO / "sandbox" / "repl_server.py")) == set()


def module_name(path: Path) -> str:
    """rlmcli/cli/app.py -> rlmcli.cli.app; rlmcli/cli/__init__.py -> rlmcli.cli."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


IMPORT_ALL = """
import importlib, pkgutil, rlmcli

def fail(name):
    raise SystemExit(f"cannot import {name}")

names = [m.name for m in pkgutil.walk_packages(rlmcli.__path__, "rlmcli.", onerror=fail)]
for name in names:
    importlib.import_module(name)
print(rlmcli.__file__)
print("\\n".join(names))
"""


def test_every_module_of_the_installed_package_imports(tmp_path: Path):
    """`python -c` importing each module of rlmcli as installed (scripts/test.sh installs it with
    `pip install .`): isolated mode, from an empty directory, so the checkout is not on the path."""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", IMPORT_ALL], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    location, *modules = proc.stdout.split()
    assert not Path(location).is_relative_to(tmp_path)
    sources = {module_name(path) for path in PACKAGE.rglob("*.py")} - {"rlmcli"}
    assert sources <= set(modules), (
        f"not importable from the installed package: {sorted(sources - set(modules))}"
    )
