"""Drawing referring predictions: :class:`RefLocalVisualizer` and :class:`RefVisualizationHook`.

Geometry (``maps_to_original``, ``to_numpy``, ``prediction_to_original``) is in
:mod:`mmrefer.structures`.
"""
from .ref_local_visualizer import RefLocalVisualizer
from .ref_visualization_hook import RefVisualizationHook
from .utils import write_png

__all__ = ['RefLocalVisualizer', 'RefVisualizationHook', 'write_png']
