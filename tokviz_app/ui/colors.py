"""Probability buckets shared by token chips, the legend and the details panel."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    name: str  # css suffix: tv-p-<name>
    label: str  # legend text
    low: float  # inclusive lower bound of the probability


BUCKETS: tuple[Bucket, ...] = (
    Bucket("green", "> 70%", 0.70),
    Bucket("blue", "50–70%", 0.50),
    Bucket("purple", "30–50%", 0.30),
    Bucket("orange", "10–30%", 0.10),
    Bucket("red", "< 10%", 0.0),
)


def bucket_for(prob: float | None) -> Bucket | None:
    """green > 70%, blue 50–70%, purple 30–50%, orange 10–30%, red < 10%; None when unknown."""
    if prob is None:
        return None
    if prob > 0.70:
        return BUCKETS[0]
    for bucket in BUCKETS[1:]:
        if prob >= bucket.low:
            return bucket
    return BUCKETS[-1]


def prob_class(prob: float | None) -> str:
    bucket = bucket_for(prob)
    return f"tv-p-{bucket.name}" if bucket else "tv-p-none"
