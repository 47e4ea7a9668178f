"""Bring your own: a tiny random diffusers pipeline, converted by `genserve export --from-diffusers`,
served by the real embedded Triton server as the decoupled `text_to_image` endpoint.

One pipeline is built, exported and served for the whole module (the export dominates its time).
"""

from __future__ import annotations

import io
import json
import queue
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from genserve.client.contract import TEXT_TO_IMAGE_MAX_IMAGES
from genserve.server.latent_diffusion import TOKENIZER_FILE, LatentFacts, PromptTokenizer
from genserve.server.launcher import EmbeddedServer

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

NAME = "text_to_image"
UNET = f"{NAME}_unet"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    from genserve.export.diffusers_random import save_random_pipeline

    return save_random_pipeline(tmp_path_factory.mktemp("pipeline") / "tiny-sd")


@pytest.fixture(scope="module")
def repository(pipeline, tmp_path_factory) -> Path:
    from genserve.export.cli import main

    repository = tmp_path_factory.mktemp("repository")
    assert main(["--from-diffusers", str(pipeline), "--repository", str(repository), "--no-report"]) == 0
    return repository


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    log = tmp_path_factory.mktemp("t2i-server") / "server.log"
    with EmbeddedServer(repository, log_file=log, exit_timeout=10) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    client = httpclient.InferenceServerClient(server.http_url)
    yield client
    client.close()


# -- helpers -----------------------------------------------------------------------------------
def tensor(name: str, array: np.ndarray, dtype: str) -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(array.shape), dtype)
    item.set_data_from_numpy(array)
    return item


def t2i_inputs(prompts, seeds, *, negative=None, init=None, **scalars) -> list:
    inputs = [
        tensor("prompt", np.array(prompts, dtype=object), "BYTES"),
        tensor("seed", np.asarray(seeds, np.int64), "INT64"),
    ]
    if negative is not None:
        inputs.append(tensor("negative_prompt", np.array(negative, dtype=object), "BYTES"))
    if init is not None:
        inputs.append(tensor("init_image", np.array(init, dtype=object), "BYTES"))
    for name, value in scalars.items():
        dtype, triton = (np.int32, "INT32") if name in ("steps", "preview_every") else (np.float32, "FP32")
        inputs.append(tensor(name, np.array([value], dtype), triton))
    return inputs


def run(url: str, requests: dict[str, list], cancel: str | None = None, after: int = 0) -> dict[str, list]:
    """Send every request on one stream; each request's responses in order.

    With ``cancel``, that request is cancelled (its own stream closed) once ``after`` previews came back.
    """
    clients = {rid: grpcclient.InferenceServerClient(url) for rid in requests}
    done: queue.Queue = queue.Queue()
    for rid, client in clients.items():
        client.start_stream(callback=lambda result, error, rid=rid: done.put((rid, result, error)))
        client.async_stream_infer(NAME, requests[rid], request_id=rid, enable_empty_final_response=False)
    pending = {rid: [] for rid in requests}
    finished: dict[str, list] = {}
    try:
        while pending:
            rid, result, error = done.get(timeout=120)
            if rid not in pending:  # the cancelled request's own CANCELLED answer
                continue
            if error is not None:
                raise error
            pending[rid].append(result)
            final = result.get_response().parameters["triton_final_response"].bool_param
            if final:
                finished[rid] = pending.pop(rid)
            elif rid == cancel and len(pending[rid]) >= after:
                clients[rid].stop_stream(cancel_requests=True)
                finished[rid] = pending.pop(rid)
    finally:
        for client in clients.values():
            client.stop_stream(cancel_requests=True)
            client.close()
    return finished


def final_image(responses: list) -> np.ndarray:
    return responses[-1].as_numpy("image")


def unet_stats(http) -> tuple[int, int]:
    stats = http.get_inference_statistics(UNET)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# -- export ------------------------------------------------------------------------------------
