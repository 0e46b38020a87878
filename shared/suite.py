"""Benchmark suites: a folder of JSONL files, one task object per line.

The agent of a task comes from its `agent` field; the file name only groups tasks. Suites are
validated as a whole when loaded, so `producer submit` fails early with `file:line: reason`
instead of a worker failing on one task later.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.config import ConfigError
from shared.numbers import MAX_TOKENS, TOKENS
from shared.scoring import BaseScorer, Scorer, parse_scorer, reference_answer, score

SUITES_DIR = Path(__file__).parent / "suites"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
T = TypeVar("T")


class SuiteError(ConfigError):
    """A suite that cannot be used; the message is one line naming the file and line."""


def task_key(agent: str, task_id: str) -> str:
    """A task's name within its suite: ids are unique per agent, not across agents."""
    return f"{agent}/{task_id}"


class SuiteTask(BaseModel):
    # Unknown fields are errors: a typo such as "max_token" would otherwise silently default.
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_NAME_PATTERN)
    agent: str = Field(pattern=_NAME_PATTERN)
    prompt: str = Field(min_length=1)
    system: str | None = None
    difficulty: Literal["easy", "medium", "hard"]
    # A family of tasks that share a source (one document, one template): their results move
    # together, so the decision's interval and power treat the family as one unit of evidence.
    cluster: str | None = Field(default=None, pattern=_NAME_PATTERN, max_length=100)
    max_tokens: int = Field(default=256, strict=True, **TOKENS)
    scorer: Scorer

    @field_validator("scorer", mode="before")
    @classmethod
    def _valid_scorer(cls, spec: Any) -> BaseScorer:
        return parse_scorer(spec)  # one ValueError in a suite author's words

    @property
    def key(self) -> str:
        return task_key(self.agent, self.id)


@dataclass
class Suite:
    name: str
    path: Path
    tasks: list[SuiteTask]
    _by_key: dict[str, SuiteTask] = field(init=False, repr=False)
    _by_prompt: dict[str, SuiteTask] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_key = {t.key: t for t in self.tasks}
        self._by_prompt = {}
        for task in self.tasks:
            self._by_prompt.setdefault(task.prompt.strip(), task)

    def agents(self) -> list[str]:
        return sorted({t.agent for t in self.tasks})

    def tasks_for(self, agent: str, limit: int | None = None) -> list[SuiteTask]:
        tasks = [t for t in self.tasks if t.agent == agent]
        return tasks if limit is None else tasks[:limit]

    def get(self, agent: str, task_id: str) -> SuiteTask:
        try:
            return self._by_key[task_key(agent, task_id)]
        except KeyError:
            raise KeyError(f"suite {self.name!r} has no task {agent}/{task_id}") from None

    def by_prompt(self, prompt: str) -> SuiteTask | None:
        """The task whose prompt this is (surrounding whitespace ignored); the first if shared."""
        return self._by_prompt.get(prompt.strip())


def resolve_suite_path(name_or_path: str) -> Path:
    """An existing directory as given, else a suite shipped in shared/suites/<name>."""
    given = Path(name_or_path).expanduser()
    if given.is_dir():
        return given.resolve()
    looks_like_path = "/" in name_or_path or "\\" in name_or_path or name_or_path.startswith(".")
    candidate = given if looks_like_path else SUITES_DIR / name_or_path
    if not looks_like_path and candidate.is_dir():
        return candidate.resolve()
    known = ", ".join(known_suites()) or "none"
    raise SuiteError(f"unknown suite {name_or_path!r}: no folder at {candidate} (known: {known})")


def known_suites() -> list[str]:
    return sorted(p.name for p in SUITES_DIR.iterdir() if p.is_dir()) if SUITES_DIR.is_dir() else []


_cache: dict[tuple[str, Path], tuple[tuple, Any]] = {}  # (what, folder) → (its files' signature, value)
_recent: dict[str, tuple[float, Path, tuple]] = {}  # name or path → (when checked, folder, signature)
_loading: dict[tuple[str, Path], threading.Lock] = {}  # held while one thread builds that entry
_cache_lock = threading.Lock()


def _fresh_locks_in_child() -> None:
    """A prefork child forked while another thread held one of these (a parse takes seconds)
    would wait on it forever: the child starts with fresh ones."""
    global _cache_lock, _loading
    _cache_lock = threading.Lock()
    _loading = {}


