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

BETA_SCHEDULES = ("linear", "cosine", "scaled_linear", "squaredcos_cap_v2")
"""``squaredcos_cap_v2`` is diffusers' name for the same cosine schedule."""
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")
PREV_TIMESTEP_RULES = ("next", "ratio")


class DDIMSchedule:
    """The DDPM noise schedule the UNet was trained with, and DDIM's choice of timesteps.

    The keyword-only arguments describe samplers trained elsewhere (a diffusers ``scheduler_config.json``,
    see :meth:`from_diffusers_config`); their defaults are the digits UNet's sampler.

    Args:
        num_train_timesteps: Number of diffusion steps in training, ``T``.
        beta_schedule: ``"linear"`` (Ho et al. 2020), ``"cosine"`` (Nichol & Dhariwal 2021; diffusers calls
            it ``"squaredcos_cap_v2"``) or ``"scaled_linear"`` (linear in ``sqrt(beta)``, latent diffusion).
        beta_start: First beta of the linear schedules.
        beta_end: Last beta of the linear schedules.
        prediction_type: What the network predicts: ``"epsilon"`` (the noise), ``"v_prediction"``
            (``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0``) or ``"sample"`` (``x0`` itself).
        timestep_spacing: How :meth:`timesteps` spreads the steps over ``[0, T)``: ``"trailing"`` (starts
            at ``T - 1``), ``"leading"`` (``k * (T // steps) + steps_offset``) or ``"linspace"``.
        steps_offset: Added to every ``"leading"`` timestep (Stable Diffusion uses 1).
        set_alpha_to_one: ``alpha_bar`` after the last step is 1 (the clean image); if false it is
            ``alpha_bar[0]``, as some diffusers configs ask.
        prev_timestep_rule: The timestep a step moves to: ``"next"`` (the next of :meth:`timesteps`) or
            ``"ratio"`` (``t - T // steps``, what diffusers' DDIM scheduler does).
        clip_sample: Clip of the predicted clean image a sampler should use (see :func:`ddim_step`);
            ``None`` for none (latent diffusion does not clip).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        *,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "trailing",
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
        prev_timestep_rule: str = "next",
        clip_sample: float | None = 1.0,
    ) -> None:
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps={num_train_timesteps} must be at least 1")
        for name, value, allowed in (
            ("beta_schedule", beta_schedule, BETA_SCHEDULES),
            ("prediction_type", prediction_type, PREDICTION_TYPES),
            ("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS),
            ("prev_timestep_rule", prev_timestep_rule, PREV_TIMESTEP_RULES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is unknown; allowed: {', '.join(allowed)}")
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.prediction_type = prediction_type
        self.timestep_spacing = timestep_spacing
        self.steps_offset = int(steps_offset)
        self.set_alpha_to_one = bool(set_alpha_to_one)
        self.prev_timestep_rule = prev_timestep_rule
        self.clip_sample = None if clip_sample is None else float(clip_sample)
        T = num_train_timesteps
        if beta_schedule == "linear":
            betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
        elif beta_schedule == "scaled_linear":
            betas = np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
        else:
            s = 0.008
            f = np.cos((np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * np.pi / 2) ** 2
            betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
        self.betas = betas
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        """``alpha_bar[t]`` for t in 0..T-1, float64."""

        self.final_alpha_bar = 1.0 if self.set_alpha_to_one else float(self.alphas_cumprod[0])
        """``alpha_bar`` after the last step."""

    def to_dict(self) -> dict[str, float | int | str | bool | None]:
        """The constructor arguments, for a model card (keyword arguments only where not the default)."""
        values: dict[str, float | int | str | bool | None] = {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
        }
        for name, default in _KEYWORD_DEFAULTS.items():
            if getattr(self, name) != default:
                values[name] = getattr(self, name)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> DDIMSchedule:
        """Rebuild a schedule from :meth:`to_dict`'s output."""
        return cls(**values)

    @classmethod
    def from_diffusers_config(cls, config: dict) -> DDIMSchedule:
        """The schedule of a diffusers ``scheduler_config.json``, sampled as its ``DDIMScheduler`` does.

        Reads ``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule``, ``prediction_type``,
        ``timestep_spacing``, ``steps_offset``, ``set_alpha_to_one``, ``clip_sample`` and
        ``clip_sample_range`` (with diffusers' defaults where missing).

        Raises:
            ValueError: naming the setting, for what this sampler does not implement (explicit
                ``trained_betas``, ``thresholding``, ``rescale_betas_zero_snr``) or unknown values.
        """
        for name in ("trained_betas", "thresholding", "rescale_betas_zero_snr"):
            if config.get(name):
                raise ValueError(f"scheduler config: {name}={config[name]!r} is not supported")
        clip = config.get("clip_sample", True)
        return cls(
            num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
            beta_schedule=str(config.get("beta_schedule", "linear")),
            beta_start=float(config.get("beta_start", 1e-4)),
            beta_end=float(config.get("beta_end", 0.02)),
            prediction_type=str(config.get("prediction_type", "epsilon")),
            timestep_spacing=str(config.get("timestep_spacing", "leading")),
            steps_offset=int(config.get("steps_offset", 0)),
            set_alpha_to_one=bool(config.get("set_alpha_to_one", True)),
            prev_timestep_rule="ratio",
            clip_sample=float(config.get("clip_sample_range", 1.0)) if clip else None,
        )

    def alpha_bar(self, t: np.ndarray) -> np.ndarray:
        """``alpha_bar`` per row; ``t == -1`` (after the last step) gives :attr:`final_alpha_bar`."""
        t = np.asarray(t, dtype=np.int64)
        return np.where(t >= 0, self.alphas_cumprod[np.clip(t, 0, None)], self.final_alpha_bar)

    def timesteps(self, steps: int) -> np.ndarray:
        """``steps`` descending int64 timesteps, spread as :attr:`timestep_spacing` says.

        The default "trailing" spacing is evenly spaced, starts at ``T - 1`` (so the first step sees pure
        noise as in training) and ends one interval above 0.

        Raises:
            ValueError: If ``steps`` is outside ``[1, num_train_timesteps]``.
        """
        T = self.num_train_timesteps
        if not 1 <= int(steps) <= T:
            raise ValueError(f"steps={steps} is out of range; allowed range [1, {T}]")
        steps = int(steps)
        if self.timestep_spacing == "leading":
            return (np.arange(steps) * (T // steps))[::-1].astype(np.int64) + self.steps_offset
        if self.timestep_spacing == "linspace":
            return np.linspace(0, T - 1, steps).round()[::-1].astype(np.int64)
        return (np.round(np.arange(T, 0, -T / steps)) - 1).astype(np.int64)

    def prev_timesteps(self, steps: int) -> np.ndarray:
        """The timestep each of :meth:`timesteps` moves to (``-1``: past the last step), per the rule."""
        timesteps = self.timesteps(steps)
        if self.prev_timestep_rule == "ratio":
            prev = timesteps - self.num_train_timesteps // int(steps)
            return np.where(prev >= 0, prev, -1).astype(np.int64)
        return np.append(timesteps[1:], -1).astype(np.int64)

    def start_step(self, steps: int, strength: float) -> int:
        """Steps skipped when sampling starts from a noised image (image-to-image), as diffusers counts them.

        ``strength`` 1 skips none (the image is fully noised), 0 skips all (the image comes back
        unchanged); the sampler noises the image to ``timesteps(steps)[start]``.

        Raises:
            ValueError: If ``strength`` is outside ``[0, 1]``.
        """
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength={strength} is out of range; allowed range [0, 1]")
        return int(steps) - min(int(int(steps) * float(strength)), int(steps))

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, t: np.ndarray) -> np.ndarray:
        """``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise``, per row (for calibration data)."""
        a = _rows(self.alpha_bar(t), x0.ndim)
        return (np.sqrt(a) * x0 + np.sqrt(1.0 - a) * noise).astype(np.float32)


_KEYWORD_DEFAULTS = {
    "prediction_type": "epsilon",
    "timestep_spacing": "trailing",
    "steps_offset": 0,
    "set_alpha_to_one": True,
    "prev_timestep_rule": "next",
    "clip_sample": 1.0,
}


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
        eps: The UNet's output for ``x``, same shape: the noise, or ``v`` or ``x0`` as the schedule's
            ``prediction_type`` says.
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
    if schedule.prediction_type == "v_prediction":
        x0 = np.sqrt(a_t) * x64 - np.sqrt(1.0 - a_t) * eps64
        eps64 = np.sqrt(a_t) * eps64 + np.sqrt(1.0 - a_t) * x64
    elif schedule.prediction_type == "sample":
        x0 = eps64
        eps64 = (x64 - np.sqrt(a_t) * x0) / np.sqrt(1.0 - a_t)
    else:
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
    unconditional: np.ndarray | None = None,
    start_step: int = 0,
) -> Generator[UNetCall, np.ndarray, np.ndarray]:
    """The DDIM denoising loop, as a generator that yields one UNet call per step.

    Classifier-free guidance: ``eps = eps_uncond + guidance * (eps_cond - eps_uncond)``. So
    ``guidance == 1`` is the plain conditional model and ``guidance == 0`` the unconditional one: each
    needs one row per sample. Any other value yields ONE call of ``2N`` rows: the ``N`` conditional rows
    first, then the same ``x`` and ``t`` with the unconditional rows (label ``UNCONDITIONAL_LABEL``
    unless ``unconditional`` is given). The eps sent back must have the rows of the call, in order.

    Args:
        schedule: The training noise schedule.
        x_T: float32 ``[N, C, H, W]`` starting noise, e.g. ``initial_noise(seeds, (C, H, W))``; when
            ``start_step > 0``, the image noised to ``timesteps(steps)[start_step]``.
        labels: The conditioning, one row per sample: int64 ``[N]`` labels in ``0..NUM_CLASSES``
            (``NUM_CLASSES`` = no label), or any array ``[N, ...]`` (e.g. text embeddings) when
            ``unconditional`` is given.
        steps: Number of DDIM steps, ``1..num_train_timesteps``.
        guidance: Classifier-free guidance scale, ``>= 0``.
        eta: 0 = deterministic DDIM; > 0 adds per-step noise, ``seeded_normal(seeds, ., stream=1 + step)``.
        seeds: int ``[N]`` per-row seeds for that noise.
        clip: Clip of the predicted clean image, see :func:`ddim_step`.
        unconditional: The "no condition" rows for guidance, shaped like ``labels`` (e.g. the embedding
            of an empty or negative prompt); ``None`` for label conditioning.
        start_step: Steps to skip (image-to-image, see :meth:`DDIMSchedule.start_step`); ``UNetCall.step``
            still counts from the first of the ``steps``.

    Yields:
        A :class:`UNetCall` per step.

    Returns:
        float32 ``[N, C, H, W]`` samples in ``[-1, 1]``.
    """
    x = np.asarray(x_T, dtype=np.float32)
    seeds = np.asarray(seeds).reshape(-1)
    N = x.shape[0]
    if unconditional is None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if N and (labels.min() < 0 or labels.max() > UNCONDITIONAL_LABEL):
            raise ValueError(f"labels must be in [0, {UNCONDITIONAL_LABEL}]")
        unconditional = np.full(N, UNCONDITIONAL_LABEL, dtype=np.int64)
    elif np.shape(unconditional) != np.shape(labels):
        raise ValueError(f"unconditional has shape {np.shape(unconditional)}; labels {np.shape(labels)}")
    if labels.shape[0] != N or seeds.shape[0] != N:
        raise ValueError(
            f"x_T, labels and seeds need one row per sample; got {N}, {len(labels)}, {len(seeds)}"
        )
    if guidance < 0 or not np.isfinite(guidance):
        raise ValueError(f"guidance={guidance} must be a finite number >= 0")
    if eta < 0:
        raise ValueError(f"eta={eta} must be >= 0")
    timesteps = schedule.timesteps(steps)
    prev_timesteps = schedule.prev_timesteps(steps)
    for i, t_now in enumerate(timesteps):
        if i < start_step:
            continue
        t_prev = prev_timesteps[i]
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
