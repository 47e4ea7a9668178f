"""The DDIM sampler in plain numpy: a noise schedule, one step, and the denoising loop written once.

No model is imported here. The loop is a generator that *asks* for the UNet's noise prediction and
receives it through ``send``, so the offline sampler (PyTorch or ONNX Runtime), the parity tests and
the serving pipeline (which batches the UNet calls of many requests together) all drive the same
code::

    loop = sample_loop(schedule, x_T, labels, steps=20, guidance=2.0, eta=0.0, seeds=seeds)
    call = next(loop)                      # UNetCall: x [R, C, H, W], t [R], y [R]
    while True:
        try:
            call = loop.send(unet(call.x, call.t, call.y))
        except StopIteration as done:
            images = done.value            # [N, C, H, W] in [-1, 1]
            break

Every row depends only on its own seed and label: rows at different steps, from different requests,
can share a UNet batch (the UNet takes its timestep per row).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np

from genserve.client.contract import NUM_CLASSES, seeded_normal

UNCONDITIONAL_LABEL = NUM_CLASSES
"""The label the UNet reads as "no label" (trained by label dropout, used for guidance)."""

BETA_SCHEDULES = ("linear", "cosine")


class DDIMSchedule:
    """The DDPM noise schedule the UNet was trained with, and DDIM's choice of timesteps.

    Args:
        num_train_timesteps: Number of diffusion steps in training, ``T``.
        beta_schedule: ``"linear"`` (Ho et al. 2020) or ``"cosine"`` (Nichol & Dhariwal 2021).
        beta_start: First beta of the linear schedule.
        beta_end: Last beta of the linear schedule.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ) -> None:
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps={num_train_timesteps} must be at least 1")
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(
                f"beta_schedule={beta_schedule!r} is unknown; allowed: {', '.join(BETA_SCHEDULES)}"
            )
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.beta_start = beta_start
        self.beta_end = beta_end
        T = num_train_timesteps
        if beta_schedule == "linear":
            betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
        else:
            s = 0.008
            f = np.cos((np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * np.pi / 2) ** 2
            betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
        self.betas = betas
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        """``alpha_bar[t]`` for t in 0..T-1, float64."""

    def to_dict(self) -> dict[str, float | int | str]:
        """The constructor arguments, for a model card."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
        }

    @classmethod
    def from_dict(cls, values: dict) -> DDIMSchedule:
        """Rebuild a schedule from :meth:`to_dict`'s output."""
        return cls(**values)

    def alpha_bar(self, t: np.ndarray) -> np.ndarray:
        """``alpha_bar`` per row; ``t == -1`` (after the last step) gives 1.0 (the clean image)."""
        t = np.asarray(t, dtype=np.int64)
        return np.where(t >= 0, self.alphas_cumprod[np.clip(t, 0, None)], 1.0)

    def timesteps(self, steps: int) -> np.ndarray:
        """``steps`` descending int64 timesteps, evenly spaced and ending one interval above 0.

        The "trailing" spacing starts at ``T - 1``, so the first step sees pure noise as in training.

        Raises:
            ValueError: If ``steps`` is outside ``[1, num_train_timesteps]``.
        """
        T = self.num_train_timesteps
        if not 1 <= int(steps) <= T:
            raise ValueError(f"steps={steps} is out of range; allowed range [1, {T}]")
        return (np.round(np.arange(T, 0, -T / int(steps))) - 1).astype(np.int64)

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, t: np.ndarray) -> np.ndarray:
        """``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise``, per row (for calibration data)."""
        a = _rows(self.alpha_bar(t), x0.ndim)
        return (np.sqrt(a) * x0 + np.sqrt(1.0 - a) * noise).astype(np.float32)


@dataclass(frozen=True)
class UNetCall:
    """What the loop needs from the UNet: the noise prediction ``eps`` for these rows.

    Attributes:
        x: float32 ``[R, C, H, W]`` noisy images.
        t: int64 ``[R]`` timesteps.
        y: int64 ``[R]`` labels; ``UNCONDITIONAL_LABEL`` means none.
        step: Index of this step, 0-based.
        steps: Number of steps in the loop.
    """

    x: np.ndarray
    t: np.ndarray
    y: np.ndarray
    step: int
    steps: int


