"""The README and docs/ stay true to the code, cheaply (no SIE server, nothing materialized):

- the README stays short (at most 250 lines; the rest lives in docs/);
- every relative link in README.md and docs/**/*.md points to a file that exists, and every #anchor to a
  heading of that file (GitHub's slugs);
- every shell example (fenced ```bash blocks, and inline `uv run ...`, `taxo-pipeline ...`,
  `classify-products ...`, `bench/X.py ...` spans) names a subcommand or script that exists and only flags
  its argparse parser accepts; an example with no placeholder in it is parsed whole by the real parser;
- every TAXO_* variable named there is read by taxo_pipeline/settings.py, and every TAXO_*/SIE_* variable
  named there is in the table of docs/configuration.md.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import shlex
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250
# TAXO_* variables the docs may name although settings.py does not read them: none today.
NOT_IN_SETTINGS: dict[str, str] = {}

FENCE = re.compile(r"^(```+|~~~+)([^\n`]*)\n(.*?)^\1[ \t]*$", re.M | re.S)
SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_./-]*$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
REDIRECTION = re.compile(r"^\d*[<>]")
SEPARATORS = {"&&", "||", ";", "|"}


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------- length


def test_the_readme_is_at_most_250_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/"


# ---------------------------------------------------------------- links


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation gone, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(_prose(path.read_text())):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def _links(path: Path) -> list[str]:
    text = SPAN.sub("", _prose(path.read_text()))
    return [target for target in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


def _broken(path: Path, target: str) -> str | None:
    file_part, _, anchor = target.partition("#")
    linked = (path.parent / file_part).resolve() if file_part else path
    if not linked.exists():
        return f"{_name(path)}: link to {target}: no such file"
    if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
        return f"{_name(path)}: link to {target}: no heading #{anchor} in {_name(linked)}"
    return None


def test_every_relative_link_points_to_a_file_and_heading_that_exist():
    broken = [problem for page in _pages() for target in _links(page) if (problem := _broken(page, target))]
    assert not broken, "\n".join(broken)


def test_slugs_are_githubs():
    assert slug("Set-up: two commands") == "set-up-two-commands"
    assert (
        slug("The `taxo-pipeline dev` server follows `models.yaml`")
        == "the-taxo-pipeline-dev-server-follows-modelsyaml"
    )
    assert slug("A merchant's Shopify export, and the categories it already has") == (
        "a-merchants-shopify-export-and-the-categories-it-already-has"
    )


# ---------------------------------------------------------------- shell examples


def _bash_lines(code: str) -> list[str]:
    """Logical lines of a bash block: continuations joined, heredoc bodies and comments left out."""
    lines, heredoc, pending = [], None, ""
    for line in code.splitlines():
        if heredoc:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line, pending = pending + line, ""
        if marker := re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line):
            heredoc = marker.group(1)
        lines.append(line)
    return lines


def _tokens(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in prose
        return command.split()


def _commands(tokens: list[str]) -> list[list[str]]:
    """A line's commands, split at && || ; and pipes."""
    found, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            found.append(current)
            current = []
        else:
            current.append(token)
    return [command for command in [*found, current] if command]


def shell_examples() -> list[tuple[str, list[str]]]:
    """(where, tokens) of every command in the README's and docs' bash blocks and inline code spans; `where`
    starts with the page and ends with the line (a block's) or the `span` (prose, which may name a command
    without its required arguments)."""
    examples = []
    for page in _pages():
        text = page.read_text()
        for fence in FENCE.finditer(text):
            if fence.group(2).strip() in ("bash", "sh", "shell", "console"):
                for line in _bash_lines(fence.group(3)):
                    examples += [(f"{_name(page)}: {line.strip()}", c) for c in _commands(_tokens(line))]
        for span in SPAN.finditer(_prose(text)):
            command = " ".join(span.group(2).split())
            examples += [(f"{_name(page)}: `{command}`", c) for c in _commands(_tokens(command))]
    return examples


def _project_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def _program(tokens: list[str]) -> tuple[str, list[str]] | None:
    """The project program a command runs and its arguments, or None for anything else (pip, curl ...)."""
    tokens = [t for t in tokens if not REDIRECTION.match(t)]
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        tokens = tokens[1:]
    if tokens[:2] == ["uv", "run"]:
        tokens = tokens[2:]
    if tokens[:1] == ["python"] and len(tokens) > 1 and tokens[1].startswith("bench/"):
        tokens = tokens[1:]
    if not tokens:
        return None
    if tokens[0] in _project_scripts() or re.match(r"^bench/[\w-]+\.py$", tokens[0]):
        return tokens[0], tokens[1:]
    return None


