"""Print the project's dependencies (and those of the named extras), one per line, from
pyproject.toml alone: the Dockerfile installs them in a layer the code does not invalidate.
With --lowest, each requirement is pinned to its lower bound (scripts/test-lowest.sh)."""

from __future__ import annotations

import re
import sys
import tomllib

LOWER_BOUND = re.compile(r">=\s*([^,;\s]+)")


def requirements(pyproject_path: str, extras: list[str]) -> list[str]:
    with open(pyproject_path, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise ValueError(f"no such extra in {pyproject_path}: {', '.join(unknown)}")
    own = re.compile(rf"^{re.escape(project['name'])}\[([^\]]+)\]$")
    found: list[str] = list(project["dependencies"])
    pending = list(extras)
    seen: set[str] = set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        for req in optional[extra]:
            if match := own.match(req.replace(" ", "")):  # "genesis-bench[monitor,postgres]"
                pending += match.group(1).split(",")
            else:
                found.append(req)
    return list(dict.fromkeys(found))


def lowest(requirement: str) -> str:
    """'celery[redis]>=5.5,<6  # why' -> 'celery[redis]==5.5'."""
    name = re.split(r"[<>=!~;\s]", requirement, maxsplit=1)[0]
    bound = LOWER_BOUND.search(requirement)
    if not bound:
        raise ValueError(f"{requirement!r} has no lower bound (>=): every dependency needs one")
    return f"{name}=={bound.group(1)}"


def main(argv: list[str]) -> int:
    pin_lowest = "--lowest" in argv
    args = [a for a in argv if a != "--lowest"]
    if not args:
        print("usage: requirements-from-pyproject.py [--lowest] PYPROJECT [EXTRA ...]", file=sys.stderr)
        return 2
    try:
        found = requirements(args[0], args[1:])
        print("\n".join(lowest(r) for r in found) if pin_lowest else "\n".join(found))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
