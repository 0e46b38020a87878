"""Files that appear whole or not at all: written to a temporary file beside the target, then
renamed over it, so a reader (a worker reading model_id.txt, a spreadsheet opening an export)
never sees half of one, and a failed write leaves the old file as it was. A file or folder that
cannot be written (a read-only folder, a directory named as the file, a file where a folder
should be) is `NotWritable`: bad input, one line and exit 2 in the CLI, nothing left behind."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from shared.config import ConfigError


class NotWritable(ConfigError):
    """A path the user chose (--output, the reports folder) that this process cannot write."""


@contextmanager
def writable(path: Path) -> Iterator[None]:
    """Turns an OSError of writing `path` (or making its folder) into one line naming it."""
    try:
        yield
    except OSError as exc:
        raise NotWritable(f"cannot write {path}: {exc.strerror or exc}") from None


def writable_folder(path: Path) -> Path:
    """`path` as a folder this process can write into (made if missing), checked by writing a
    temporary file: mode bits say nothing for root or on a read-only mount."""
    with writable(path):
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    return path


@contextmanager
def replacing(path: Path, *, newline: str | None = None) -> Iterator[IO[str]]:
    """A text handle whose content replaces `path` when the block ends without an error. The
    file keeps the mode it had (a new one is 0644: temporary files start owner-only)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        mode = 0o644
    with writable(path):
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