os.register_at_fork(after_in_child=_fresh_locks_in_child)


def run_suite_folder(reference: str) -> str:
    """A run stores a shipped suite by name and any other by absolute path (which must then be
    readable on every worker host); a name never resolves against a worker's own cwd."""
    if not Path(reference).is_absolute():
        return str(SUITES_DIR / reference)
    if not (Path(reference).is_dir() and os.access(reference, os.R_OK | os.X_OK)):
        raise SuiteError(
            f"suite folder {reference} is not readable on worker host {socket.gethostname()}: "
            "a --suite PATH must be at that path on every worker host (shared storage, or a copy)"
        )
    return reference


def load_suite(name_or_path: str, *, max_age_s: float = 0.0) -> Suite:
    """Load and validate a whole suite (submit, reports); reloaded only when one of its files
    changes. `max_age_s` as for `load_task`."""
    path, signature = _checked_files(name_or_path, max_age_s)
    return _built("suite", path, signature,
                  lambda: Suite(name=path.name, path=path, tasks=_read_tasks(_files(path, signature))))


def load_task(name_or_path: str, agent: str, task_id: str, *, max_age_s: float = 0.0) -> SuiteTask:
    """One task, parsed and validated from its own line (what a worker needs per job). The
    folder is indexed once per change of its files (byte offset of each task's line): a whole
    parsed suite held in every worker cost ~3 KB per task, 8 MB for a 2,500-task suite. With
    `max_age_s`, files checked that recently are not looked at again (a worker asks once per job)."""
    try:
        return _indexed_task(name_or_path, agent, task_id, max_age_s)
    except (SuiteError, KeyError):
        # The offsets may be stale: the files changed within `max_age_s`, or within one tick of
        # the file system's clock and at the same size. Index the files again and look once more.
        _forget_index(name_or_path)
        return _indexed_task(name_or_path, agent, task_id, 0.0)


def _forget_index(name_or_path: str) -> None:
    path = resolve_suite_path(name_or_path)
    with _cache_lock:
        _recent.pop(name_or_path, None)
        _cache.pop(("index", path), None)
    _task_at.cache_clear()


def _indexed_task(name_or_path: str, agent: str, task_id: str, max_age_s: float) -> SuiteTask:
    path, signature = _checked_files(name_or_path, max_age_s)
    index = _built("index", path, signature, lambda: _index_lines(_files(path, signature)))
    key = task_key(agent, task_id)
    try:
        file, offset, number = index[key]
    except KeyError:
        raise KeyError(f"suite {path.name!r} has no task {key}") from None
    task = _task_at(file, offset, number, signature)
    if task.key != key:  # the line at that offset is another task's: the file changed since
        raise SuiteError(f"{file}:{number}: {key} is no longer on this line: the file changed while read")
    return task


def _checked_files(name_or_path: str, max_age_s: float) -> tuple[Path, tuple]:
    """(folder, signature of its files: name, mtime, size of each), stat-ed at most once per
    `max_age_s` per reference: resolving and stat-ing each time cost ~0.2 ms of CPU per job."""
    if max_age_s > 0:
        with _cache_lock:
            recent = _recent.get(name_or_path)
        if recent and time.monotonic() - recent[0] < max_age_s:
            return recent[1], recent[2]
    path = resolve_suite_path(name_or_path)
    files = sorted(path.glob("*.jsonl"))
    if not files:
        raise SuiteError(f"suite {name_or_path!r}: no *.jsonl files in {path}")
    signature = tuple((f.name, (stat := f.stat()).st_mtime_ns, stat.st_size) for f in files)
    with _cache_lock:
        _recent[name_or_path] = (time.monotonic(), path, signature)
    return path, signature


def _files(path: Path, signature: tuple) -> list[Path]:
    return [path / name for name, _, _ in signature]


def _built(what: str, path: Path, signature: tuple, build: Callable[[], T]) -> T:
    """The cached `what` of a folder, built again when its files changed. One thread builds and
    the others wait for it: a worker's first jobs reach every thread at once, and 32 parses of
    a 2,500-task suite at the same moment left ~40 MB of freed objects' memory resident in the
    worker for the rest of its life."""
    key = (what, path)
    if (value := _cached(key, signature)) is not None:
        return value
    with _cache_lock:
        loading = _loading.setdefault(key, threading.Lock())
    with loading:
        if (value := _cached(key, signature)) is None:
            value = build()
            with _cache_lock:
                _cache[key] = (signature, value)
    return value


