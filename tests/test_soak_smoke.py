"""The overload soak, smoke-sized: far above capacity every request ends typed, overflow is shed, no crash.

The full 60-second run and its figures: ``python -m genserve.benchmarks.soak --seconds 60``.
"""

from __future__ import annotations

from genserve.benchmarks.soak import run_soak


def test_short_overload_soak_loses_nothing_and_sheds_the_overflow(proxied) -> None:
    # 16x: on a busy 2-core host admission (64 at once) fills within the few seconds a smoke has.
    result = run_soak(proxied, seconds=6, factor=16, steps=4, probe_users=8, probe_seconds=2)
    print({key: value for key, value in vars(result).items() if key != "rss_samples"})
    assert result.sent > 0 and result.balanced, result.errors
    assert result.crashes == 0 and proxied.is_ready()
    assert result.succeeded > 0 and result.errors.get("rejected", 0) > 0, result.errors
    assert set(result.errors) <= {"rejected"}, result.errors  # nothing else went wrong
