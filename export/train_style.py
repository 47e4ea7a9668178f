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
    CONTENT_LAYER,
    STYLE_LAYERS,
    StyleConfig,
    StyleNetwork,
    adain,
    file_sha256,
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


def adain_losses(
    network: StyleNetwork, content: torch.Tensor, style: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One AdaIN training forward pass at alpha 1.

    Returns:
        ``(content_loss, style_loss, output)``: the MSE between the output's relu4_1 features and the
        AdaIN target, the summed MSEs of channel means and standard deviations at relu1_1 .. relu4_1,
        and the decoded images ``[B, 3, H, W]``.
    """
    encoder = network.encoder
    with torch.no_grad():
        (content_features,) = encoder.features_at(network.normalize(content), (CONTENT_LAYER,))
        style_features = encoder.features_at(network.normalize(style), STYLE_LAYERS)
        alpha = torch.ones(content.shape[0])
        target = adain(content_features, style_features[-1], alpha, network.config.eps)  # (B, 512, h, w)
    output = network.decoder(target)  # (B, 3, H, W)
    output_features = encoder.features_at(network.normalize(output), STYLE_LAYERS)
    content_loss = (output_features[-1] - target).pow(2).mean()
    style_loss = output.new_zeros(())
    for produced, wanted in zip(output_features, style_features, strict=True):
        (produced_mean, produced_std), (wanted_mean, wanted_std) = mean_std(produced), mean_std(wanted)
        style_loss = style_loss + (produced_mean - wanted_mean).pow(2).mean()
        style_loss = style_loss + (produced_std - wanted_std).pow(2).mean()
    return content_loss, style_loss, output


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``genserve train style``."""
    parser = argparse.ArgumentParser(prog="genserve train style", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data order and decoder init")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="weights file; the card goes beside it")
    parser.add_argument("--vgg-weights", type=Path, default=None, help="torchvision VGG19 state dict")
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
    images = load_training_images()
    optimizer = torch.optim.Adam(network.decoder.parameters(), lr=args.lr)
    # Linear decay to a tenth of the rate over the run.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - 0.9 * step / args.steps)

    history: list[dict] = []
    recent: list[tuple[float, float]] = []
    started = time.perf_counter()
    network.decoder.train()
    progress = tqdm(range(1, args.steps + 1), desc="style", unit="step")
    for step in progress:
        content = random_crops(images, args.batch, args.crop, rng)  # (B, 3, crop, crop)
        style = random_crops(images, args.batch, args.crop, rng)
        content_loss, style_loss, _ = adain_losses(network, content, style)
        loss = content_loss + args.style_weight * style_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        recent = [*recent[-49:], (content_loss.item(), style_loss.item())]
        if step % 10 == 0 or step == args.steps:
            mean_content, mean_style = np.mean(recent, axis=0)
            progress.set_postfix(content=f"{mean_content:.4f}", style=f"{mean_style:.4f}")
        if step % 50 == 0 or step == args.steps:
            mean_content, mean_style = np.mean(recent, axis=0)
            history.append(
                {"step": step, "content_loss": round(mean_content, 5), "style_loss": round(mean_style, 5)}
            )
    wall = time.perf_counter() - started
    network.eval()

    card: dict = {
        "model": "style_network",
        "method": "AdaIN (Huang & Belongie 2017): VGG19 encoder to relu4_1, AdaIN, mirrored decoder",
        "encoder": {
            "kind": config.encoder,
            "seed": config.encoder_seed if config.encoder == "seeded" else None,
            "weights_file": str(args.vgg_weights) if args.vgg_weights else None,
            "weights_sha256": config.encoder_weights_sha256 or None,
        },
        "data": {
            "train_images": list(style_quality.TRAIN_IMAGES),
            "held_out_content": list(style_quality.HELD_OUT_CONTENT),
            "held_out_style": list(style_quality.HELD_OUT_STYLE),
            "train_short_side": TRAIN_SHORT_SIDE,
            "crop": args.crop,
            "augmentation": "random crop, horizontal flip",
        },
        "training": {
            "steps": args.steps,
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
            "coarse texture statistics but none of the semantics of ImageNet features, and the decoder "
            "trains for minutes on a CPU, not for days on a GPU: expect blurry, flattened outputs whose "
            "colours and tones move toward the style, not painterly stylization. Trained against "
            "torchvision ImageNet VGG19 weights (--vgg-weights) and for longer, the same code is the AdaIN "
            "method of the paper. Baselines under the same Gram measure are in quality."
        )
        if config.encoder == "seeded"
        else "Decoder trained against the torchvision VGG19 weights recorded in encoder.",
        "final_losses": {
            "content_loss": history[-1]["content_loss"],
            "style_loss": history[-1]["style_loss"],
        },
        "loss_history": history,
    }
    if not args.no_eval:
        card["quality"] = {"size": style_quality.EVAL_SIZE, **style_quality.evaluate(network)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_style_network(network, args.out, metadata={"steps": str(args.steps), "seed": str(args.seed)})
    card_path = args.out.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {args.out} and {card_path} ({wall:.0f} s)")
    if not args.no_eval:
        print(f"wrote {style_quality.contact_sheet(network, args.sheet)}")
    if "quality" in card:
        print(json.dumps({k: v for k, v in card["quality"].items() if k != "pairs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
