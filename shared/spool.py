"""A folder of fsync'ed files, one per key: the paid-call journal's copy on this host's disk
(shared/journal.py), which outlives Redis losing its data and the database being away.

Each file is written whole (a temporary dot-file, fsync, rename, fsync of the folder), so a
crash leaves the whole entry or none. Every process that reads the folder may take an entry,
and taking one twice is harmless (removing is idempotent), so the worker processes of one host,
or of several hosts sharing the folder, need no lock. Entries that cannot be read are moved to
`quarantine/` in the same folder, kept for a human."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

SUFFIX = ".json"
QUARANTINE = "quarantine"
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def name_of(key: str) -> str:
    """The file name of a key: the key itself when it is a plain name (paid call ids are),
    else a digest of it (a key never chooses where its file goes)."""
    if _PLAIN_KEY.fullmatch(key):
        return key + SUFFIX
    return "h-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:40] + SUFFIX


class Spool:
    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def put(self, key: str, data: bytes) -> None:
        """Write the entry durably (on disk when this returns), replacing any under that key."""
        _write_durably(self.folder, name_of(key), data)

    def items(self) -> list[tuple[str, bytes]]:
        """Every entry as (file name, bytes); none when the folder does not exist yet."""
        try:
            names = sorted(entry.name for entry in os.scandir(self.folder)
                           if entry.name.endswith(SUFFIX) and not entry.name.startswith(".") and entry.is_file())
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            try:
                found.append((name, (self.folder / name).read_bytes()))
            except FileNotFoundError:  # taken by another process meanwhile
                continue
        return found

    def remove(self, name: str) -> None:
        try:
            os.unlink(self.folder / name)
        except FileNotFoundError:
            pass

    def quarantine(self, name: str, data: bytes | None = None) -> None:
        """Keep an unreadable entry under quarantine/: this spool's own file is moved there;
        `data` (one read elsewhere, e.g. from Redis) is written there."""
        if data is not None:
            _write_durably(self.folder / QUARANTINE, name, data)
            return
        (self.folder / QUARANTINE).mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self.folder / name, self.folder / QUARANTINE / name)
        except FileNotFoundError:
            return
        _fsync_folder(self.folder / QUARANTINE)
        _fsync_folder(self.folder)

    def quarantined(self) -> list[str]:
        try:
            return sorted(entry.name for entry in os.scandir(self.folder / QUARANTINE) if entry.name.endswith(SUFFIX))
        except FileNotFoundError:
            return []


def _write_durably(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, folder / name)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    """The rename itself is durable only once the folder is synced."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
