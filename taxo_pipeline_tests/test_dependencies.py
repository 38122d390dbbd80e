"""pyproject.toml declares every third-party module the code imports: the package's in [project.dependencies]
(a transitive install that happens to be there is no promise), the tests' and bench/'s there or in the dev
group. Imports are read from the source (every `import`, at any depth), not from what a run happened to load."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

from taxo_pipeline.settings import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
OWN = {"taxo_pipeline", "taxo_pipeline_tests", "bench"}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements) -> set[str]:
    """The distribution names of requirement strings (`name[extra]>=1; marker`); include-group tables skipped."""
    names = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec) for spec in requirements if isinstance(spec, str))
    return {_normalized(match.group()) for match in names if match}


RUNTIME = _declared(PYPROJECT["project"]["dependencies"])
DEV = RUNTIME | _declared(PYPROJECT["dependency-groups"]["dev"])


def imports(path: Path) -> set[str]:
    """The modules a file imports absolutely, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def imported_modules(folder: Path) -> dict[str, set[str]]:
    """{top-level third-party module: the files importing it} for the Python files under `folder`. The
    standard library, the project's own packages, relative imports and a script's sibling modules (bench/
    runs its files as scripts, so `import quality` is bench/quality.py) are left out."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        siblings = {p.stem for p in path.parent.glob("*.py")} | {p.name for p in path.parent.iterdir() if p.is_dir()}
        for top in {module.split(".")[0] for module in imports(path)}:
            if top not in sys.stdlib_module_names and top not in OWN and top not in siblings:
                found.setdefault(top, set()).add(str(path.relative_to(PROJECT_ROOT)))
    return found


def undeclared(folder: str, declared: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for module, files in sorted(imported_modules(PROJECT_ROOT / folder).items()):
        provided_by = {_normalized(name) for name in distributions.get(module, [])}
        if not provided_by & declared:
            by = ", ".join(sorted(provided_by)) or "no installed distribution"
            problems.append(f"{module} ({by}), imported by {', '.join(sorted(files)[:3])}")
    return problems


@pytest.mark.parametrize(("folder", "declared", "where"), [
    ("taxo_pipeline", RUNTIME, "[project.dependencies]"),
    ("bench", DEV, "[project.dependencies] or the dev group"),
    ("taxo_pipeline_tests", DEV, "[project.dependencies] or the dev group"),
], ids=["package", "bench", "tests"])  # fmt: skip
def test_every_imported_module_is_declared(folder, declared, where):
    assert undeclared(folder, declared) == [], f"declare these in pyproject.toml's {where}"


def test_the_check_sees_imports_at_any_depth_and_skips_the_project_and_the_standard_library():
    modules = imported_modules(PROJECT_ROOT / "taxo_pipeline")
    assert {"dagster", "yaml", "threadpoolctl"} <= modules.keys()  # threadpoolctl: inside a function (cli/serve.py)
    assert not modules.keys() & {"os", "json", "taxo_pipeline", "__future__"}
    assert "quality" not in imported_modules(PROJECT_ROOT / "bench")  # bench/quality.py, a sibling script


def test_private_dagster_modules_are_imported_only_by_the_runner():
    """Dagster's private modules (`dagster._core...`) change without notice: the package reaches them only in
    taxo_pipeline/defs/runner/, where each use says why no public API serves."""
    runner = PROJECT_ROOT / "taxo_pipeline" / "defs" / "runner"
    private = sorted(
        f"{path.relative_to(PROJECT_ROOT)}: {module}"
        for path in (PROJECT_ROOT / "taxo_pipeline").rglob("*.py")
        if not path.is_relative_to(runner)
        for module in imports(path)
        if module.startswith(("dagster._", "dagster.core"))
    )
    assert private == []
