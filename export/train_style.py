"""Train the AdaIN style-transfer decoder against a fixed VGG19 encoder.

``genserve train style`` (or ``python -m genserve.export.train_style``) trains the decoder on random
crops of the images bundled with scikit-learn and scikit-image (``style_quality.TRAIN_IMAGES``;
the held-out evaluation images are never used), with the AdaIN losses: a content loss between the
relu4_1 features of the output and the AdaIN target, and a style loss between the channel means
and standard deviations of the output's and the style image's features at relu1_1 .. relu4_1.

The encoder is a seeded random VGG19 (reproducible from the config) unless ``--vgg-weights`` names a
torchvision-format VGG19 state dict. The run is deterministic given ``--seed`` (on one host, with
one thread count). It writes ``style.safetensors`` (decoder + config), ``style.json`` (the card: data,
steps, wall time, final losses, held-out quality figures) and the contact sheet.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from genserve.export import style_quality
from genserve.export.style import (
    STYLE_LAYERS,
    StyleConfig,
    StyleNetwork,
    file_sha256,
    load_style_network,
    mean_std,
    save_style_network,
)

DEFAULT_OUT = style_quality.DEFAULT_WEIGHTS
TRAIN_SHORT_SIDE = 256
"""Training images are resized to this shorter side first, the scale the evaluation sees."""


def load_training_images(short_side: int = TRAIN_SHORT_SIDE) -> list[torch.Tensor]:
    """The training images, shorter side resized to ``short_side``, as ``[3, H, W]`` in ``[-1, 1]``."""
    from PIL import Image

    images = []
    for name in style_quality.TRAIN_IMAGES:
        array = style_quality.load_image(name)
        height, width = array.shape[:2]
        scale = short_side / min(height, width)
        size = (round(width * scale), round(height * scale))
        resized = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS))
        images.append(torch.from_numpy(resized.copy()).permute(2, 0, 1).float() / 127.5 - 1.0)
    return images


def random_crops(images: list[torch.Tensor], count: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """``count`` random ``size x size`` crops (random image, position, flip): ``[count, 3, size, size]``."""
    crops = []
    for index in rng.integers(len(images), size=count):
        image = images[index]
        top = int(rng.integers(image.shape[1] - size + 1))
        left = int(rng.integers(image.shape[2] - size + 1))
        crop = image[:, top : top + size, left : left + size]
        crops.append(crop.flip(2) if rng.random() < 0.5 else crop)
    return torch.stack(crops)


def training_alphas(count: int, rng: np.random.Generator) -> torch.Tensor:
    """Per-row style weights: 1 for about a third of the rows, uniform in [0, 1) for the rest.

    Rows below 1 teach the decoder the whole ``alpha`` range the endpoint serves (0 = the content).
    """
    return torch.from_numpy(np.minimum(rng.uniform(0.0, 1.5, count), 1.0).astype(np.float32))


def style_losses(
    network: StyleNetwork, content: torch.Tensor, style: torch.Tensor, alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training forward pass.

    Returns:
        ``(content_loss, style_loss, output)``: the MSE between the output's features and the
        AdaIN targets at every depth, each divided by its target's mean square so the depths weigh
        alike; the summed MSEs of channel means and standard deviations against the targets'
        (at ``alpha`` 1, the style's); and the decoded images ``[B, 3, H, W]``.
    """
    with torch.no_grad():
        targets = network.targets(content, style, alpha)  # relu1_1 .. relu4_1, AdaIN-transformed
    output = network.decoder(targets)  # (B, 3, H, W)
    produced = network.encoder.features_at(network.normalize(output), STYLE_LAYERS)
    content_loss = output.new_zeros(())
    style_loss = output.new_zeros(())
    for got, wanted in zip(produced, targets, strict=True):
        content_loss = content_loss + (got - wanted).pow(2).mean() / wanted.pow(2).mean()
        (got_mean, got_std), (wanted_mean, wanted_std) = mean_std(got), mean_std(wanted)
        style_loss = (
            style_loss + (got_mean - wanted_mean).pow(2).mean() + (got_std - wanted_std).pow(2).mean()
        )
    return content_loss, style_loss, output


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``genserve train style``."""
    parser = argparse.ArgumentParser(prog="genserve train style", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop early after this wall time (the card says so)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data order and decoder init")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="weights file; the card goes beside it")
    parser.add_argument("--vgg-weights", type=Path, default=None, help="torchvision VGG19 state dict")
    parser.add_argument(
        "--init", type=Path, default=None, help="start from this checkpoint's decoder (continue a run)"
    )
    parser.add_argument("--encoder-seed", type=int, default=0, help="seed of the random encoder")
    parser.add_argument("--batch", type=int, default=4, help="crops per batch (default 4)")
    parser.add_argument("--crop", type=int, default=96, help="crop size, a multiple of 8 (default 96)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--style-weight", type=float, default=1.0, help="style loss weight (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--sheet", type=Path, default=style_quality.DEFAULT_SHEET, help="contact sheet PNG")
    parser.add_argument("--no-eval", action="store_true", help="skip the quality figures and contact sheet")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Train the style decoder; write weights, card and (optionally) the contact sheet."""
    from tqdm import tqdm

    args = build_parser().parse_args(argv)
    if args.steps < 1:
        raise SystemExit(f"--steps={args.steps} is not allowed; allowed: 1 or more")
    if args.crop < 8 or args.crop % 8 or args.crop > TRAIN_SHORT_SIDE:
        raise SystemExit(
            f"--crop={args.crop} is not allowed; allowed: multiples of 8 up to {TRAIN_SHORT_SIDE}"
        )
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)

    if args.vgg_weights is not None:
        config = StyleConfig(encoder="torchvision", encoder_weights_sha256=file_sha256(args.vgg_weights))
        network = StyleNetwork(config)
        network.encoder.load_torchvision_vgg19(args.vgg_weights)
    else:
        config = StyleConfig(encoder="seeded", encoder_seed=args.encoder_seed)
        network = StyleNetwork(config)
    if args.init is not None:
        start = load_style_network(args.init, args.vgg_weights)
        if start.config != config:
            raise SystemExit(f"--init={args.init} was trained with another encoder ({start.config})")
        network.decoder.load_state_dict(start.decoder.state_dict())
    images = load_training_images()
    optimizer = torch.optim.Adam(network.decoder.parameters(), lr=args.lr)
    # Linear decay to a tenth of the rate over the run.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - 0.9 * step / args.steps)

    history: list[dict] = []
    recent: list[tuple[float, float]] = []
    started = time.perf_counter()
    network.decoder.train()
    progress = tqdm(range(1, args.steps + 1), desc="style", unit="step")
    steps_done = 0
    for step in progress:
        if args.max_minutes is not None and time.perf_counter() - started > 60 * args.max_minutes:
            progress.write(f"stopping at step {step - 1}: --max-minutes={args.max_minutes} reached")
            break
        steps_done = step
        content = random_crops(images, args.batch, args.crop, rng)  # (B, 3, crop, crop)
        style = random_crops(images, args.batch, args.crop, rng)
        alpha = training_alphas(args.batch, rng)
        content_loss, style_loss, _ = style_losses(network, content, style, alpha)
        loss = content_loss + args.style_weight * style_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        recent = [*recent[-49:], (content_loss.item(), style_loss.item())]
        if step % 10 == 0 or step == args.steps:
            mean_content, mean_style = np.mean(recent, axis=0)
            progress.set_postfix(content=f"{mean_content:.4f}", style=f"{mean_style:.4f}")
        if step % 50 == 0 or step == args.steps or step == 1:
            mean_content, mean_style = np.mean(recent, axis=0)
            history.append(
                {"step": step, "content_loss": round(mean_content, 5), "style_loss": round(mean_style, 5)}
            )
    wall = time.perf_counter() - started
    progress.close()
    if recent and history[-1]["step"] != steps_done:
        mean_content, mean_style = np.mean(recent, axis=0)
        history.append(
            {"step": steps_done, "content_loss": round(mean_content, 5), "style_loss": round(mean_style, 5)}
        )
    network.eval()

    card: dict = {
        "model": "style_network",
        "method": (
            "AdaIN (Huang & Belongie 2017) at relu1_1, relu2_1, relu3_1 and relu4_1 of a VGG19 encoder, "
            "a decoder with skip connections from every depth, colour histograms matched afterwards"
        ),
        "encoder": {
            "kind": config.encoder,
            "seed": config.encoder_seed if config.encoder == "seeded" else None,
            "weights_file": str(args.vgg_weights) if args.vgg_weights else None,
            "weights_sha256": config.encoder_weights_sha256 or None,
        },
        "data": {
            "train_images": list(style_quality.TRAIN_IMAGES),
            "held_out_pairs": [list(pair) for pair in style_quality.HELD_OUT_PAIRS],
            "train_short_side": TRAIN_SHORT_SIDE,
            "crop": args.crop,
            "augmentation": "random crop, horizontal flip",
        },
        "training": {
            "steps": steps_done,
            "steps_requested": args.steps,
            "max_minutes": args.max_minutes,
            "alpha": "1 for about a third of the rows, else uniform in [0, 1)",
            "batch": args.batch,
            "seed": args.seed,
            "command": "genserve train style " + " ".join(argv if argv is not None else sys.argv[1:]),
            "optimizer": f"Adam lr {args.lr} linearly decayed to {args.lr / 10:g}",
            "style_weight": args.style_weight,
            "threads": args.threads,
            "wall_time_s": round(wall, 1),
            "torch": torch.__version__,
            "host": platform.machine(),
        },
        "notes": (
            "A seeded random VGG19 encoder (no pretrained weights can be had here) carries colour and "
            "fine texture statistics but none of the semantics of ImageNet features; the skip connections "
            "carry the content's edges from relu1_1 to the output, so the photo stays recognizable while "
            "its colours and local textures move toward the style. Expect recoloured photos with some "
            "texture, not painterly strokes; trained against torchvision ImageNet VGG19 weights "
            "(--vgg-weights) the same code transfers real style features. Baselines under the same "
            "measures are in quality."
        )
        if config.encoder == "seeded"
        else "Decoder trained against the torchvision VGG19 weights recorded in encoder.",
        "final_losses": {
            "content_loss": history[-1]["content_loss"],
            "style_loss": history[-1]["style_loss"],
        },
        "loss_history": history,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_style_network(network, args.out, metadata={"steps": str(steps_done), "seed": str(args.seed)})
    card_path = args.out.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")  # written again below, with the figures
    print(f"wrote {args.out} and {card_path} ({wall:.0f} s)")
    if not args.no_eval:
        card["quality"] = {"size": style_quality.EVAL_SIZE, **style_quality.evaluate(network)}
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"wrote {style_quality.network_sheet(network, args.sheet)}")
        print(json.dumps({k: v for k, v in card["quality"].items() if k != "pairs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
