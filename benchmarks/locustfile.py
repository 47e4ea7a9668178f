r"""genserve's load test: one user class per endpoint; timing and reporting live in ``users.py``.

Run it headless against a running server, for example::

    locust -f benchmarks/locustfile.py --headless -u 32 -r 32 -t 30s -H grpc://127.0.0.1:8001 \
        --csv out/gan --html out/gan.html GanUser

``--genserve-mix gan=8,style=1,diffusion=1`` sets a traffic mix, ``--genserve-pace 5`` paces each user
at 5 calls/s (see :mod:`genserve.benchmarks.users`). Distributed: one ``--master`` and any number of
``--worker --master-host HOST`` processes with the same file.
"""

from __future__ import annotations

from locust import task

from genserve.benchmarks.calls import diffusion_call, gan_call, style_call, style_images
from genserve.benchmarks.users import GenserveUser
from genserve.client.contract import DIFFUSION_MODEL, GAN_MODEL, STYLE_MODEL


class GanUser(GenserveUser):
    """Calls the GAN endpoint: random labels and seeds, ``--genserve-rows`` images per call."""

    endpoint = GAN_MODEL
    mix_name = "gan"

    @task
    def generate(self) -> None:
        """One GAN call."""
        self.call(gan_call, self.rng, self.rows)


class StyleUser(GenserveUser):
    """Calls the style-transfer endpoint with a fixed 256x256 content and style image."""

    endpoint = STYLE_MODEL
    mix_name = "style"
    images = style_images()

    @task
    def stylize(self) -> None:
        """One style-transfer call."""
        self.call(style_call, self.images)


class DiffusionUser(GenserveUser):
    """Calls the diffusion endpoint: ``--genserve-rows`` images, ``--genserve-steps`` steps, guidance 2."""

    endpoint = DIFFUSION_MODEL
    mix_name = "diffusion"

    @task
    def diffuse(self) -> None:
        """One diffusion call."""
        self.call(diffusion_call, self.rng, rows=self.rows, steps=self.steps)
