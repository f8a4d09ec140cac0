"""Adaptive checkpoint selection for an LLC track (issue 14): a coarse pass, then refinement
where the LLC curve or the accuracies change fastest.

A track's candidates are its checkpoints (every k-th and the last, :func:`plan.select_checkpoints`).
Estimating all of them costs one estimate each; where the curve is smooth most of those add
nothing a line between two neighbours would not show. Here:

1. **Coarse pass**: every ``coarse``-th candidate (positions 0, coarse, 2 coarse, ...) and the
   last one.
2. **Refinement rounds**: every gap between two consecutive sampled candidates that still
   holds unsampled ones is scored by how much changes across it,

       score = max(|LLC_j - LLC_i| / range(LLC), |train_acc_j - train_acc_i|,
                   |val_acc_j - val_acc_i|)

   with ``range(LLC)`` the spread (max - min) of the LLC values sampled so far, so the first
   term is the fraction of the track's whole LLC change that happens in the gap, and the
   accuracies (known at every checkpoint from the training log, no estimate needed) are
   fractions already. Gaps scoring above ``tolerance`` get their middle candidate sampled,
   highest score first, at most ``batch`` per round (one batched computation).
3. It stops when no gap scores above ``tolerance`` or the track has used ``max_fraction`` of
   its candidates (never fewer than the coarse pass).

A gap with a non-finite LLC at either end (every chain diverged) scores by its accuracies only.
Estimates depend only on the checkpoint (its seed is the sampler's seed plus the training step),
so which checkpoints get refined never changes another checkpoint's number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

COARSE = "coarse"
REFINED = "refined"


def select_checkpoints(
    num_checkpoints: int, every: int, chunk: int = 0, chunks: int = 1
) -> list[int]:
    """Checkpoint indices for one LLC job: every ``every``-th and the last (``every = 0``: the
    last only), dealt round-robin into ``chunks`` jobs; this job takes number ``chunk``."""
    if not 0 <= chunk < chunks:
        raise ValueError(f"chunk {chunk} outside 0..{chunks - 1}")
    if num_checkpoints < 1:
        raise ValueError("a run without checkpoints has no LLC track")
    if every < 0:
        raise ValueError(f"every must be >= 0, got {every}")
    picked = [] if every == 0 else list(range(0, num_checkpoints, every))
    if not picked or picked[-1] != num_checkpoints - 1:
        picked.append(num_checkpoints - 1)
    return picked[chunk::chunks]


@dataclass(frozen=True)
class RefineSettings:
    """``coarse``: stride of the coarse pass over the candidates (>= 2); ``tolerance``: a gap is
    refined while its score exceeds this; ``max_fraction``: at most this fraction of the
    candidates is estimated (the coarse pass always is)."""

    coarse: int = 4
    tolerance: float = 0.1
    max_fraction: float = 0.5

    def __post_init__(self):
        if self.coarse < 2:
            raise ValueError(f"refine.coarse must be >= 2, got {self.coarse}")
        if not self.tolerance >= 0:
            raise ValueError(f"refine.tolerance must be >= 0, got {self.tolerance}")
        if not 0 < self.max_fraction <= 1:
            raise ValueError(f"refine.max_fraction must be in (0, 1], got {self.max_fraction}")


def coarse_positions(n: int, coarse: int) -> list[int]:
    """Positions 0, coarse, 2 coarse, ... and the last of ``n`` candidates."""
    if n < 1:
        return []
    picked = list(range(0, n, coarse))
    if picked[-1] != n - 1:
        picked.append(n - 1)
    return picked


def gap_scores(
    sampled: Mapping[int, float], accuracies: Sequence[tuple[float, float]]
) -> list[tuple[float, int, int]]:
    """``(score, i, j)`` of every gap between consecutive sampled positions i < j with j - i > 1
    (module docstring). ``sampled`` maps a position to its LLC; ``accuracies[k]`` is
    ``(train_acc, val_acc)`` of candidate k."""
    positions = sorted(sampled)
    finite = [v for v in sampled.values() if math.isfinite(v)]
    spread = (max(finite) - min(finite)) if finite else 0.0
    out = []
    for i, j in zip(positions, positions[1:], strict=False):
        if j - i < 2:
            continue
        a, b = sampled[i], sampled[j]
        llc_term = 0.0
        if math.isfinite(a) and math.isfinite(b) and spread > 0:
            llc_term = abs(b - a) / spread
        (tr_i, va_i), (tr_j, va_j) = accuracies[i], accuracies[j]
        out.append((max(llc_term, abs(tr_j - tr_i), abs(va_j - va_i)), i, j))
    return out


def next_positions(
    sampled: Mapping[int, float],
    accuracies: Sequence[tuple[float, float]],
    settings: RefineSettings,
    limit: int,
) -> list[int]:
    """The middle positions of the (at most ``limit``) highest-scoring gaps above the
    tolerance, highest first (ties: earlier gap first)."""
    if limit <= 0:
        return []
    scores = [g for g in gap_scores(sampled, accuracies) if g[0] > settings.tolerance]
    scores.sort(key=lambda g: (-g[0], g[1]))
    return [(i + j) // 2 for _, i, j in scores[:limit]]


def budget(n: int, settings: RefineSettings) -> int:
    """Most estimates a track of ``n`` candidates may use: ``max_fraction`` of them, never
    fewer than the coarse pass."""
    return max(len(coarse_positions(n, settings.coarse)), math.ceil(settings.max_fraction * n))


def select_adaptively(
    accuracies: Sequence[tuple[float, float]],
    estimate: Callable[[list[int]], Sequence[float]],
    settings: RefineSettings,
    *,
    batch: int = 4,
) -> dict[int, str]:
    """Run the coarse pass and the refinement rounds over ``len(accuracies)`` candidates.

    ``estimate(positions)`` estimates the LLC at those candidate positions (one call per round,
    so a caller can batch them) and returns their values in order. Returns ``{position: "coarse"
    | "refined"}`` for every candidate estimated."""
    n = len(accuracies)
    cap = budget(n, settings)
    first = coarse_positions(n, settings.coarse)
    sampled = dict(zip(first, estimate(first), strict=True))
    kind = dict.fromkeys(first, COARSE)
    while len(sampled) < cap:
        nxt = next_positions(sampled, accuracies, settings, min(batch, cap - len(sampled)))
        if not nxt:
            break
        sampled.update(zip(nxt, estimate(nxt), strict=True))
        kind.update(dict.fromkeys(nxt, REFINED))
    return dict(sorted(kind.items()))
