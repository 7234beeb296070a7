"""Score scales: the data's MOS range against the model's fixed 0..5.

The scorer's output is an expected level mapped to 0..5; data scored on another range
(1..10, 0..100) is mapped linearly onto 0..5 for training, and the model's answers are
mapped back, so a model answers on the scale it was trained on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ipce.errors import ParameterError

MODEL_RANGE = (0.0, 5.0)  # what CorrespondenceScorer outputs


@dataclass(frozen=True)
class ScoreScale:
    """The range lo..hi of the data's scores; floats or torch tensors map both ways."""
    lo: float = MODEL_RANGE[0]
    hi: float = MODEL_RANGE[1]

    def __post_init__(self):
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.hi > self.lo):
            raise ParameterError("{mos_range:=}{lo:g} {hi:g}: give two finite numbers LO HI with HI > LO",
                                 lo=self.lo, hi=self.hi)

    def to_model(self, t):
        """A data score -> the model's 0..5."""
        if self.is_model_scale:
            return t  # exactly: s / 5 * 5 can differ from s in the last bit
        return (t - self.lo) / (self.hi - self.lo) * MODEL_RANGE[1]

    def to_data(self, s):
        """A model score on 0..5 -> the data's lo..hi."""
        if self.is_model_scale:
            return s
        return self.lo + s / MODEL_RANGE[1] * (self.hi - self.lo)

    def to_data_error(self, e):
        """An absolute error on the model's 0..5 (the L1 loss) -> the same error on the data's scale."""
        if self.is_model_scale:
            return e
        return e / MODEL_RANGE[1] * (self.hi - self.lo)

    @property
    def range(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    @property
    def is_model_scale(self) -> bool:
        return self.range == MODEL_RANGE

    def __str__(self) -> str:
        return f"{self.lo:g}..{self.hi:g}"


def scale_of(mos_range) -> ScoreScale:
    """The scale of a `mos_range` setting or metadata value; None (unset, older files) is 0..5."""
    return ScoreScale(*(float(v) for v in (mos_range or MODEL_RANGE)))