def _is_synopsis(args: list[str]) -> bool:
    """A usage line (`[--top-k K]`, `A|B`, `TEXT...`) rather than a command to run as it is."""
    return any(
        set(arg) & set("[]|") or "..." in arg or PLACEHOLDER.match(arg) or arg in ("-h", "--help") for arg in args
    )


def _flags(args: list[str]) -> list[str]:
    cleaned = (arg.strip("[](),") for arg in args)
    return [arg.split("=", 1)[0] for arg in cleaned if re.match(r"^--?[A-Za-z]", arg)]


@cache
def _main_parser() -> argparse.ArgumentParser:
    from taxo_pipeline.cli.main import build_parser

    return build_parser()


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """None when the parser accepts args, else its error."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_known_args(args) if args[:1] == ["dev"] else parser.parse_args(args)
        except SystemExit as exc:
            return None if exc.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def _check_flags(where: str, options: set[str], flags: list[str]) -> list[str]:
    return [f"{where}: {flag} is not an option ({' '.join(sorted(options))})" for flag in flags if flag not in options]


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def _check_taxo_pipeline(where: str, args: list[str]) -> list[str]:
    """`taxo-pipeline [-v] SUB [APPROACH] ...`: the subcommand, the approach and the flags."""
    parser = _main_parser()
    words = [arg.strip("[](),") for arg in args]
    positional = [i for i, word in enumerate(words) if word and not word.startswith("-")]
    problems = _check_flags(where, _options(parser), _flags(args[: positional[0] if positional else len(args)]))
    if not positional:
        return problems
    at, sub = positional[0], words[positional[0]]
    subparsers = _choices(parser)
    if PLACEHOLDER.match(sub):  # `taxo-pipeline SUB`
        return problems
    if sub not in subparsers:
        return [*problems, f"{where}: no subcommand {sub!r} (there are {', '.join(subparsers)})"]
    if sub == "dev":  # its arguments go to `dagster dev`
        return problems
    parsers = [subparsers[sub]]
    per_approach = _choices(subparsers[sub])
    rest = args[at + 1 :]
    if per_approach:
        name = next((word for word in words[at + 1 :] if word and not word.startswith("-")), None)
        if name in per_approach:
            parsers, rest = [per_approach[name]], args[args.index(name, at + 1) + 1 :]
        elif name is None or PLACEHOLDER.match(name):  # `eval APPROACH ...`: the flags of some approach
            parsers = list(per_approach.values())
        else:
            return [*problems, f"{where}: `{sub}` has no approach {name!r} (there are {', '.join(per_approach)})"]
    return problems + _check_flags(where, set().union(*map(_options, parsers)), _flags(rest))


def _script_argv(script: str, args: list[str]) -> list[str] | None:
    """A project script's arguments as `taxo-pipeline` arguments (`eval-nli` = `taxo-pipeline eval nli`)."""
    if script == "taxo-pipeline":
        return args
    if match := re.match(r"^(eval|predict)-(.+)$", script):
        return [match.group(1), match.group(2), *args]
    return None


@cache
def _classify_parser() -> argparse.ArgumentParser:
    from taxo_pipeline.cli.classify import build_parser

    return build_parser()


