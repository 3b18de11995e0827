"""High-level inference: :class:`RefInferencer` (image + sentences -> mask, box, no-target)."""
from .inferencer import (RefInferencer, build_inference_pipeline, config_search_roots,
                         resolve_config)
from .onnx_predictor import ORTRefPredictor

__all__ = ['RefInferencer', 'ORTRefPredictor', 'build_inference_pipeline', 'config_search_roots',
           'resolve_config']
