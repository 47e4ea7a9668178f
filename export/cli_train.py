"""``genserve train gan|diffusion|classifier|style|text_to_image [options]``: train one family.

Each family's script takes ``--steps`` (a few steps for CI), ``--seed`` and ``--out``; ``--help``
after the family name lists the rest.
"""

from __future__ import annotations

import importlib
import sys

TRAINERS = {
    "gan": "genserve.export.train_gan",
    "diffusion": "genserve.export.train_diffusion",
    "classifier": "genserve.export.train_classifier",
    "style": "genserve.export.train_style",
    "text_to_image": "genserve.export.train_text_to_image",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the family's training script; an unknown family is a one-line error (exit 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: genserve train {{{','.join(TRAINERS)}}} [--steps N] [--seed S] [--out DIR] ...")
        print(__doc__.splitlines()[0])
        return 0 if argv else 2
    family, rest = argv[0], argv[1:]
    if family not in TRAINERS:
        print(f"genserve train: unknown family {family!r}; allowed: {', '.join(TRAINERS)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(TRAINERS[family]).main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
