"""SampleTimeline with arrival times made up to order: what a device that loses samples looks like cannot be
produced on demand with a real sound server, so these drive the arithmetic directly."""

from __future__ import annotations

import numpy as np

from hal.audio.base import AudioBlock
from hal.audio.pi import GAP_CONFIRM_NS, SampleTimeline

SR = 48_000
BLOCK = SR // 50
BLOCK_NS = 20_000_000
T0 = 5_000_000_000  # capture time of the first sample
DELIVERY_NS = 3_000_000  # how long after its last sample a block reaches us at best


def feed(timeline: SampleTimeline, arrivals_ns: list[int]) -> list[AudioBlock]:
    out: list[AudioBlock] = []
    for arrival in arrivals_ns:
        fill, block = timeline.place(np.ones(BLOCK, dtype=np.int16), arrival)
        out.extend(b for b in (fill, block) if b is not None)
    return out


def steady(first_block: int, count: int, jitter_ns: list[int] | None = None) -> list[int]:
    """Arrivals of blocks captured back to back from `first_block` on."""
    jitter = jitter_ns or [0]
    return [T0 + (k + 1) * BLOCK_NS + DELIVERY_NS + jitter[k % len(jitter)]
            for k in range(first_block, first_block + count)]


def test_blocks_get_their_capture_times_despite_jittery_callbacks() -> None:
    blocks = feed(SampleTimeline(SR), steady(0, 100, jitter_ns=[4_000_000, 0, 9_000_000, 1_000_000]))
    assert len(blocks) == 100
    # Off by the best-case delivery time only, which no arrival can reveal.
    assert [b.first_sample_ns - T0 for b in blocks[5:]] == [k * BLOCK_NS + DELIVERY_NS for k in range(5, 100)]


def test_lost_samples_are_filled_once_the_loss_is_certain() -> None:
    # 15 blocks (300 ms) captured after block 49 never arrive; capture carries on in real time.
    arrivals = steady(0, 50) + steady(65, 60)
    blocks = feed(SampleTimeline(SR), arrivals)
    fills = [b for b in blocks if not b.samples.any()]
    assert len(fills) == 1
    assert len(fills[0].samples) == 15 * BLOCK
    # It comes once the lag has lasted GAP_CONFIRM_NS, and from there on blocks are back on time.
    fill_at = next(i for i, b in enumerate(blocks) if b is fills[0])
    assert fill_at == 50 + GAP_CONFIRM_NS // BLOCK_NS
    after = blocks[fill_at + 1 :]
    assert [b.first_sample_ns - T0 for b in after] == [
        k * BLOCK_NS + DELIVERY_NS for k in range(125 - len(after), 125)
    ]


def test_a_late_callback_followed_by_a_catch_up_burst_is_not_a_loss() -> None:
    # Nothing arrives for 1 s, then the 50 blocks held back arrive at once, and capture goes on.
    stalled_until = T0 + 100 * BLOCK_NS + DELIVERY_NS
    arrivals = steady(0, 50) + [stalled_until] * 50 + steady(100, 50)
    blocks = feed(SampleTimeline(SR), arrivals)
    assert len(blocks) == 150
    assert [b.first_sample_ns - T0 for b in blocks] == [k * BLOCK_NS + DELIVERY_NS for k in range(150)]


def test_a_loss_below_the_threshold_is_left_alone() -> None:
    blocks = feed(SampleTimeline(SR), steady(0, 50) + steady(53, 60))
    assert len(blocks) == 110
    assert all(b.samples.any() for b in blocks)
