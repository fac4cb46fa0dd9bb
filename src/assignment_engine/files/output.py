"""Write an output directory (a plan, update files, routed records) as one unit, so a reader never sees half of one.

Every file of a plan is written into a fresh sibling directory, flushed to disk,
then swapped with the target in one step (``renameat2(RENAME_EXCHANGE)`` on
Linux; elsewhere two renames a moment apart, never a mix of old and new files).
Stop signals arriving during the swap are held until it is done. The target is
checked before any work: it must not be, or hold, an input file, it must be
writable, and an existing target may hold only a previous plan's files, because
the swap replaces the directory whole.

CSV cells that a spreadsheet would run as a formula (starting with ``=``, ``+``,
``-``, ``@``, tab or carriage return) get a leading ``'`` (the OWASP
convention); files a CRM imports (``apply``'s, ``route``'s) are written exactly
(:func:`exact_cell`), their formula-like cells counted instead. JSON Lines keep
the raw values, and so does Parquet (on request, typed columns for the tools
that read plans by the million).
"""

from __future__ import annotations

import csv
import ctypes
import errno
import itertools
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from ..errors import Finding, Location, OptionError
from .manifest import MANIFEST
from .parquet import write_parquet

PLAN_ACCOUNT_COLUMNS = ["account_id", "owner_id", "territory_id", "previous_owner_id", "moved", "status", "rule", "reason"]
PLAN_FILES = frozenset(
    {
        MANIFEST,
        "accounts.csv",
        "accounts.jsonl",
        "accounts.parquet",
        "opportunities.csv",
        "opportunities.jsonl",
        "opportunities.parquet",
        "summary.json",
        "report.html",
    }
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # cells a spreadsheet would run
_PARTIAL = ".partial-"  # staging directories: .<name>.partial-<host>-<pid>-<random>
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"


def check_output(
    out: str | Path,
    inputs: Iterable[str | Path | None] = (),
    option: str = "--out",
    owned: frozenset[str] = PLAN_FILES,
    marker: str = MANIFEST,
) -> Path:
    """The resolved output directory, or :class:`OptionError` saying why it cannot be one.

    Called before any work, so a run never computes what it cannot write. An
    existing directory is replaced whole, so it must be empty or a previous
    output of the same kind: its ``marker`` file (``plan.json``) present and
    nothing but ``owned`` files beside it. A folder of CRM exports named
    ``accounts.csv`` is not a plan.
    """

    def refuse(message: str) -> OptionError:
        return OptionError([Finding(Location(option), f"{out}: {message}")])

    if not str(out).strip():
        raise refuse("an empty path; name a directory")
    try:
        target = Path(out).resolve()
        inputs_resolved = [(given, Path(given).resolve()) for given in inputs if given is not None]
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise refuse(f"cannot be resolved: {exc}") from None
    for given, path in inputs_resolved:
        if path == target or target in path.parents:
            raise refuse(f"holds the input file {given}; writing there would replace it. Choose another directory")
    if target.exists() and not target.is_dir():
        raise refuse("exists and is not a directory")
    parent = target.parent
    if not parent.is_dir():
        raise refuse(f"the parent directory {parent} does not exist")
    if target.is_dir():
        if os.path.ismount(target):
            raise refuse("is a mount point, which cannot be swapped for a new directory; name a directory inside it")
        entries = list(target.iterdir())
        foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in entries if p.name not in owned or not p.is_file() or p.is_symlink())
        if foreign or (entries and not (target / marker).is_file()):
            shown = ", ".join(foreign[:5]) + (", …" if len(foreign) > 5 else "") if foreign else f"no {marker}"
            raise refuse(f"is not empty and not a previous output ({shown}); it would be replaced whole. Choose a new or empty directory")
        if not os.access(target, os.W_OK | os.X_OK):
            raise refuse("is not writable")
    try:
        os.rmdir(_staging_directory(target))
    except OSError as exc:
        raise refuse(f"cannot create a directory beside it in {parent}: {exc.strerror}") from None
    _remove_stale_staging(target)
    return target


@contextmanager
def output_directory(
    out: str | Path,
    inputs: Iterable[str | Path | None] = (),
    option: str = "--out",
    owned: frozenset[str] = PLAN_FILES,
    marker: str = MANIFEST,
    then: Callable[[], None] | None = None,
) -> Iterator[Path]:
    """A staging directory to fill; when the block succeeds it replaces ``out`` in one step, else it vanishes.

    ``out`` is checked first (see :func:`check_output`). ``then`` runs right after the swap, stop signals still
    held: what must become visible with the output and only with it (``route`` commits its state there); when it
    fails, the swap is undone.
    """
    target = check_output(out, inputs, option, owned, marker)
    staging = _staging_directory(target)
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; the output is an ordinary shared directory
        _fsync(staging)
        with _signals_held():
            try:
                _swap(staging, target)
            except OSError as exc:  # e.g. the directory became a mount point, or another process holds it
                raise OptionError([Finding(Location(option), f"{out}: cannot be replaced: {exc.strerror}; nothing was changed")]) from None
            if then is not None:
                try:
                    then()
                except BaseException:
                    if staging.exists():  # the new output back out, to be removed below
                        _swap(staging, target)
                    else:
                        os.rename(target, staging)
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the old output after a swap, the partial new one otherwise


