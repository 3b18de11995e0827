"""Geometry between the network input and the original image: :mod:`.geometry`."""
from .geometry import (as_flag, box_to_original, content_region, maps_to_original,
                       mask_to_original, pred_mask_to_original, prediction_to_original, to_numpy)

__all__ = [
    'content_region', 'maps_to_original', 'mask_to_original', 'box_to_original',
    'pred_mask_to_original', 'prediction_to_original', 'to_numpy', 'as_flag'
]
