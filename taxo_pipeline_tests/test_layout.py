"""The code's shape: domain modules never reach up into the Dagster layer or the commands, and no
function grows past 60 lines."""

import ast

from taxo_pipeline.settings import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "taxo_pipeline"
# Plain Python that knows nothing of Dagster's definitions or the command line.
DOMAIN = ("approaches", "classification", "dataset", "evaluation", "retrieval", "serving", "sie", "training", "warehouse")


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


# Below the front doors (the CLI, the service's start, the Dagster definitions and resources), which build
# the Workspace once: these packages receive it, or the part they need (sie: an SIESettings, the data folder,
# the catalogue file), and never import the settings module. None of DOMAIN knows Dagster.
RECEIVE_THE_WORKSPACE = ("approaches", "classification", "dataset", "evaluation", "retrieval", "serving", "sie", "training")
# The only modules that read the settings from the environment (settings.current(), Settings.from_env(),
# Workspace.from_env()): the front doors, and the modules that define them.
READ_THE_SETTINGS = ("cli", "defs", "definitions.py", "settings.py", "workspace.py")
# Read where a lock is taken: the warehouse, the indexes and the warm server's state file each take one
# from a bare path, and threading TAXO_LOCK_TIMEOUT_S through all of them waits for the warehouse package.
READS_THE_LOCK_TIMEOUT = "locks.py"


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


def _settings_reads(path) -> list[str]:
    """Where `path` reads the settings: a call of settings.current, Settings.from_env or Workspace.from_env
    (however imported), or an import of `current` from the settings module."""
    reads, where = [], path.relative_to(PROJECT_ROOT)
    for node in ast.walk(ast.parse(path.read_text())):
        call = node.func if isinstance(node, ast.Call) else None
        if isinstance(call, ast.Attribute) and isinstance(call.value, ast.Name):
            if (call.value.id, call.attr) in (("settings", "current"), ("Settings", "from_env"), ("Workspace", "from_env")):
                reads.append(f"{where}:{node.lineno} {call.value.id}.{call.attr}()")
        elif isinstance(node, ast.ImportFrom) and node.module == "taxo_pipeline.settings":
            reads += [f"{where}:{node.lineno} imports current" for alias in node.names if alias.name == "current"]
    return reads


def test_only_the_front_doors_read_the_settings():
    outside = [
        read
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in (*READ_THE_SETTINGS, READS_THE_LOCK_TIMEOUT)
        for read in _settings_reads(path)
    ]
    assert outside == []
    # the scan sees them where they are
    assert _settings_reads(PACKAGE / "defs" / "location.py") and _settings_reads(PACKAGE / READS_THE_LOCK_TIMEOUT)


def test_no_function_is_longer_than_60_lines():
    long = [
        f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []


# One storage layer: every table, view, query and migration is warehouse/'s; the rest of the package calls
# its functions with keys, values and Arrow or Polars tables.
WAREHOUSE = PACKAGE / "warehouse"


def _queries(source: str) -> list[str]:
    """Calls such as con.execute(...) or con.sql(...), by line: a query run on a DuckDB connection."""
    return [
        f"{node.lineno} .{node.func.attr}()"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("execute", "executemany", "sql")
    ]  # fmt: skip


def test_sql_lives_only_in_the_warehouse_package():
    outside = [path for path in sorted(PACKAGE.rglob("*.py")) if WAREHOUSE not in path.parents]
    duckdb = {
        f"{path.relative_to(PROJECT_ROOT)}: {module}"
        for path in outside
        for module in _imports(path)
        if module.split(".")[0] == "duckdb"
    }
    queries = [f"{path.relative_to(PROJECT_ROOT)}:{query}" for path in outside for query in _queries(path.read_text())]
    assert duckdb == set()
    assert queries == []


def test_the_sql_check_sees_queries_and_duckdb(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("from duckdb import connect\n\ndef f(con):\n    con.execute('SELECT 1')\n    return con.sql('SELECT 2')\n")
    assert "duckdb" in _imports(module)
    assert _queries(module.read_text()) == ["4 .execute()", "5 .sql()"]
