"""Drawing referring predictions: :class:`RefLocalVisualizer` and :class:`RefVisualizationHook`."""
from .ref_local_visualizer import RefLocalVisualizer
from .ref_visualization_hook import RefVisualizationHook
from .utils import maps_to_original, to_numpy, write_png

__all__ = ['RefLocalVisualizer', 'RefVisualizationHook', 'maps_to_original', 'to_numpy',
           'write_png']
