"""Pure logic of gather / check / scatter used by every Python model."""

import numpy as np
import pytest

from genserve.server.batching import RequestError, check_inputs, concatenate, group_by_shape, split_rows
from genserve.server.model_config import ModelSpec

CONFIG = {
    "name": "m",
    "max_batch_size": 8,
    "input": [
        {"name": "x", "data_type": "TYPE_FP32", "dims": ["4"]},
        {"name": "label", "data_type": "TYPE_INT64", "dims": ["1"], "reshape": {"shape": []}},
        {"name": "img", "data_type": "TYPE_UINT8", "dims": ["-1", "-1", "3"], "optional": True},
    ],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["4"]}],
    "parameters": {"intra_op_thread_count": {"string_value": "2"}},
}
SPEC = ModelSpec.from_triton(CONFIG)


def arrays(rows=2, **overrides):
    base = {"x": np.zeros((rows, 4), np.float32), "label": np.zeros(rows, np.int64)}
    base.update(overrides)
    return base


def test_config_is_parsed():
    assert SPEC.max_batch_size == 8 and SPEC.batched
    assert [t.name for t in SPEC.inputs] == ["x", "label", "img"]
    assert SPEC.inputs[1].dims == (1,) and SPEC.inputs[1].reshape == ()
    assert SPEC.inputs[2].optional and SPEC.inputs[2].dims == (-1, -1, 3)
    assert SPEC.inputs[0].triton_dtype == "FP32"
    assert SPEC.parameters == {"intra_op_thread_count": "2"}


def test_valid_request_gives_row_count():
    assert check_inputs(SPEC, arrays(3)) == 3
    assert check_inputs(SPEC, arrays(2, img=np.zeros((2, 5, 7, 3), np.uint8))) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"x": None}, "input 'x' is missing"),
        ({"x": np.zeros((2, 4), np.float64)}, "input 'x' has dtype float64; expected FP32"),
        ({"x": np.zeros((2, 5), np.float32)}, "input 'x' has shape [2, 5]; expected [batch, 4]"),
        ({"x": np.zeros((4,), np.float32)}, "input 'x' has shape [4]; expected [batch, 4]"),
        ({"label": np.zeros(3, np.int64)}, "input 'label' has 3 rows; other inputs have 2"),
        (
            {"img": np.zeros((2, 5, 7, 4), np.uint8)},
            "input 'img' has shape [2, 5, 7, 4]; expected [batch, -1, -1, 3]",
        ),
    ],
)
def test_bad_request_names_the_input(overrides, message):
    with pytest.raises(RequestError) as error:
        check_inputs(SPEC, arrays(2, **overrides))
    assert str(error.value) == message


def test_batch_over_maximum_is_rejected():
    with pytest.raises(RequestError, match=r"input 'x' has batch size 9; allowed 1\.\.8"):
        check_inputs(SPEC, arrays(9))


def test_unbatched_model_checks_full_shape():
    spec = ModelSpec.from_triton({**CONFIG, "max_batch_size": 0, "input": CONFIG["input"][:1]})
    assert check_inputs(spec, {"x": np.zeros(4, np.float32)}) == 1
    with pytest.raises(RequestError, match=r"expected \[4\]"):
        check_inputs(spec, {"x": np.zeros((1, 4), np.float32)})


def test_gather_and_scatter_round_trip():
    requests = [{"x": np.full((n, 4), n, np.float32)} for n in (1, 3, 2)]
    batch, rows = concatenate(requests)
    assert batch["x"].shape == (6, 4) and rows == [1, 3, 2]
    parts = split_rows({"y": batch["x"] * 2}, rows)
    for request, part in zip(requests, parts, strict=True):
        np.testing.assert_array_equal(part["y"], request["x"] * 2)


def test_scatter_refuses_wrong_row_count():
    with pytest.raises(RuntimeError, match="output 'y' has shape \\[5, 4\\]; expected 6 rows"):
        split_rows({"y": np.zeros((5, 4))}, [1, 3, 2])


def test_requests_of_different_shapes_are_not_joined():
    requests = [
        {"img": np.zeros((1, 8, 8, 3), np.uint8)},
        {"img": np.zeros((1, 16, 8, 3), np.uint8)},
        {"img": np.zeros((2, 8, 8, 3), np.uint8)},
    ]
    assert group_by_shape(requests) == [[0, 2], [1]]