def _cached(key: tuple[str, Path], signature: tuple) -> Any:
    """The cached value, if the folder's files have not changed since it was built."""
    with _cache_lock:
        cached = _cache.get(key)
    return cached[1] if cached and cached[0] == signature else None


def _index_lines(files: list[Path]) -> dict[str, tuple[Path, int, int]]:
    """task key → (file, byte offset, line number) of its line; a line without a usable agent
    or id, or a duplicate, fails as it does for the whole suite."""
    index: dict[str, tuple[Path, int, int]] = {}
    seen: dict[str, str] = {}
    for file, number, offset, text in _lines(files):
        where = f"{file}:{number}"
        data = _json_object(text, where)
        agent, task_id = data.get("agent"), data.get("id")
        if not (isinstance(agent, str) and isinstance(task_id, str)):
            agent, task_id = (task := _parse_line(text, where)).agent, task.id  # raises its file:line reason
        _first_time(seen, agent, task_id, where)
        index[task_key(agent, task_id)] = (file, offset, number)
    return index


@functools.lru_cache(maxsize=128)  # a task's backends arrive together: usually parsed once, not per backend
def _task_at(file: Path, offset: int, number: int, signature: tuple) -> SuiteTask:
    where = f"{file}:{number}"
    with file.open("rb") as lines:
        lines.seek(offset)
        return _parse_line(_decoded(lines.readline(), where), where)


def _read_tasks(files: list[Path]) -> list[SuiteTask]:
    tasks: list[SuiteTask] = []
    seen: dict[str, str] = {}
    for file, number, _, text in _lines(files):
        where = f"{file}:{number}"
        task = _parse_line(text, where)
        _first_time(seen, task.agent, task.id, where)
        tasks.append(task)
    if not tasks:
        raise SuiteError(f"suite in {files[0].parent}: no tasks")
    return tasks


def _lines(files: list[Path]) -> Iterator[tuple[Path, int, int, str]]:
    """(file, line number, byte offset, text) of every non-blank line: the one reading of a
    suite's lines that both the whole-suite load and the index use."""
    for file in files:
        offset = 0
        with file.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                text = _decoded(raw, f"{file}:{number}")
                if text.strip():
                    yield file, number, offset, text
                offset += len(raw)


def _decoded(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{where}: not UTF-8 text (byte {exc.start + 1})") from None


def _first_time(seen: dict[str, str], agent: str, task_id: str, where: str) -> None:
    key = task_key(agent, task_id)
    if key in seen:
        raise SuiteError(f"{where}: duplicate id {task_id!r} for agent {agent!r} (first at {seen[key]})")
    seen[key] = where


def _json_object(line: str, where: str) -> dict:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SuiteError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def _parse_line(line: str, where: str) -> SuiteTask:
    data = _json_object(line, where)
    try:
        task = SuiteTask.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(f"{where}: {_describe(exc)}") from None
    if not task.scorer.local:  # graded by the judge backend: nothing to check offline
        return task
    result = score(task, reference_answer(task))
    if result.score != 1.0:
        raise SuiteError(
            f"{where}: bad scorer: its reference answer scores {result.score:.2f}, not 1.0"
            f" ({result.detail})"
        )
    return task


def _describe(exc: ValidationError) -> str:
    """The first problem of a task line, in words a suite author acts on."""
    error = exc.errors()[0]
    name = ".".join(str(p) for p in error["loc"])
    kind = error["type"]
    if kind == "missing":
        return f"missing field {name!r}"
    if kind == "extra_forbidden":
        return f"unknown field {name!r}"
    if name == "difficulty":
        return f"unknown difficulty {error['input']!r} (expected easy, medium or hard)"
    if name == "cluster":
        return f"cluster must be a name of letters, digits, '.', '_' or '-' (got {error['input']!r})"
    if name == "max_tokens":
        return f"max_tokens must be a whole number from 1 to {MAX_TOKENS:,} (got {error['input']!r})"
    if name == "scorer" and kind == "value_error":
        return f"bad scorer: {error['ctx']['error']}"
    return f"field {name!r}: {error['msg']}"