def _rows(values: np.ndarray, ndim: int) -> np.ndarray:
    """Shape a per-row vector ``[R]`` to broadcast over ``[R, ...]`` with ``ndim`` dimensions."""
    return np.asarray(values, dtype=np.float64).reshape((-1,) + (1,) * (ndim - 1))


def ddim_step(
    schedule: DDIMSchedule,
    x: np.ndarray,
    eps: np.ndarray,
    t: np.ndarray,
    t_prev: np.ndarray,
    eta: float | np.ndarray = 0.0,
    noise: np.ndarray | None = None,
    clip: float | None = 1.0,
) -> np.ndarray:
    """One DDIM update ``x_t -> x_{t_prev}`` (Song et al. 2021, eq. 12), row by row.

    Args:
        schedule: The training noise schedule.
        x: float32 ``[R, ...]`` current samples.
        eps: The UNet's noise prediction for ``x``, same shape.
        t: int64 ``[R]`` current timesteps.
        t_prev: int64 ``[R]`` next timesteps; ``-1`` after the last step.
        eta: 0 gives deterministic DDIM, 1 DDPM-like ancestral noise; scalar or ``[R]``.
        noise: Standard normal noise shaped like ``x``; needed when any ``eta > 0``.
        clip: Clip the predicted clean image to ``[-clip, clip]`` (the data range); ``None`` disables.

    Returns:
        float32 ``x_{t_prev}``, shaped like ``x``.
    """
    nd = x.ndim
    a_t = _rows(schedule.alpha_bar(t), nd)
    a_prev = _rows(schedule.alpha_bar(t_prev), nd)
    x64, eps64 = x.astype(np.float64), eps.astype(np.float64)
    x0 = (x64 - np.sqrt(1.0 - a_t) * eps64) / np.sqrt(a_t)
    if clip is not None:
        # Only the clean-image estimate is clipped; the direction keeps the model's eps (recomputing
        # eps from the clipped estimate left visible noise in the digits' samples).
        x0 = np.clip(x0, -clip, clip)
    eta_rows = _rows(np.broadcast_to(np.asarray(eta, dtype=np.float64), (x.shape[0],)), nd)
    sigma = eta_rows * np.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
    x_prev = np.sqrt(a_prev) * x0 + np.sqrt(np.clip(1.0 - a_prev - sigma**2, 0.0, None)) * eps64
    if np.any(sigma > 0):
        if noise is None:
            raise ValueError("noise is required when eta > 0")
        x_prev = x_prev + sigma * noise.astype(np.float64)
    return x_prev.astype(np.float32)


