"""Print the project's dependencies (and those of the named extras), one per line, from
pyproject.toml alone: the Dockerfile installs them in a layer the code does not invalidate."""

from __future__ import annotations

import sys
import tomllib


def requirements(pyproject_path: str, extras: list[str]) -> list[str]:
    with open(pyproject_path, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        sys.exit(_bad_input(f"no such extra in {pyproject_path}: {', '.join(unknown)}"))
    return [*project["dependencies"], *(req for extra in extras for req in optional[extra])]


def _bad_input(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(_bad_input("usage: requirements-from-pyproject.py PYPROJECT [EXTRA ...]"))
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