def test_exported_unet_matches_diffusers_torch_output(pipeline, repository):
    from genserve.export.onnx_export import ort_session

    unet = diffusers.UNet2DConditionModel.from_pretrained(pipeline / "unet").eval()
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((3, 4, 8, 8)).astype(np.float32)
    timestep = np.array([999, 500, 1])
    states = rng.standard_normal((3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = unet(torch.from_numpy(sample), torch.from_numpy(timestep), torch.from_numpy(states)).sample
    session = ort_session(repository / UNET / "1" / "model.onnx")
    got = session.run(None, {"sample": sample, "timestep": timestep, "encoder_hidden_states": states})[0]
    assert got.shape == (3, 4, 8, 8)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4 * float(np.abs(want.numpy()).max()))


def test_configs_carry_the_models_facts(pipeline, repository):
    config = text_format.Parse(
        (repository / NAME / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    facts = LatentFacts.from_parameters({k: v.string_value for k, v in config.parameters.items()})
    unet_config = json.loads((pipeline / "unet" / "config.json").read_text())
    vae_config = json.loads((pipeline / "vae" / "config.json").read_text())
    scheduler = json.loads((pipeline / "scheduler" / "scheduler_config.json").read_text())
    assert facts.latent_channels == unet_config["in_channels"] == vae_config["latent_channels"]
    assert facts.latent_size == unet_config["sample_size"]
    assert facts.scaling_factor == vae_config["scaling_factor"]
    assert facts.text_length == 16
    assert facts.schedule["beta_schedule"] == scheduler["beta_schedule"]
    for part in ("text_encoder", "unet", "vae_decoder", "vae_encoder"):
        text_format.Parse(
            (repository / f"{NAME}_{part}" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
        )


def test_server_tokenization_equals_the_pipelines_tokenizer(pipeline, repository):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(pipeline / "tokenizer")
    ours = PromptTokenizer(repository / NAME / "1" / TOKENIZER_FILE, 16, reference.pad_token_id)
    prompts = ["a handwritten 7", "The digit SEVEN, drawn thick!", ""]
    want = reference(prompts, padding="max_length", max_length=16, truncation=False).input_ids
    np.testing.assert_array_equal(ours.encode([p.encode() for p in prompts]), np.array(want))


def test_from_diffusers_names_what_a_directory_lacks(tmp_path, capsys):
    from genserve.export.cli import main

    (tmp_path / "model_index.json").write_text("{}")
    assert main(["--from-diffusers", str(tmp_path), "--repository", str(tmp_path / "r"), "--no-report"]) == 1
    assert "missing text_encoder, tokenizer, unet, vae, scheduler" in capsys.readouterr().err


# -- serving -----------------------------------------------------------------------------------
def test_round_trip_streams_previews_then_rgb_images(server):
    results = run(
        server.grpc_url,
        {"a": t2i_inputs([b"a handwritten 7", b"the digit three"], [1, 2], steps=6, preview_every=2)},
    )
    steps = [int(r.as_numpy("step")[0]) for r in results["a"]]
    assert steps == [2, 4, 6]
    image = final_image(results["a"])
    assert image.dtype == np.uint8 and image.shape == (2, 32, 32, 3)


def test_same_prompt_and_seed_same_bytes_alone_batched_and_over_http(server):
    settings = {"steps": 8, "guidance": 3.0}
    results = run(
        server.grpc_url,
        {
            "alone": t2i_inputs([b"the digit seven"], [77], **settings),
            "batched": t2i_inputs([b"a one", b"the digit seven", b"zero"], [5, 77, 6], **settings),
            "other": t2i_inputs([b"two"], [3], steps=5, eta=0.5),
        },
    )
    alone = final_image(results["alone"])[0]
    assert alone.tobytes() == final_image(results["batched"])[1].tobytes()
    assert alone.tobytes() != final_image(results["batched"])[0].tobytes()
    body = json.dumps({"prompt": ["the digit seven"], "seed": [77], **settings}).encode()
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{NAME}/generate", data=body)
    with urllib.request.urlopen(request, timeout=60) as response:
        over_http = np.array(json.loads(response.read())["image"], dtype=np.uint8).reshape(alone.shape)
    assert over_http.tobytes() == alone.tobytes()


def test_unet_steps_of_concurrent_requests_share_executions(server, http):
    # guidance 1 = one UNet row per image: any batching comes from joining requests. The tiny UNet's
    # steps take about a millisecond, so on a loaded host the 8 streams can arrive too far apart to
    # overlap in one round: the property must show in one of three rounds.
    requests = {f"r{i}": t2i_inputs([b"the digit %d" % i], [i], steps=20, guidance=1.0) for i in range(8)}
    rounds = []
    for _ in range(3):
        before = unet_stats(http)
        results = run(server.grpc_url, requests)
        assert all(final_image(r).shape == (1, 32, 32, 3) for r in results.values())
        inferences, executions = (a - b for a, b in zip(unet_stats(http), before, strict=True))
        assert inferences == 8 * 20
        rounds.append(executions)
        if executions <= inferences / 2:
            break
    assert min(rounds) <= 8 * 20 / 2, rounds


def test_cancelling_one_request_stops_its_steps_while_the_others_complete(server, http):
    before = unet_stats(http)[0]
    requests = {f"r{i}": t2i_inputs([b"seven"], [i], steps=20, guidance=1.0) for i in range(3)}
    requests["victim"] = t2i_inputs([b"seven"], [9], steps=400, guidance=1.0, preview_every=5)
    results = run(server.grpc_url, requests, cancel="victim", after=2)
    assert all(final_image(results[f"r{i}"]).shape == (1, 32, 32, 3) for i in range(3))
    time.sleep(1.0)  # the step in flight finishes
    settled = unet_stats(http)[0]
    time.sleep(1.0)
    assert unet_stats(http)[0] == settled  # the victim takes no more steps
    victim_steps = settled - before - 3 * 20
    assert 10 <= victim_steps < 400, victim_steps
    assert http.is_server_ready()


def test_image_to_image_at_strength_zero_gives_back_the_vae_reconstruction(server):
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    init = [png(pixels)]
    zero = run(server.grpc_url, {"a": t2i_inputs([b"seven"], [1], init=init, strength=0.0, steps=10)})
    full = run(server.grpc_url, {"a": t2i_inputs([b"seven"], [1], init=init, strength=1.0, steps=10)})
    plain = run(server.grpc_url, {"a": t2i_inputs([b"seven"], [1], steps=10)})
    assert final_image(zero["a"]).shape == (1, 32, 32, 3)
    # strength 1 noises the image fully at the first step; the random VAE still leaks a little of it.
    assert final_image(zero["a"]).tobytes() != final_image(plain["a"]).tobytes()
    assert final_image(full["a"]).shape == final_image(plain["a"]).shape


LONG_PROMPT = b"the digit seven " * 10
TRUNCATED_PNG = png(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8))[:900]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (t2i_inputs([LONG_PROMPT], [1]), r"prompt\[0\] has \d+ tokens; the text encoder takes at most 16"),
        (t2i_inputs([b"\xff\xfe seven"], [1]), r"prompt\[0\] is not valid UTF-8"),
        (t2i_inputs([b"ok"], [1], negative=[b"\xc3"]), r"negative_prompt\[0\] is not valid UTF-8"),
        (t2i_inputs([b"7"], [1], init=[png(np.zeros((32, 32, 3), np.uint8))], strength=1.5),
         r"strength=1.5 is out of range; allowed range \[0, 1\]"),
        (t2i_inputs([b"7"], [1], init=[b"not an image"]), r"init_image\[0\]: not a decodable image"),
        (t2i_inputs([b"7"], [1], init=[png(np.zeros((48, 32, 3), np.uint8))]),
         r"init_image\[0\] is 32x48; this model takes 32x32 images"),
        (t2i_inputs([b"7"], [1], init=[TRUNCATED_PNG]),
         r"init_image\[0\]: corrupt image"),
        (t2i_inputs([b"7"], [1], steps=0), r"steps=0 is out of range; allowed range \[1, 1000\]"),
        (t2i_inputs([b"7"], [1], steps=5000), r"steps=5000 is out of range; allowed range \[1, 1000\]"),
        (t2i_inputs([b"7"], [1], guidance=-1.0), r"guidance=-1.0 is out of range; allowed range \[0, 20\]"),
        (t2i_inputs([b"7"], [1], guidance=float("nan")), "guidance must be finite"),
        (t2i_inputs([b"7"], [1], eta=1.5), r"eta=1.5 is out of range; allowed range \[0, 1\]"),
        (t2i_inputs([b"7"] * (TEXT_TO_IMAGE_MAX_IMAGES + 1), range(TEXT_TO_IMAGE_MAX_IMAGES + 1)),
         rf"prompt has {TEXT_TO_IMAGE_MAX_IMAGES + 1} values; allowed 1\.\.{TEXT_TO_IMAGE_MAX_IMAGES}"),
        (t2i_inputs([b"7", b"8"], [1]), "input 'seed' has 1 values; expected 2, one per row"),
    ],
)  # fmt: skip
def test_bad_input_is_named_and_the_server_stays_ready(server, http, inputs, message):
    before = unet_stats(http)[0]
    with pytest.raises(InferenceServerException, match=message):
        run(server.grpc_url, {"bad": inputs})
    assert unet_stats(http)[0] == before  # rejected before any step
    assert http.is_server_ready()


# -- client and CLI ----------------------------------------------------------------------------
def test_client_gives_the_same_bytes_over_grpc_http_and_asyncio(server):
    import asyncio

    from genserve.client import AsyncClient, Client

    settings = {"seeds": [77, 1], "steps": 6, "guidance": 3.0}
    with Client(server.grpc_url) as grpc, Client(server.http_url, protocol="http") as http:
        images = grpc.text_to_image(["the digit seven", "zero"], **settings)
        assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
        over_http = http.text_to_image(["the digit seven", "zero"], **settings)
        assert over_http.tobytes() == images.tobytes()
        steps = [step.step for step in grpc.text_to_image_stream("seven", seeds=1, steps=6, preview_every=2)]
        assert steps == [2, 4, 6]
        start = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        edited = grpc.text_to_image("seven", seeds=1, steps=4, init_images=[start], strength=0.5)
        # JSON bodies carry the encoded image as a data: URI; the server decodes the same pixels.
        assert http.text_to_image("seven", seeds=1, steps=4, init_images=[start], strength=0.5).tobytes() == (
            edited.tobytes()
        )

    async def sample() -> np.ndarray:
        async with AsyncClient(server.grpc_url) as client:
            return await client.text_to_image(["the digit seven", "zero"], **settings)

    assert asyncio.run(sample()).tobytes() == images.tobytes()


def test_client_rejects_bad_prompts_before_sending(server):
    from genserve.client import Client, InvalidInputError

    with Client(server.grpc_url) as client:
        with pytest.raises(InvalidInputError, match=r"prompt\[0\] is not valid UTF-8"):
            client.text_to_image(b"\xff", seeds=1)
        with pytest.raises(InvalidInputError, match=r"prompt has 9 values; allowed 1\.\.8"):
            client.text_to_image(["7"] * 9)
        with pytest.raises(InvalidInputError, match=r"strength=2.0 is out of range"):
            client.text_to_image("7", init_images=[np.zeros((32, 32, 3), np.uint8)], strength=2.0)


def test_cli_writes_one_png_per_prompt(server, tmp_path):
    from genserve.client.cli import main

    args = ["text-to-image", "a seven", "the digit zero", "--url", server.grpc_url, "--seeds", "1", "2"]
    assert main([*args, "--steps", "3", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "000_a_seven.png",
        "001_the_digit_zero.png",
        "sheet.png",
    ]


# -- benchmark smoke ---------------------------------------------------------------------------
def test_benchmark_smoke_runs_batching_on_off_and_in_process(repository, tmp_path):
    from genserve.benchmarks.text_to_image_bench import BenchConfig, run

    results = run(BenchConfig.smoke(), tmp_path, extra={"tiny": repository})
    (entry,) = results["pipelines"]
    for state in ("on", "off"):
        assert [row["users"] for row in entry[state]] == [1, 2]
        assert all(row["errors"] == 0 and row["images"] >= 1 for row in entry[state]), entry[state]
    # With the UNet's dynamic batcher gone, every step of every request is an execution of its own
    # (guidance: 2 rows each).
    assert all(row["unet_rows"] == 2 * row["unet_executions"] > 0 for row in entry["off"])
    assert set(entry["in_process"]) == {"1", "2"}
    assert (tmp_path / "text_to_image.png").stat().st_size > 0
    assert json.loads((tmp_path / "text_to_image.json").read_text())["pipelines"][0]["label"] == "tiny"


# -- the in-house pipeline in the repository -----------------------------------------------------
def test_committed_configs_carry_the_in_house_pipelines_facts():
    from genserve.server.ddim import DDIMSchedule
    from genserve.server.paths import MODEL_REPOSITORY, PROJECT_ROOT

    source = PROJECT_ROOT / "export" / "weights" / "text_to_image"
    config = text_format.Parse(
        (MODEL_REPOSITORY / NAME / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    facts = LatentFacts.from_parameters({k: v.string_value for k, v in config.parameters.items()})
    unet = json.loads((source / "unet" / "config.json").read_text())
    vae = json.loads((source / "vae" / "config.json").read_text())
    text = json.loads((source / "text_encoder" / "config.json").read_text())
    tokenizer = json.loads((source / "tokenizer" / "tokenizer_config.json").read_text())
    scheduler = json.loads((source / "scheduler" / "scheduler_config.json").read_text())
    assert facts.latent_shape == (vae["latent_channels"], unet["sample_size"], unet["sample_size"])
    assert facts.scaling_factor == vae["scaling_factor"] and facts.image_size == vae["sample_size"]
    assert facts.text_length == min(tokenizer["model_max_length"], text["max_position_embeddings"])
    assert facts.text_width == text["hidden_size"] == unet["cross_attention_dim"]
    assert facts.schedule == DDIMSchedule.from_diffusers_config(scheduler).to_dict()
