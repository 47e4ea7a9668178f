"""The latent text-to-image endpoint (written by `genserve export --from-diffusers`).

The code is genserve's own pipeline; this model's facts are the parameters of its config.pbtxt.
"""

from genserve.server.text_to_image_model import TritonPythonModel

__all__ = ["TritonPythonModel"]
