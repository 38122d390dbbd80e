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


def test_no_function_is_longer_than_60_lines():
    long = [
        f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []
