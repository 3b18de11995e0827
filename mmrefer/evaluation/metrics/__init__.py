"""mmengine metrics of mmrefer (registered in ``mmrefer.registry.METRICS``)."""
from .gres_metric import GRESMetric
from .rec_metric import RECMetric
from .ref_metric_base import BaseRefMetric
from .refzom_metric import RefZOMMetric
from .ris_metric import RISMetric

__all__ = ['BaseRefMetric', 'RISMetric', 'RECMetric', 'GRESMetric', 'RefZOMMetric']