def initial_noise(seeds: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x_T`` for each seed: float32 ``[N, *shape]`` standard normal, from the contract's seeded noise."""
    return seeded_normal(seeds, int(np.prod(shape)), stream=0).reshape((-1, *shape))


def sample_loop(
    schedule: DDIMSchedule,
    x_T: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    guidance: float,
    eta: float,
    seeds: np.ndarray,
    clip: float | None = 1.0,
) -> Generator[UNetCall, np.ndarray, np.ndarray]:
    """The DDIM denoising loop, as a generator that yields one UNet call per step.

    Classifier-free guidance: ``eps = eps_uncond + guidance * (eps_cond - eps_uncond)``. So
    ``guidance == 1`` is the plain conditional model and ``guidance == 0`` the unconditional one: each
    needs one row per sample. Any other value yields ONE call of ``2N`` rows: the ``N`` conditional rows
    first, then the same ``x`` and ``t`` with label ``UNCONDITIONAL_LABEL``. The eps sent back must have
    the rows of the call, in order.

    Args:
        schedule: The training noise schedule.
        x_T: float32 ``[N, C, H, W]`` starting noise, e.g. ``initial_noise(seeds, (C, H, W))``.
        labels: int64 ``[N]`` labels in ``0..NUM_CLASSES`` (``NUM_CLASSES`` = no label).
        steps: Number of DDIM steps, ``1..num_train_timesteps``.
        guidance: Classifier-free guidance scale, ``>= 0``.
        eta: 0 = deterministic DDIM; > 0 adds per-step noise, ``seeded_normal(seeds, ., stream=1 + step)``.
        seeds: int ``[N]`` per-row seeds for that noise.
        clip: Clip of the predicted clean image, see :func:`ddim_step`.

    Yields:
        A :class:`UNetCall` per step.

    Returns:
        float32 ``[N, C, H, W]`` samples in ``[-1, 1]``.
    """
    x = np.asarray(x_T, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    seeds = np.asarray(seeds).reshape(-1)
    N = x.shape[0]
    if labels.shape[0] != N or seeds.shape[0] != N:
        raise ValueError(
            f"x_T, labels and seeds need one row per sample; got {N}, {len(labels)}, {len(seeds)}"
        )
    if N and (labels.min() < 0 or labels.max() > UNCONDITIONAL_LABEL):
        raise ValueError(f"labels must be in [0, {UNCONDITIONAL_LABEL}]")
    if guidance < 0 or not np.isfinite(guidance):
        raise ValueError(f"guidance={guidance} must be a finite number >= 0")
    if eta < 0:
        raise ValueError(f"eta={eta} must be >= 0")
    timesteps = schedule.timesteps(steps)
    unconditional = np.full(N, UNCONDITIONAL_LABEL, dtype=np.int64)
    for i, t_now in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t = np.full(N, t_now, dtype=np.int64)
        if guidance == 1.0:
            eps = yield UNetCall(x, t, labels, i, len(timesteps))
        elif guidance == 0.0:
            eps = yield UNetCall(x, t, unconditional, i, len(timesteps))
        else:
            both = yield UNetCall(
                np.concatenate([x, x]),
                np.concatenate([t, t]),
                np.concatenate([labels, unconditional]),
                i,
                len(timesteps),
            )
            both = np.asarray(both, dtype=np.float32)
            eps_c, eps_u = both[:N], both[N:]
            eps = eps_u + np.float32(guidance) * (eps_c - eps_u)
        eps = np.asarray(eps, dtype=np.float32).reshape(x.shape)
        noise = (
            seeded_normal(seeds, int(np.prod(x.shape[1:])), stream=1 + i).reshape(x.shape)
            if eta > 0
            else None
        )
        x = ddim_step(schedule, x, eps, t, np.full(N, t_prev, dtype=np.int64), eta, noise, clip)
    return x


def run_sync(
    loop: Generator[UNetCall, np.ndarray, np.ndarray],
    eps_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Drive a :func:`sample_loop` generator to the end with ``eps_fn(x, t, y) -> eps``; return its result."""
    try:
        call = next(loop)
        while True:
            call = loop.send(eps_fn(call.x, call.t, call.y))
    except StopIteration as done:
        return done.value


def sample(
    schedule: DDIMSchedule,
    eps_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    labels: np.ndarray,
    seeds: np.ndarray,
    *,
    shape: tuple[int, ...] = (1, 32, 32),
    steps: int = 20,
    guidance: float = 2.0,
    eta: float = 0.0,
) -> np.ndarray:
    """Sample synchronously: ``x_T`` from the seeds, then the DDIM loop driven by ``eps_fn``.

    Args:
        schedule: The training noise schedule.
        eps_fn: The UNet, ``eps_fn(x [R, C, H, W] f32, t [R] i64, y [R] i64) -> eps [R, C, H, W]``.
        labels: int64 ``[N]`` labels.
        seeds: int ``[N]`` seeds; a row's image depends only on its seed, label and the settings.
        shape: ``(C, H, W)`` of one sample.
        steps: DDIM steps.
        guidance: Classifier-free guidance scale (see :func:`sample_loop`).
        eta: DDIM eta.

    Returns:
        float32 ``[N, C, H, W]`` in ``[-1, 1]``.
    """
    x_T = initial_noise(seeds, shape)
    loop = sample_loop(schedule, x_T, labels, steps=steps, guidance=guidance, eta=eta, seeds=seeds)
    return run_sync(loop, eps_fn)
