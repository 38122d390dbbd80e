"""The code's shape: domain modules never reach up into the Dagster layer or the commands, and no
function grows past 60 lines."""

import ast

from taxo_pipeline.settings import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "taxo_pipeline"
# Plain Python that knows nothing of Dagster's definitions or the command line.
DOMAIN = ("approaches", "classification", "dataset", "evaluation", "retrieval", "serving", "sie")


def _imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from a import b`: a.b too
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_domain_modules_import_neither_defs_nor_cli():
    upward = {
        f"{path.relative_to(PROJECT_ROOT)}: {module}"
        for folder in DOMAIN
        for path in sorted((PACKAGE / folder).rglob("*.py"))
        for module in _imports(path)
        if module.startswith(("taxo_pipeline.defs", "taxo_pipeline.cli"))
    }
    assert upward == set()


# Below the front doors (the CLI, the service's start, the Dagster resources), which build the Workspace
# once: these packages receive it and never read the settings. `sie` is not among them yet: its servers
# and clients still read the settings (issue 31 is open for it). None of DOMAIN knows Dagster.
RECEIVE_THE_WORKSPACE = ("approaches", "classification", "dataset", "evaluation", "retrieval", "serving")


def _domain_imports(folders: tuple[str, ...], wanted) -> set[str]:
    return {
        f"{path.relative_to(PROJECT_ROOT)}: {module}"
        for folder in folders
        for path in sorted((PACKAGE / folder).rglob("*.py"))
        for module in _imports(path)
        if wanted(module)
    }


def test_domain_modules_import_neither_dagster_nor_the_settings_module():
    assert _domain_imports(DOMAIN, lambda module: module.split(".")[0] == "dagster") == set()
    assert _domain_imports(RECEIVE_THE_WORKSPACE, lambda module: module == "taxo_pipeline.settings") == set()


def test_no_function_is_longer_than_60_lines():
    long = [
        f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []
