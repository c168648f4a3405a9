"""Match index snapshots on disk, memory-mapped read-only by every API process of a host.

Why: at 10,000,000 hashes a match index is about 1.3 GB. Built in each API process, four processes hold
four copies. Written once as plain `.npy` arrays and mapped with `np.load(mmap_mode="r")`, the pages live
in the page cache once per host, whatever the number of processes, and a process starts by mapping a
file instead of streaming every hash out of PostgreSQL and sorting it.

A snapshot is a directory `NAME-CURSOR-RANDOM/` with one `.npy` per array and `meta.json`; CURSOR is the
change-log id it includes everything up to, so a process that maps it applies only the changes after
that (`services.evidence.Matcher`). It is written under a temporary name and renamed, so a reader never
sees half of one, and writers take `NAME.lock` (flock) so that one process builds while the others wait
and then map its result. A mapped snapshot that is later deleted stays readable by the processes that
mapped it (POSIX unlink semantics); only the two newest are kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

KEEP = 2


@dataclass(frozen=True)
class Snapshot:
    path: Path
    cursor: int
    meta: dict[str, Any]

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Every array, mapped read-only: nothing is read until a page is touched."""
        return {p.stem: np.load(p, mmap_mode="r") for p in self.path.glob("*.npy")}


@contextlib.contextmanager
def locked(directory: Path, name: str) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f"{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def newest(directory: Path, name: str, meta: Mapping[str, Any]) -> Snapshot | None:
    """The snapshot with the highest cursor whose meta (threshold, categories) matches."""
    best: Snapshot | None = None
    for path in directory.glob(f"{name}-*"):
        if not path.is_dir():
            continue
        try:
            found = json.loads((path / "meta.json").read_text())
            cursor = int(path.name.split("-")[1])
        except (OSError, ValueError, IndexError):
            continue
        if all(found.get(k) == v for k, v in meta.items()) and (best is None or cursor > best.cursor):
            best = Snapshot(path, cursor, found)
    return best


def write(
    directory: Path, name: str, cursor: int, arrays: Mapping[str, npt.NDArray[Any]], meta: Mapping[str, Any]
) -> Snapshot:
    """Write a snapshot atomically (call under `locked`), and prune all but the newest KEEP."""
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{name}-{uuid.uuid4().hex}.tmp"
    temporary.mkdir()
    for key, array in arrays.items():
        np.save(temporary / f"{key}.npy", np.ascontiguousarray(array))
    (temporary / "meta.json").write_text(json.dumps(dict(meta), sort_keys=True))
    target = directory / f"{name}-{cursor:020d}-{uuid.uuid4().hex[:8]}"
    os.rename(temporary, target)
    snapshots = sorted(p for p in directory.glob(f"{name}-*") if p.is_dir())
    for old in snapshots[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return Snapshot(target, cursor, dict(meta))
