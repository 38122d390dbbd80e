"""`taxo-pipeline dev` hands its other arguments to `dagster dev`, with or without a `--` before them."""

import pytest
from dagster._cli.dev import dev_command

from taxo_pipeline import settings
from taxo_pipeline.cli.main import dagster_dev_command, parse_args


@pytest.mark.parametrize("argv", [["dev", "-p", "3001"], ["dev", "--", "-p", "3001"]])
def test_dev_passes_its_arguments_to_dagster_dev(argv):
    command = dagster_dev_command(parse_args(argv).dagster_args)
    assert command[-4:] == ["-w", str(settings.PROJECT_ROOT / "workspace.yaml"), "-p", "3001"]
    # dagster dev's own parser accepts the line (without starting anything)
    params = dev_command.make_context("dagster dev", command[command.index("dev") + 1 :]).params
    assert params["port"] == "3001" and params["workspace"] == (str(settings.PROJECT_ROOT / "workspace.yaml"),)


def test_dev_alone_and_other_commands_keep_their_arguments(capsys):
    assert parse_args(["dev"]).dagster_args == []
    with pytest.raises(SystemExit):
        parse_args(["encode", "--model", "org/m", "--port", "1", "text"])
    assert capsys.readouterr().err.endswith("error: unrecognized arguments: --port\n")
