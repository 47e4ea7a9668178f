"""Triton's own shared-memory regions in ``/dev/shm``, and removing those whose owner is gone.

Triton's Python backend (and every Python-based backend, such as genserve's ``onnxruntime``) gives
each model instance a region named ``triton_<backend>_backend_shm_region_<uuid>``. The stub and the
server unlink it on a clean shutdown; a killed server leaves it behind, tens of megabytes each.

A region belongs to a live server exactly when some process maps it or holds it open, which
``/proc/<pid>/maps`` and ``/proc/<pid>/fd`` show. A region no process uses is stale and removed.
A region younger than ``min_age`` is left alone, because a server that is starting creates its
region a moment before it maps it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

SHM_DIR = Path("/dev/shm")
SERVER_REGION = re.compile(r"^triton_[A-Za-z0-9_]+_shm_region_[0-9A-Za-z-]+$")
_DEFAULT_MIN_AGE_S = 2.0


def server_regions(shm_dir: Path = SHM_DIR) -> list[str]:
    """Names of Triton backend regions present in ``shm_dir``."""
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return []
    return sorted(name for name in names if SERVER_REGION.match(name))


def regions_in_use(pids: Iterable[int] | None = None, shm_dir: Path = SHM_DIR) -> set[str]:
    """Names of ``shm_dir`` entries that the given processes (by default: all) map or hold open."""
    if pids is None:
        pids = (int(entry) for entry in os.listdir("/proc") if entry.isdigit())
    prefix = f"{shm_dir}/"
    used: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                at = line.find(prefix)
                if at >= 0:
                    used.add(line[at + len(prefix) :].split(" (deleted)")[0].strip())
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith(prefix):
                        used.add(target[len(prefix) :])
    return used


def remove_stale_regions(
    *, also: Iterable[str] = (), min_age: float = _DEFAULT_MIN_AGE_S, shm_dir: Path = SHM_DIR
) -> list[str]:
    """Unlink every Triton backend region no live process uses; return the names removed.

    Args:
        also: Names known to belong to a server that has ended; removed whatever their age, when
            no process uses them.
        min_age: Seconds a region of unknown origin must exist before it counts as stale.
        shm_dir: The shared-memory folder.
    """
    known = set(also)
    candidates = set(server_regions(shm_dir)) | {name for name in known if (shm_dir / name).exists()}
    if not candidates:
        return []
    in_use = regions_in_use(shm_dir=shm_dir)
    now = time.time()
    removed = []
    for name in sorted(candidates - in_use):
        path = shm_dir / name
        try:
            if name not in known and now - path.stat().st_ctime < min_age:
                continue
            path.unlink()
        except OSError:
            continue
        removed.append(name)
    return removed
