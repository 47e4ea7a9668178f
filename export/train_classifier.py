"""Train the digit classifier that judges generated samples: ``genserve train classifier``."""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm

from genserve.export.checkpoint import card_path, save_checkpoint, weights_path, write_card
from genserve.export.classifier import FAMILY, ClassifierConfig, DigitClassifier, per_label_accuracy, predict
from genserve.export.data import batches, load_split, random_shift
from genserve.export.training import (
    DATA_NOTE,
    RunningMean,
    Stopwatch,
    add_common_arguments,
    check_positive,
    cosine_lr,
    seed_everything,
)


def main(argv: list[str] | None = None) -> int:
    """Train the classifier, report its held-out accuracy, write weights and card."""
    parser = argparse.ArgumentParser(prog="genserve train classifier", description=__doc__)
    add_common_arguments(parser, steps=1500, batch_size=64)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: %(default)s)")
    args = parser.parse_args(argv)
    check_positive(parser, args)
    generator = seed_everything(args.seed, args.threads)
    train, held_out = load_split()
    config = ClassifierConfig()
    model = DigitClassifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    losses, clock = RunningMean(), Stopwatch()
    data = batches(train, args.batch_size, generator)
    model.train()
    for step in tqdm(range(args.steps), desc="classifier", disable=args.no_progress, file=sys.stdout):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr)
        images, labels = next(data)
        loss = F.cross_entropy(model(random_shift(images, 2, generator)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.add(cross_entropy=loss.item())
    model.eval()
    predicted, _ = predict(model, held_out.images)
    accuracy = per_label_accuracy(predicted, held_out.labels)
    save_checkpoint(weights_path(FAMILY, args.out), FAMILY, config.to_dict(), model)
    card = {
        "family": FAMILY,
        "model": "3-stage CNN, penultimate features used for the domain FID",
        "config": config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": DATA_NOTE + "; augmentation: random shifts of up to 2 pixels",
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "wall_time_s": clock.seconds(),
        "final_losses": losses.means(),
        "quality": {"held_out_accuracy": accuracy, "held_out_images": len(held_out)},
    }
    write_card(card_path(FAMILY, args.out), card)
    print(f"classifier: held-out accuracy {accuracy['all']:.4f} (min per label {accuracy['min']:.4f})")
    print(f"wrote {weights_path(FAMILY, args.out)} and {card_path(FAMILY, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
