"""The numpy DDIM sampler against diffusers' DDIMScheduler, for the configs a user's pipeline may carry."""

from __future__ import annotations

import numpy as np
import pytest

from genserve.client.contract import seeded_normal
from genserve.server import ddim

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

CONFIGS = [
    # Stable Diffusion 1.x as shipped, and the trailing spacing the in-house text-to-image model uses.
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False,
     "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False,
     "timestep_spacing": "trailing"},
    {"beta_schedule": "linear", "prediction_type": "v_prediction", "timestep_spacing": "linspace",
     "clip_sample": False},
    {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample", "clip_sample": True,
     "clip_sample_range": 0.5, "num_train_timesteps": 500},
]  # fmt: skip


def toy_model(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A row-wise stand-in for a UNet."""
    return (0.6 * np.tanh(x) + 2e-4 * t[:, None, None, None]).astype(np.float32)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['beta_schedule']}-{c.get('timestep_spacing')}")
@pytest.mark.parametrize(("steps", "eta"), [(7, 0.0), (20, 0.5)])
def test_sampling_matches_diffusers_ddim_scheduler(config, steps, eta):
    reference = diffusers.DDIMScheduler(**config)
    ours = ddim.DDIMSchedule.from_diffusers_config(dict(reference.config))
    reference.set_timesteps(steps)
    np.testing.assert_array_equal(ours.timesteps(steps), reference.timesteps.numpy())

    seeds = np.array([3, 4])
    x_T = ddim.initial_noise(seeds, (2, 4, 4))
    loop = ddim.sample_loop(
        ours,
        x_T,
        np.zeros(2, np.int64),
        steps=steps,
        guidance=1.0,
        eta=eta,
        seeds=seeds,
        clip=ours.clip_sample,
    )
    ours_out = ddim.run_sync(loop, lambda x, t, y: toy_model(x, t))

    x = torch.from_numpy(x_T.copy())
    for i, t in enumerate(reference.timesteps):
        out = torch.from_numpy(toy_model(x.numpy(), np.full(2, int(t))))
        noise = torch.from_numpy(seeded_normal(seeds, x[0].numel(), stream=1 + i).reshape(x.shape))
        x = reference.step(out, t, x, eta=eta, variance_noise=noise if eta > 0 else None).prev_sample
    np.testing.assert_allclose(ours_out, x.numpy(), atol=2e-4, rtol=1e-4)


def test_image_to_image_starts_where_diffusers_img2img_does():
    schedule = ddim.DDIMSchedule.from_diffusers_config(
        {
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "timestep_spacing": "trailing",
        }
    )
    assert schedule.start_step(20, 1.0) == 0
    assert schedule.start_step(20, 0.75) == 5  # diffusers: init_timestep = int(20 * 0.75) = 15 steps run
    assert schedule.start_step(20, 0.0) == 20
    with pytest.raises(ValueError, match=r"strength=1.5 is out of range; allowed range \[0, 1\]"):
        schedule.start_step(20, 1.5)
    calls = []
    x0 = np.zeros((1, 2, 4, 4), np.float32)
    start = schedule.start_step(10, 0.5)
    x_T = schedule.add_noise(
        x0, ddim.initial_noise([1], (2, 4, 4)), np.full(1, schedule.timesteps(10)[start])
    )
    loop = ddim.sample_loop(
        schedule, x_T, np.zeros(1, np.int64), steps=10, guidance=1.0, eta=0.0, seeds=[1], start_step=start
    )
    ddim.run_sync(loop, lambda x, t, y: calls.append(int(t[0])) or np.zeros_like(x))
    assert calls == list(schedule.timesteps(10)[start:])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"thresholding": True}, "thresholding=True is not supported"),
        ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr=True is not supported"),
        ({"prediction_type": "flow"}, "prediction_type='flow' is unknown"),
        ({"timestep_spacing": "karras"}, "timestep_spacing='karras' is unknown"),
    ],
)
def test_unsupported_scheduler_settings_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        ddim.DDIMSchedule.from_diffusers_config(config)


def test_text_conditioning_rows_carry_through_guidance():
    schedule = ddim.DDIMSchedule.from_diffusers_config({"timestep_spacing": "trailing"})
    cond, uncond = np.ones((2, 3, 5), np.float32), np.zeros((2, 3, 5), np.float32)
    loop = ddim.sample_loop(
        schedule, np.zeros((2, 1, 2, 2), np.float32), cond, steps=2, guidance=3.0, eta=0.0, seeds=[1, 2],
        unconditional=uncond,
    )  # fmt: skip
    call = next(loop)
    assert call.y.shape == (4, 3, 5)
    np.testing.assert_array_equal(call.y[:2], cond)
    np.testing.assert_array_equal(call.y[2:], uncond)
