"""The umbrella ``genserve`` command: one subcommand per module, on the floor above every package.

``genserve serve`` lives in :mod:`genserve.server.cli`, ``export`` and ``train`` in :mod:`genserve.export`,
``bench`` in :mod:`genserve.benchmarks`, ``demo`` here. :mod:`genserve.cli.main` imports each only when it
runs, so ``genserve serve`` never loads torch.
"""