@cache
def bench_parser(script: str) -> argparse.ArgumentParser:
    """A bench script's parser, rebuilt from its add_argument calls (its main() builds it inline): option
    strings, action, nargs and choices kept; types and defaults left out."""
    parser = argparse.ArgumentParser(prog=script)
    for node in ast.walk(ast.parse((ROOT / script).read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            names = [arg.value for arg in node.args if isinstance(arg, ast.Constant)]
            kept = {"action", "nargs", "choices", "dest", "const", "metavar"}
            keywords = {}
            for keyword in node.keywords:
                if keyword.arg in kept:
                    with contextlib.suppress(ValueError):
                        keywords[keyword.arg] = ast.literal_eval(keyword.value)
            parser.add_argument(*names, **keywords)
    return parser


def _check(where: str, tokens: list[str]) -> list[str]:
    found = _program(tokens)
    if found is None:
        return []
    program, args = found
    if program.startswith("bench/"):
        if not (ROOT / program).is_file():
            return [f"{where}: no script {program}"]
        parser = bench_parser(program)
        problems = _check_flags(where, _options(parser), _flags(args))
    elif (argv := _script_argv(program, args)) is not None:
        parser, args = _main_parser(), argv
        problems = _check_taxo_pipeline(where, argv)
    elif program == "classify-products":
        parser = _classify_parser()
        problems = _check_flags(where, _options(parser), _flags(args))
    else:
        return [f"{where}: test_docs.py knows no parser for the project script {program!r}: add it"]
    error = None if problems or not args or _is_synopsis(args) else _parse(parser, args)
    if error and not (where.endswith("`") and "arguments are required" in error):  # a name in prose
        problems.append(f"{where}: {error}")
    return problems


def test_the_docs_show_shell_examples():
    programs = {found[0] for _, tokens in shell_examples() if (found := _program(tokens))}
    assert {"taxo-pipeline", "classify-products", "bench/quality.py", "predict-text-retrieval"} <= programs


def test_every_shell_example_names_a_real_command_and_only_its_flags():
    problems = [problem for where, tokens in shell_examples() for problem in _check(where, tokens)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "command, expected",
    [
        ("uv run taxo-pipeline materialize --no-such-flag", "--no-such-flag is not an option"),
        ("uv run taxo-pipeline frobnicate", "no subcommand 'frobnicate'"),
        ("uv run taxo-pipeline eval text-retrieval --model M [--limmit N]", "--limmit is not an option"),
        ("uv run taxo-pipeline eval no-such-approach --model M", "has no approach 'no-such-approach'"),
        ("uv run predict-nli --model o/m --variant leaf --description x", "--variant is not an option"),
        ("uv run classify-products --products p.csv --target-precision 2", "argument --target-precision"),
        ("uv run python bench/quality.py --no-such-flag", "--no-such-flag is not an option"),
        ("uv run python bench/benchmark.py --variant full-depth", "invalid choice: 'full-depth'"),
        ("uv run python bench/nothing.py", "no script bench/nothing.py"),
    ],
)
def test_the_check_catches_a_wrong_example(command, expected):
    problems = _check("example", _tokens(command))
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_check_accepts_right_examples():
    for command in [
        "uv run taxo-pipeline -v materialize --products P --taxonomy T",
        "uv run taxo-pipeline dev -p 3001",
        "uv run taxo-pipeline eval --help",
        "TAXO_DEPTH=full uv run taxo-pipeline materialize",
        "uv run predict-text-retrieval --model o/m --variant full-path --description 'a hat'",
        "uv run python bench/scale.py --sizes 2000,10000 --description-chars 80 >out.txt 2>err.log",
        "pip install uv && uv sync --compile-bytecode && uv run pytest",
    ]:
        assert _check("example", _tokens(command)) == [], command


# ---------------------------------------------------------------- environment variables


def _named(pattern: str) -> dict[str, str]:
    """Each variable the README and docs name, with the first page naming it."""
    found: dict[str, str] = {}
    for page in _pages():
        for name in re.findall(pattern, page.read_text()):
            found.setdefault(name, _name(page))
    return found


TAXO_VARIABLE = r"(?<![A-Za-z0-9_])TAXO_[A-Z][A-Z0-9_]*"
SIE_VARIABLE = r"(?<![A-Za-z0-9_])SIE_[A-Z][A-Z0-9_]*"


def test_every_taxo_variable_in_the_docs_is_read_by_settings():
    source = (ROOT / "taxo_pipeline" / "settings.py").read_text()
    unread = {
        name: page for name, page in _named(TAXO_VARIABLE).items() if name not in source and name not in NOT_IN_SETTINGS
    }
    assert unread == {}, "named in the docs, read nowhere in taxo_pipeline/settings.py"


def test_every_variable_the_docs_name_is_in_the_configuration_table():
    table = "\n".join(line for line in (DOCS / "configuration.md").read_text().splitlines() if line.startswith("| `"))
    named = _named(TAXO_VARIABLE) | _named(SIE_VARIABLE)
    missing = {name: page for name, page in named.items() if not re.search(rf"`{name}`", table)}
    assert missing == {}, "not in the table of docs/configuration.md"
