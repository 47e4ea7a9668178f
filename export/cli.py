"""``genserve export``: ONNX models and their optimized variants into the model repository, checked.

Writes ``<repository>/gan_generator/1/``, ``diffusion_unet/1/`` and ``style_network/1/`` (``model.onnx``
and, beside it, ``model.ortopt.onnx``, ``model.int8.onnx`` where its quality holds, ``model.fp16.onnx``
and ``model.plan`` on TensorRT hosts), then the parity report ``export/reports/parity.md`` and
``.json``. ``--if-missing`` returns at once when every ``model.onnx`` is newer than its weights.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from genserve.server.model_facts import ModelFactsError, read_facts
from genserve.server.paths import MODEL_REPOSITORY, PROJECT_ROOT

EXPORT_DIR = Path(__file__).resolve().parent
DEFAULT_REPOSITORY = MODEL_REPOSITORY
DEFAULT_WEIGHTS = EXPORT_DIR / "weights"
DEFAULT_REPORTS = EXPORT_DIR / "reports"
MODELS = {
    "gan": "gan_generator",
    "diffusion": "diffusion_unet",
    "style": "style_network",
    "style_optimize": "style_gradient",
    "text_to_image": "text_to_image_unet",
}
"""Family -> model-repository name (the names of ``genserve.server.model_names``)."""
PIPELINE_FAMILIES = {"text_to_image": ("text_to_image", "unet/diffusion_pytorch_model.safetensors")}
"""Families whose weights are a diffusers pipeline directory: ``(endpoint name, weights file inside it)``;
they export through the same converter as ``--from-diffusers``."""
ENDPOINT_GRAPHS = {"gan": "gan"}
"""Family -> the endpoint written as one ONNX graph around the family's network."""
VARIANTS = ("ortopt", "int8", "fp16", "tensorrt")
FACT_FAMILIES = ("gan", "diffusion", "style")
"""The families the one export loop writes, with their facts in the network's metadata."""
BENCHMARK_MODELS = {"gan_dcgan64": "dcgan64 generator, 64x64x3", "diffusion_unet_small": "small UNet"}


