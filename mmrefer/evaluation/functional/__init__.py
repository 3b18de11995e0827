"""Pure metric functions (no mmengine state): masks/boxes/flags in, percentages out."""
from .gres_metrics import (GRES_THRESHOLDS, gres_metrics, gres_metrics_from_stats,
                           gres_per_sample)
from .mask_stats import iou_from_counts, mask_stats
from .rec_metrics import box_iou_aligned, rec_metrics, rec_metrics_from_iou, rec_per_sample
from .refzom_metrics import (REFZOM_THRESHOLDS, refzom_metrics, refzom_metrics_from_stats,
                             refzom_per_sample)
from .ris_metrics import RIS_THRESHOLDS, ris_metrics, ris_metrics_from_stats, ris_per_sample

__all__ = [
    'mask_stats', 'iou_from_counts', 'ris_metrics', 'ris_metrics_from_stats', 'ris_per_sample',
    'rec_metrics', 'rec_metrics_from_iou', 'rec_per_sample', 'box_iou_aligned', 'gres_metrics',
    'gres_metrics_from_stats', 'gres_per_sample', 'refzom_metrics', 'refzom_metrics_from_stats',
    'refzom_per_sample', 'RIS_THRESHOLDS', 'GRES_THRESHOLDS', 'REFZOM_THRESHOLDS'
]
