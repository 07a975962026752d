"""Atomic file writes: a killed run never leaves a half-written file that a re-run would trust."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Union

PathLike = Union[str, os.PathLike]

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def _replacing(path: PathLike) -> Iterator[str]:
    """A temporary path beside ``path`` that replaces ``path`` if the block succeeds and is removed if not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the final file the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: PathLike, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``; it replaces ``path`` only if ``write`` returns."""
    with _replacing(path) as tmp:
        write(tmp)


@contextmanager
def atomic_open(path: PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; it replaces ``path`` only if the block succeeds."""
    with _replacing(path) as tmp, open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        yield f


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    """Copy ``src`` to ``dst`` with the same all-or-nothing guarantee."""
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def atomic_write_lines(path: PathLike, lines: Iterable[str]) -> int:
    """Write one string per line; returns the number of lines."""
    count = 0
    with atomic_open(path) as f:
        for line in lines:
            if "\n" in line:
                raise ValueError(f"line {count + 1} for {path} contains a newline: {line[:80]!r}")
            f.write(line + "\n")
            count += 1
    return count


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def read_lines(path: PathLike) -> list[str]:
    """Lines of a UTF-8 text file without their newlines."""
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()
