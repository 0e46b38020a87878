"""Small things a user notices: `producer --version`, `export --format` as a listed choice, and
bad option values as one line with exit 2."""

from __future__ import annotations

from importlib.metadata import version

from tests.support.runs import producer


def test_version_prints_the_installed_version():
    result = producer("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"genesis-bench {version('genesis-bench')}"


def test_export_help_lists_the_formats():
    result = producer("export", "--help")
    assert result.exit_code == 0
    assert "csv|jsonl" in result.stdout


def test_a_bad_option_value_is_one_line_and_exit_2():
    result = producer("export", "some-run", "--format", "xml")
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: Invalid value for '--format'") and "'xml'" in line and "'jsonl'" in line
