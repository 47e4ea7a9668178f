"""The numpy DDIM sampler: schedule, one step, the generator loop and its batch safety."""

from __future__ import annotations

import numpy as np
import pytest

from genserve.server import ddim


def toy_eps(x: np.ndarray, t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A row-wise stand-in for a UNet: each row depends on its own x, t and y only."""
    return (0.5 * np.tanh(x) + 1e-3 * t[:, None, None, None] + 0.05 * y[:, None, None, None]).astype(
        np.float32
    )


def test_timesteps_descend_from_the_last_training_step():
    schedule = ddim.DDIMSchedule()
    steps = schedule.timesteps(50)
    assert steps.dtype == np.int64 and len(steps) == 50
    assert steps[0] == 999 and np.all(np.diff(steps) < 0) and steps[-1] >= 0
    assert list(schedule.timesteps(1)) == [999]
    assert len(np.unique(schedule.timesteps(1000))) == 1000


@pytest.mark.parametrize("steps", [0, 1001])
def test_bad_step_count_names_the_argument(steps):
    with pytest.raises(ValueError, match=r"steps=.*allowed range \[1, 1000\]"):
        ddim.DDIMSchedule().timesteps(steps)


def test_unknown_beta_schedule_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="linear, cosine"):
        ddim.DDIMSchedule(beta_schedule="quadratic")
    cosine = ddim.DDIMSchedule(beta_schedule="cosine")
    assert np.all(np.diff(cosine.alphas_cumprod) < 0)
    assert ddim.DDIMSchedule.from_dict(cosine.to_dict()).beta_schedule == "cosine"


def test_a_perfect_noise_prediction_recovers_the_image_in_one_step():
    schedule = ddim.DDIMSchedule()
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (3, 1, 8, 8)).astype(np.float32)
    eps = rng.standard_normal(x0.shape).astype(np.float32)
    t = np.array([10, 500, 999])
    x_t = schedule.add_noise(x0, eps, t)
    out = ddim.ddim_step(schedule, x_t, eps, t, np.full(3, -1), eta=0.0)
    np.testing.assert_allclose(out, x0, atol=2e-4)


def test_eta_needs_noise():
    schedule = ddim.DDIMSchedule()
    x = np.zeros((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="noise"):
        ddim.ddim_step(schedule, x, x, np.array([500]), np.array([400]), eta=1.0)


@pytest.mark.parametrize(("guidance", "rows", "uncond"), [(1.0, 2, False), (0.0, 2, True), (2.5, 4, None)])
def test_one_unet_call_per_step_with_doubled_rows_for_guidance(guidance, rows, uncond):
    seeds = np.array([1, 2])
    labels = np.array([3, 7])
    loop = ddim.sample_loop(
        ddim.DDIMSchedule(),
        ddim.initial_noise(seeds, (1, 4, 4)),
        labels,
        steps=5,
        guidance=guidance,
        eta=0.0,
        seeds=seeds,
    )
    calls = []
    try:
        call = next(loop)
        while True:
            calls.append(call)
            call = loop.send(toy_eps(call.x, call.t, call.y))
    except StopIteration as done:
        result = done.value
    assert len(calls) == 5 and [c.step for c in calls] == list(range(5)) and calls[0].steps == 5
    for call in calls:
        assert call.x.shape[0] == call.t.shape[0] == call.y.shape[0] == rows
        assert call.t.dtype == np.int64 and call.y.dtype == np.int64
    if uncond is None:
        assert list(calls[0].y) == [3, 7, 10, 10]
    else:
        assert np.all(calls[0].y == 10) == uncond
    assert result.shape == (2, 1, 4, 4) and result.dtype == np.float32
    assert np.all(np.abs(result) <= 1.0)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_batched_run_equals_single_runs_row_by_row(eta):
    schedule = ddim.DDIMSchedule()
    seeds = np.array([11, 22, 33, 44])
    labels = np.array([0, 5, 9, 10])
    batched = ddim.sample(schedule, toy_eps, labels, seeds, shape=(1, 6, 6), steps=8, guidance=3.0, eta=eta)
    for i in range(4):
        single = ddim.sample(
            schedule,
            toy_eps,
            labels[i : i + 1],
            seeds[i : i + 1],
            shape=(1, 6, 6),
            steps=8,
            guidance=3.0,
            eta=eta,
        )
        np.testing.assert_array_equal(batched[i : i + 1], single)


def test_eta_noise_comes_from_the_seed():
    schedule = ddim.DDIMSchedule()
    kwargs = dict(shape=(1, 4, 4), steps=4, guidance=1.0)
    a = ddim.sample(schedule, toy_eps, np.array([1, 1]), np.array([5, 6]), eta=1.0, **kwargs)
    b = ddim.sample(schedule, toy_eps, np.array([1, 1]), np.array([5, 6]), eta=1.0, **kwargs)
    c = ddim.sample(schedule, toy_eps, np.array([1, 1]), np.array([5, 6]), eta=0.0, **kwargs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a, c)


def test_bad_loop_arguments_are_rejected():
    schedule = ddim.DDIMSchedule()
    x = ddim.initial_noise(np.array([1]), (1, 2, 2))
    for kwargs, message in [
        (dict(labels=np.array([11])), "labels"),
        (dict(guidance=-1.0), "guidance"),
        (dict(eta=-0.1), "eta"),
        (dict(seeds=np.array([1, 2])), "one row per sample"),
    ]:
        args = dict(labels=np.array([1]), steps=2, guidance=1.0, eta=0.0, seeds=np.array([1])) | kwargs
        with pytest.raises(ValueError, match=message):
            next(ddim.sample_loop(schedule, x, **args))


def test_the_sampler_imports_no_model_code():
    import subprocess
    import sys

    code = "import sys, genserve.server.ddim; assert not {'torch', 'genserve.export'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