def write_table(base: Path, columns: list[str], rows: Iterable[dict[str, Any]], *, parquet: bool = False) -> None:
    """``base.csv`` and ``base.jsonl`` (and ``base.parquet``) in one pass over ``rows`` (rows may be costly to build).

    The CSV has ``columns``; the JSON Lines and Parquet files every key of a row, so the Parquet file holds what the JSON Lines do.
    """
    with ExitStack() as stack:
        csv_handle = stack.enter_context(durable_open(base.with_suffix(".csv")))
        jsonl_handle = stack.enter_context(durable_open(base.with_suffix(".jsonl")))
        writer = csv.writer(csv_handle)
        writer.writerow(columns)
        encode = _JSON_LINE.encode  # one encoder for every row (json.dumps with options builds one per call)
        write_csv, write_jsonl = writer.writerow, jsonl_handle.write

        def written() -> Iterator[dict[str, Any]]:
            for row in rows:
                write_csv([csv_cell(row[c]) for c in columns])
                write_jsonl(encode(row) + "\n")
                yield row

        stream = written()
        if not parquet:
            for _ in stream:
                pass
            return
        first = next(stream, None)  # its keys are the JSON Lines' keys
        if first is None:
            write_parquet(base.with_suffix(".parquet"), columns, ())
        else:
            write_parquet(base.with_suffix(".parquet"), list(first), itertools.chain([first], stream))


_JSON_LINE = json.JSONEncoder(ensure_ascii=False)  # as json.dumps(row, ensure_ascii=False)


def csv_cell(v: Any) -> Any:
    """A value as a CSV cell: booleans as true/false, lists joined by ``;``, formulas neutralised."""
    if type(v) is not str:  # most cells are: tested first
        v = exact_cell(v)
        if not isinstance(v, str):
            return v
    return "'" + v if v.startswith(FORMULA_START) else v


def exact_cell(v: Any) -> Any:
    """A value as a CSV cell a CRM imports, written exactly: booleans as true/false, lists joined by ``;``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ";".join(v)
    return v


def formula_like(cells: Iterable[Any]) -> int:
    """How many of the cells written exactly a spreadsheet would run as a formula."""
    return sum(1 for c in map(exact_cell, cells) if isinstance(c, str) and c.startswith(FORMULA_START))  # a list as joined


def formula_note(cells: int) -> str:
    """The clause a command's summary line adds for the cells :func:`formula_like` counted ('' for none)."""
    return (
        f"; {cells:,} cell{'' if cells == 1 else 's'} starting with = + - @ written exactly: import, do not open in a spreadsheet"
        if cells
        else ""
    )


def write_json(path: Path, data: Any) -> None:
    with durable_open(path) as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def write_text_atomically(path: str | Path, text: str) -> None:
    """One file replaced in one step (a temporary sibling renamed over it)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def durable_open(path: Path, mode: str = "w") -> Iterator[IO[str]]:
    """A UTF-8 text file with no newline translation (rows keep their own line endings), on disk when the block ends."""
    with path.open(mode, encoding="utf-8", newline="") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def _fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _swap(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; afterwards ``staging`` holds the old plan, if there was one."""
    if not target.exists():
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        return
    old = target.with_name(f".{target.name}.previous-{os.getpid()}")  # never removed by stale clean-up: if this process
    os.rename(target, old)  # dies right here, the previous output survives under this name
    os.rename(staging, target)
    os.rename(old, staging)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # C library older than glibc 2.28
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # the file system cannot exchange
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them: a swap is never cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in stops}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])


def _staging_directory(target: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{target.name}{_PARTIAL}{_HOST}-{os.getpid()}-", dir=target.parent))


def _remove_stale_staging(target: Path) -> None:
    """Remove staging directories of runs on this host killed outright (SIGKILL, power loss): their process is gone.

    Another host's (a shared volume) are left alone: their process ids mean nothing here.
    """
    pattern = re.compile(re.escape(f".{target.name}{_PARTIAL}{_HOST}-") + r"(\d+)-")
    for sibling in target.parent.iterdir():
        found = pattern.match(sibling.name)
        if found is not None and sibling.is_dir() and not _alive(int(found.group(1))):
            shutil.rmtree(sibling, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
