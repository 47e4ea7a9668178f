"""Removing Triton's shared-memory regions whose owner is gone, and only those."""

from __future__ import annotations

import mmap
import os
import uuid
from pathlib import Path

from genserve.server.launcher import describe_exit
from genserve.server.shm_regions import SHM_DIR, regions_in_use, remove_stale_regions, server_regions


def make_region(shm_dir: Path) -> Path:
    path = shm_dir / f"triton_python_backend_shm_region_{uuid.uuid4()}"
    path.write_bytes(bytes(4096))
    return path


def test_a_region_no_process_uses_is_removed_and_a_mapped_one_is_kept() -> None:
    stale, mapped = make_region(SHM_DIR), make_region(SHM_DIR)
    other = SHM_DIR / f"genserve_client_{uuid.uuid4().hex}"  # not Triton's: never touched
    other.write_bytes(b"x")
    try:
        with mapped.open("r+b") as handle, mmap.mmap(handle.fileno(), 4096):
            assert mapped.name in regions_in_use([os.getpid()])
            removed = remove_stale_regions(min_age=0)
            assert stale.name in removed and not stale.exists()
            assert mapped.exists() and mapped.name not in removed
        assert other.exists()
    finally:
        for path in (stale, mapped, other):
            path.unlink(missing_ok=True)


def test_a_young_region_of_unknown_origin_is_left_for_its_starting_server() -> None:
    young = make_region(SHM_DIR)
    try:
        assert young.name in server_regions()
        assert young.name not in remove_stale_regions(min_age=60)
        assert young.name in remove_stale_regions(also=[young.name], min_age=60)
    finally:
        young.unlink(missing_ok=True)


def test_exit_descriptions_name_the_signal_or_the_code() -> None:
    assert describe_exit(-9) == "was killed by signal SIGKILL (9)"
    assert describe_exit(-11) == "was killed by signal SIGSEGV (11)"
    assert describe_exit(3) == "exited with code 3"
