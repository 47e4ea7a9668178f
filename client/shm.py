"""Triton system shared memory for a client on the same host as the server.

Input pixels and output images then move through ``/dev/shm`` instead of the socket. A client keeps
a small pool of regions, each registered with the server once and used by one call at a time;
:meth:`SharedMemoryPool.close` unregisters (by the caller) and unlinks them all.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import uuid
from dataclasses import dataclass, field

import numpy as np

from genserve.client._requests import InferRequest

_ALIGN = 64
_MIN_REGION = 1 << 20


def _aligned(size: int) -> int:
    return (size + _ALIGN - 1) // _ALIGN * _ALIGN


@dataclass
class Region:
    """One shared-memory region.

    Attributes:
        name: The name the server knows it by.
        key: The ``/dev/shm`` key.
        size: Bytes.
        handle: tritonclient's handle to the mapping.
        registered: Whether the server currently has it registered.
    """

    name: str
    key: str
    size: int
    handle: object
    registered: bool = False


@dataclass
class Layout:
    """Where a request's tensors sit in a region: ``name -> (offset, bytes)``.

    Attributes:
        inputs: Input tensors written into the region.
        outputs: Outputs the server writes into the region.
        size: Bytes needed in all.
    """

    inputs: dict[str, tuple[int, int]] = field(default_factory=dict)
    outputs: dict[str, tuple[int, int]] = field(default_factory=dict)
    size: int = 0

    @classmethod
    def plan(cls, request: InferRequest) -> Layout:
        """Numeric inputs and the outputs with a known bound go to shared memory; BYTES stay inline."""
        layout, offset = cls(), 0
        for name, array in request.inputs.items():
            if array.dtype != np.object_:
                layout.inputs[name] = (offset, array.nbytes)
                offset = _aligned(offset + array.nbytes)
        for name in request.outputs:
            if name in request.output_bounds:
                layout.outputs[name] = (offset, request.output_bounds[name])
                offset = _aligned(offset + request.output_bounds[name])
        layout.size = offset
        return layout


class SharedMemoryPool:
    """Regions for one client; thread-safe.

    Args:
        prefix: Start of every region's name, unique to the client.
    """

    def __init__(self, prefix: str | None = None):
        # 128 random bits: another client can name a region in a request only if it knows the name.
        self.prefix = prefix or f"genserve_{uuid.uuid4().hex}"
        self._free: list[Region] = []
        self._all: list[Region] = []
        self._lock = threading.Lock()
        self._counter = itertools.count()

    def acquire(self, size: int) -> Region:
        """A free region of at least ``size`` bytes, created if none is free (not yet registered)."""
        with self._lock:
            for region in self._free:
                if region.size >= size:
                    self._free.remove(region)
                    return region
            number = next(self._counter)
        from tritonclient.utils import shared_memory

        byte_size = max(_MIN_REGION, 1 << (max(size, 1) - 1).bit_length())
        name = f"{self.prefix}_{number}"
        handle = shared_memory.create_shared_memory_region(name, f"/{name}", byte_size, create_only=True)
        region = Region(name, f"/{name}", byte_size, handle)
        with self._lock:
            self._all.append(region)
        return region

    def release(self, region: Region) -> None:
        """Give a region back for the next call."""
        with self._lock:
            self._free.append(region)

    def regions(self) -> list[Region]:
        """Every region created so far."""
        with self._lock:
            return list(self._all)

    def forget_registrations(self) -> None:
        """Mark every region unregistered (the server lost them, e.g. it restarted)."""
        for region in self.regions():
            region.registered = False

    def destroy(self) -> None:
        """Unmap and unlink every region; the caller unregisters them with the server first."""
        from tritonclient.utils import shared_memory

        with self._lock:
            regions, self._all, self._free = self._all, [], []
        for region in regions:
            # Best effort at close: the key is unique to this client.
            with contextlib.suppress(Exception):
                shared_memory.destroy_shared_memory_region(region.handle)


def write_inputs(region: Region, layout: Layout, request: InferRequest) -> None:
    """Copy the request's shared-memory inputs into the region."""
    from tritonclient.utils import shared_memory

    for name, (offset, _) in layout.inputs.items():
        shared_memory.set_shared_memory_region(region.handle, [request.inputs[name]], offset=offset)


def read_output(region: Region, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A copy of an output the server wrote into the region."""
    from tritonclient.utils import shared_memory

    return np.array(shared_memory.get_contents_as_numpy(region.handle, dtype, shape, offset=offset))