def _csv(allowed: tuple[str, ...], what: str):  # noqa: ANN202 - an argparse type
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {','.join(unknown) or text!r}; allowed: {', '.join(allowed)}"
            )
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The options of ``genserve export``."""
    parser = argparse.ArgumentParser(prog="genserve export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        type=_csv(tuple(MODELS), "model"),
        default=list(MODELS),
        help=f"comma-separated families to export (default: all: {','.join(MODELS)})",
    )
    parser.add_argument(
        "--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository (default: %(default)s)"
    )
    parser.add_argument(
        "--weights-dir", type=Path, default=DEFAULT_WEIGHTS, help="trained weights (default: %(default)s)"
    )
    parser.add_argument(
        "--report-dir", type=Path, default=DEFAULT_REPORTS, help="parity report folder (default: %(default)s)"
    )
    parser.add_argument(
        "--variants",
        type=_csv(VARIANTS, "variant"),
        default=list(VARIANTS),
        help=f"comma-separated optimized variants besides FP32 (default: {','.join(VARIANTS)})",
    )
    parser.add_argument("--no-variants", action="store_true", help="FP32 only")
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="check FP32 parity only: no variants, timings, quality figures or report (fast)",
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="export only the models whose model.onnx is missing or older than their weights",
    )
    parser.add_argument(
        "--vgg-weights",
        type=Path,
        metavar="FILE",
        help="torchvision VGG19 state dict (.pth or .safetensors): the encoder of the style optimization "
        "(and of the style network when its checkpoint was trained on that file)",
    )
    parser.add_argument(
        "--from-diffusers",
        type=Path,
        metavar="DIR",
        help="convert a diffusers Stable Diffusion pipeline directory (model_index.json, text_encoder/, "
        "tokenizer/, unet/, vae/, scheduler/) into the repository as a text-to-image endpoint, instead of "
        "exporting the in-house families",
    )
    parser.add_argument(
        "--name",
        default="text_to_image",
        help="endpoint name for --from-diffusers; its networks are NAME_text_encoder, NAME_unet, "
        "NAME_vae_decoder, NAME_vae_encoder (default: %(default)s)",
    )
    parser.add_argument(
        "--benchmark-models",
        type=Path,
        metavar="DIR",
        help=f"also write the untrained benchmark-only models ({', '.join(BENCHMARK_MODELS)}) under DIR",
    )
    return parser


def stale_models(models: list[str], repository: Path, weights_dir: Path) -> list[str]:
    """The families with a ``model.onnx`` missing, older than the weights, or a network without facts.

    Needs no torch. A network without facts comes from an export older than them; the pipelines need them.
    """
    stale = []
    for family in models:
        names = [MODELS[family], *([ENDPOINT_GRAPHS[family]] if family in ENDPOINT_GRAPHS else [])]
        weights = weights_dir / f"{family}.safetensors"
        if family in PIPELINE_FAMILIES:
            from genserve.server.latent_diffusion import PARTS, part_model

            endpoint, inside = PIPELINE_FAMILIES[family]
            if not (weights_dir / family / "model_index.json").is_file():
                continue  # nothing trained yet: nothing to export
            names, weights = [part_model(endpoint, part) for part in PARTS], weights_dir / family / inside
        for name in names:
            onnx_path = repository / name / "1" / "model.onnx"
            if (
                not onnx_path.is_file()
                or (weights.is_file() and weights.stat().st_mtime > onnx_path.stat().st_mtime)
                or (name == MODELS[family] and family in FACT_FAMILIES and not _has_facts(onnx_path))
            ):
                stale.append(family)
                break
    return stale


def _has_facts(path: Path) -> bool:
    try:
        return bool(read_facts(path))
    except ModelFactsError:
        return False


def write_report(rows: list[dict], report_dir: Path) -> tuple[Path, Path]:
    """Merge ``rows`` into ``parity.json`` (other models' rows are kept) and write ``parity.md``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = report_dir / "parity.json", report_dir / "parity.md"
    exported = {r["model"] for r in rows}
    previous = json.loads(json_path.read_text()).get("rows", []) if json_path.is_file() else []
    merged = [r for r in previous if r["model"] not in exported] + rows
    merged.sort(
        key=lambda r: list(MODELS.values()).index(r["model"]) if r["model"] in MODELS.values() else 99
    )
    for r in merged:  # paths relative to the repository root, so the report reads the same anywhere
        if r.get("path"):
            with contextlib.suppress(ValueError):
                r["path"] = str(Path(r["path"]).resolve().relative_to(PROJECT_ROOT))
    json_path.write_text(json.dumps({"rows": merged}, indent=2) + "\n")
    md_path.write_text(render_markdown(merged))
    return md_path, json_path


def _fmt(value: object, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def render_markdown(rows: list[dict]) -> str:
    """The parity report as a Markdown table, one row per (model, variant)."""
    header = [
        "model",
        "variant",
        "kept",
        "max abs err",
        "output scale",
        "quality",
        "same px",
        "img/s b1",
        "img/s best (batch)",
        "torch b1",
        "torch best",
        "note",
    ]
    lines = [
        "# Parity report",
        "",
        "Written by `genserve export`. Every variant is run in ONNX Runtime (CPU) on random batches of 1, 3",
        "and the maximum batch and compared with PyTorch; speeds are images (rows) per second at batch 1 and",
        "at the best batch, beside PyTorch eager measured in the same run, on a shared 2-core CPU host",
        "(GAN and diffusion rows: one intra-op thread each for ONNX Runtime and PyTorch).",
        "Quality: the digit classifier's accuracy on conditional samples made with that variant",
        "(GAN: 20 per label; diffusion: DDIM 25 steps, guidance 2, 10 per label), and the share of uint8",
        "pixels equal to PyTorch's from the same seeds; style figures are the style family's own.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        q = r.get("quality") or {}
        accuracy = q.get("accuracy")
        if isinstance(accuracy, dict):
            figure = f"acc {accuracy['all']:.3f} (min {accuracy['min']:.2f})"
        else:
            numbers = [(k, v) for k, v in q.items() if isinstance(v, int | float) and not isinstance(v, bool)]
            figure = ", ".join(f"{k} {v:.4g}" for k, v in numbers if k != "output_scale")[:80] or "-"
        cells = [
            r["model"],
            r["variant"],
            "yes" if q.get("kept", r.get("path") is not None) else "no",
            _fmt(r.get("max_abs_err"), ".2e"),
            _fmt(q.get("output_scale"), ".2f"),
            figure,
            _fmt(q.get("same_uint8_pixels_as_torch"), ".4f"),
            _fmt(r.get("images_per_s_batch1")),
            f"{_fmt(r.get('images_per_s_best'))} ({_fmt(r.get('best_batch'))})",
            _fmt(r.get("torch_images_per_s_batch1")),
            _fmt(r.get("torch_images_per_s_best")),
            str(q.get("note", "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _export_benchmark_models(folder: Path, say) -> None:  # noqa: ANN001
    import torch

    from genserve.export import diffusion, gan, onnx_export
    from genserve.server.ddim import DDIMSchedule

    torch.manual_seed(0)
    generator = gan.Generator(gan.DCGAN64)
    generator.apply(gan.init_weights)
    spec = onnx_export.gan_spec(generator.eval(), name="gan_dcgan64")
    onnx_export.export_model(spec, folder / "gan_dcgan64" / "1", measure=False, progress=say)
    unet = diffusion.UNet(diffusion.SMALL).eval()
    with torch.no_grad():  # zero-initialised output layers would make every output 0
        for parameter in unet.parameters():
            if parameter.dim() > 1 and not parameter.any():
                parameter.normal_(0.0, 0.05)
    spec = onnx_export.unet_spec(unet, DDIMSchedule(), name="diffusion_unet_small")
    onnx_export.export_model(spec, folder / "diffusion_unet_small" / "1", measure=False, progress=say)


def main(argv: list[str] | None = None) -> int:
    """Run ``genserve export``; errors are one line on stderr (exit 2 for usage, 1 for failures)."""
    args = build_parser().parse_args(argv)
    if args.from_diffusers is not None:
        return _convert(args)
    models = args.models
    if args.if_missing:
        models = stale_models(models, args.repository, args.weights_dir)
        if not models and args.benchmark_models is None:
            print("genserve export: every model.onnx is newer than its weights; nothing to do")
            return 0
    variants = [] if (args.no_variants or args.no_report) else args.variants

    def say(line: str) -> None:
        print(line, flush=True)

    from genserve.export.checkpoint import CheckpointError

    try:
        rows = _export(models, variants, args, say)
        if args.benchmark_models is not None:
            _export_benchmark_models(args.benchmark_models, say)
    except (CheckpointError, ValueError, RuntimeError) as error:
        print(f"genserve export: {error}", file=sys.stderr)
        return 1
    if not args.no_report and rows:
        md, js = write_report(rows, args.report_dir)
        say(f"wrote {md} and {js}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    """``--from-diffusers``: one user pipeline into the repository, checked like every family."""
    import re

    import torch

    from genserve.export import onnx_export
    from genserve.export.diffusers_export import export_pipeline

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", args.name):
        print(f"genserve export: --name {args.name!r} is not a valid model name", file=sys.stderr)
        return 2
    torch.set_num_threads(onnx_export.THREADS)
    variants = [] if (args.no_variants or args.no_report) else args.variants
    try:
        rows = export_pipeline(
            args.from_diffusers,
            args.repository,
            name=args.name,
            variants=variants,
            measure=not args.no_report,
            progress=lambda line: print(line, flush=True),
        )
    except (OSError, ValueError, RuntimeError) as error:
        print(f"genserve export: {error}", file=sys.stderr)
        return 1
    if not args.no_report:
        md, js = write_report(rows, args.report_dir)
        print(f"wrote {md} and {js}")
    return 0


def _export(models: list[str], variants: list[str], args: argparse.Namespace, say) -> list[dict]:  # noqa: ANN001
    import torch

    from genserve.export import onnx_export

    torch.set_num_threads(onnx_export.THREADS)
    rows: list[dict] = []
    measure = not args.no_report
    digits = {"gan", "diffusion"} & set(models)
    classifier = _classifier(args.weights_dir, say) if measure and digits else None
    for family in models:
        if family in PIPELINE_FAMILIES:
            from genserve.export.diffusers_export import export_pipeline

            endpoint = PIPELINE_FAMILIES[family][0]
            source = args.weights_dir / family
            if not (source / "model_index.json").is_file():
                say(f"{family}: skipped, no pipeline at {source} (train it with `genserve train {family}`)")
                continue
            rows += export_pipeline(
                source, args.repository, name=endpoint, variants=variants, measure=measure, progress=say
            )
            continue
        if family == "style_optimize":
            from genserve.export.style_optimize_export import export_style_optimizer

            rows += export_style_optimizer(args.repository, args.weights_dir, args.vgg_weights, say)
            continue
        weights = args.weights_dir / f"{family}.safetensors"
        spec = _spec(family, weights, classifier, args, say)
        version_dir = args.repository / MODELS[family] / "1"
        rows += onnx_export.export_model(spec, version_dir, variants=variants, measure=measure, progress=say)
        if family in ENDPOINT_GRAPHS:
            _write_endpoint_graph(version_dir / "model.onnx", args.repository / ENDPOINT_GRAPHS[family], say)
    return rows


def _classifier(weights_dir: Path, say):  # noqa: ANN001, ANN202 - a DigitClassifier or None
    from genserve.export.checkpoint import CheckpointError
    from genserve.export.classifier import load_classifier

    try:
        return load_classifier(weights_dir / "classifier.safetensors")
    except CheckpointError as error:
        say(f"quality figures skipped: {error}")
        return None


def _spec(family: str, weights: Path, classifier, args: argparse.Namespace, say):  # noqa: ANN001, ANN202
    """The export spec of one family, from its trained weights."""
    from genserve.export import onnx_export
    from genserve.export.checkpoint import CheckpointError

    if family == "gan":
        from genserve.export.gan import load_generator

        return onnx_export.gan_spec(load_generator(weights), classifier=classifier)
    if family == "diffusion":
        from genserve.export.diffusion import load_unet

        return onnx_export.unet_spec(*load_unet(weights), classifier=classifier)
    from genserve.export.style import load_style_network
    from genserve.export.style_export import style_spec

    if not weights.is_file():
        raise CheckpointError(f"weights not found: {weights} (train them with `genserve train style`)")
    return style_spec(load_style_network(weights, _vgg_for_checkpoint(weights, args.vgg_weights, say)))


def _write_endpoint_graph(network: Path, endpoint_dir: Path, say) -> Path:  # noqa: ANN001
    """Write the endpoint graph around ``network`` and check its images against the numpy path."""
    import numpy as np

    from genserve.export.gan_graph import endpoint_mismatches, write_gan_endpoint

    path = write_gan_endpoint(network, endpoint_dir / "1" / "model.onnx")
    seeds = np.concatenate([np.arange(128), [2**63 - 1], np.arange(2**40, 2**40 + 127)])
    wrong = endpoint_mismatches(path, network, seeds)
    if wrong:
        raise RuntimeError(f"{path}: {wrong} of {len(seeds)} images differ from the numpy latents' images")
    say(f"{endpoint_dir.name}: wrote {path}; its {len(seeds)} check images equal the numpy path's bytes")
    return path


def _vgg_for_checkpoint(weights: Path, vgg_weights: Path | None, say) -> Path | None:  # noqa: ANN001
    """``vgg_weights`` if the style checkpoint was trained on that file, else ``None`` (and why)."""
    from genserve.export.style import checkpoint_config, file_sha256

    config = checkpoint_config(weights)
    if config.encoder == "torchvision":
        return vgg_weights  # load_style_network checks the hash and names a missing file
    if vgg_weights is not None and file_sha256(vgg_weights) != config.encoder_weights_sha256:
        say(
            f"style_network: {weights} was trained on the seeded encoder; it keeps it (retrain with "
            f"`genserve train style --vgg-weights {vgg_weights}` to use those weights there too)"
        )
    return None


if __name__ == "__main__":
    raise SystemExit(main())
