"""Evaluation: pure metric functions (:mod:`.functional`) and thin mmengine metrics
(:mod:`.metrics`).

    from mmrefer.evaluation import RISMetric, RECMetric, GRESMetric, RefZOMMetric
"""
from .functional import *  # noqa: F401,F403
from .functional import __all__ as _functional
from .metrics import *  # noqa: F401,F403
from .metrics import __all__ as _metrics

__all__ = _metrics + _functional
