"""``genserve-client``: call a genserve server from the shell, write PNGs and print timings."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genserve.client import contract
from genserve.client.errors import GenserveError
from genserve.client.images import contact_sheet, save_png
from genserve.client.sync import DEFAULT_URLS, Client


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="server host:port (default: 127.0.0.1:8001 for gRPC, :8000 for HTTP)")
    common.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    common.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    parser = argparse.ArgumentParser(prog="genserve-client", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", parents=[common], help="GAN digits, one PNG per image")
    generate.add_argument("--labels", type=int, nargs="+", default=list(range(contract.NUM_CLASSES)))
    generate.add_argument("--seeds", type=int, nargs="+", help="one per label (default: random)")
    generate.add_argument("--out", type=Path, default=Path("outputs/client/gan"), help="output folder")

    stylize = commands.add_parser("stylize", parents=[common], help="paint a photo in a style")
    stylize.add_argument("content", type=Path, help="content image file (PNG, JPEG, ...)")
    stylize.add_argument("style", type=Path, help="style image file")
    stylize.add_argument("--alpha", type=float, default=1.0, help="style strength 0..1 (default 1)")
    stylize.add_argument("--size", type=int, choices=contract.STYLE_SIZES, help="longer side of the result")
    stylize.add_argument("--method", choices=contract.STYLE_METHODS, default=contract.STYLE_METHODS[0])
    stylize.add_argument("--iterations", type=int, help="optimization steps for --method optimize (1..300)")
    stylize.add_argument("--out", type=Path, default=Path("outputs/client/stylized.png"), help="output PNG")

    diffuse = commands.add_parser("diffuse", parents=[common], help="diffusion digits, one PNG per image")
    diffuse.add_argument("--labels", type=int, nargs="+", default=list(range(contract.NUM_CLASSES)))
    diffuse.add_argument("--seeds", type=int, nargs="+", help="one per label (default: random)")
    diffuse.add_argument("--steps", type=int, default=int(contract.STEPS.default))
    diffuse.add_argument("--guidance", type=float, default=float(contract.GUIDANCE.default))
    diffuse.add_argument("--eta", type=float, default=float(contract.ETA.default))
    diffuse.add_argument("--progress", action="store_true", help="print each preview as it streams in")
    diffuse.add_argument("--out", type=Path, default=Path("outputs/client/diffusion"), help="output folder")

    t2i = commands.add_parser(
        "text-to-image", parents=[common], help="latent text-to-image: one PNG per prompt"
    )
    t2i.add_argument("prompts", nargs="+", help="one image per prompt (quote each prompt)")
    t2i.add_argument("--negative", help="negative prompt for every image")
    t2i.add_argument("--seeds", type=int, nargs="+", help="one per prompt (default: random)")
    t2i.add_argument("--steps", type=int, default=int(contract.STEPS.default))
    t2i.add_argument("--guidance", type=float, default=float(contract.GUIDANCE.default))
    t2i.add_argument("--eta", type=float, default=float(contract.ETA.default))
    t2i.add_argument("--init-image", type=Path, nargs="+", help="image-to-image: one start image per prompt")
    t2i.add_argument("--strength", type=float, default=float(contract.STRENGTH.default))
    t2i.add_argument("--progress", action="store_true", help="print each preview as it streams in")
    t2i.add_argument("--out", type=Path, default=Path("outputs/client/text_to_image"), help="output folder")

    commands.add_parser("health", parents=[common], help="server readiness and the models it serves")
    return parser


def _write_images(images: np.ndarray, labels: Sequence[object], out: Path) -> None:
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        save_png(image, out / f"{index:03d}_{_slug(label)}.png")
    save_png(contact_sheet(images, scale=4), out / "sheet.png")
    print(f"wrote {len(images)} images and sheet.png to {out}")


def _slug(label: object) -> str:
    """``label7`` for a digit label, the first words of a prompt (file-name safe) otherwise."""
    if isinstance(label, int):
        return f"label{label}"
    words = "".join(c if c.isalnum() else "_" for c in str(label).lower()).strip("_")
    return "_".join(part for part in words.split("_") if part)[:40] or "prompt"


def _progress(started: float):  # noqa: ANN202 - a callback
    def show(step: object) -> None:
        print(f"  step {step.step}/{step.steps} after {time.perf_counter() - started:.3f} s")

    return show


def _run(args: argparse.Namespace) -> int:
    url = args.url or DEFAULT_URLS[args.protocol]
    with Client(url, protocol=args.protocol, timeout=args.timeout) as client:
        started = time.perf_counter()
        if args.command == "health":
            ready = client.ready()
            print(f"{url} ({args.protocol}): {'ready' if ready else 'NOT ready'}")
            if ready:
                for model in client.models():
                    print(
                        f"  {model.name:<20} version {model.version or '-':<4} {model.state} {model.reason}"
                    )
            print(f"time {time.perf_counter() - started:.3f} s")
            return 0 if ready else 1
        if args.command == "generate":
            images = client.generate(args.labels, seeds=args.seeds)
            elapsed = time.perf_counter() - started
            _write_images(images, args.labels, args.out)
        elif args.command == "stylize":
            image = client.stylize(
                args.content,
                style=args.style,
                alpha=args.alpha,
                size=args.size,
                method=args.method,
                iterations=args.iterations,
            )
            elapsed = time.perf_counter() - started
            save_png(image, args.out)
            print(f"wrote {image.shape[1]}x{image.shape[0]} image to {args.out}")
        elif args.command == "text-to-image":
            images = client.text_to_image(
                args.prompts,
                negative_prompts=args.negative,
                seeds=args.seeds,
                steps=args.steps,
                guidance=args.guidance,
                eta=args.eta,
                init_images=args.init_image,
                strength=args.strength,
                on_preview=_progress(started) if args.progress else None,
            )
            elapsed = time.perf_counter() - started
            _write_images(images, args.prompts, args.out)
        else:
            images = client.diffuse(
                args.labels,
                seeds=args.seeds,
                steps=args.steps,
                guidance=args.guidance,
                eta=args.eta,
                on_preview=_progress(started) if args.progress else None,
            )
            elapsed = time.perf_counter() - started
            _write_images(images, args.labels, args.out)
        print(f"time {elapsed:.3f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for a usage or input error, 1 for others)."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except GenserveError as error:
        print(f"genserve-client: {type(error).__name__}: {error}", file=sys.stderr)
        return 2 if isinstance(error, ValueError) else 1


if __name__ == "__main__":
    sys.exit(main())
