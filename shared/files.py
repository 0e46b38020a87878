"""Files that appear whole or not at all: written to a temporary file beside the target, then
renamed over it, so a reader (a worker reading model_id.txt, a spreadsheet opening an export)
never sees half of one, and a failed write leaves the old file as it was."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def replacing(path: Path, *, newline: str | None = None) -> Iterator[IO[str]]:
    """A text handle whose content replaces `path` when the block ends without an error. The
    file keeps the mode it had (a new one is 0644: temporary files start owner-only)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False, newline=newline)
    try:
        with handle:
            yield handle
        os.chmod(handle.name, mode)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
