"""The genserve thin Triton client and the protocol contract it shares with the server."""
