"""Visualization-only helpers. Geometry (maps back to the original image, ``to_numpy``) lives in
:mod:`mmrefer.structures.geometry`."""
import numpy as np

__all__ = ['write_png']


def write_png(rgb: np.ndarray, path: str) -> str:
    """Write an RGB uint8 image ``[H, W, 3]`` with ``mmcv.imwrite`` (the folder is created);
    raises ``OSError`` naming the path when it cannot be written."""
    import mmcv
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'write_png: image must be [H, W, 3] RGB, got shape {rgb.shape} '
                         f'(for {path!r})')
    try:
        ok = mmcv.imwrite(np.ascontiguousarray(rgb[..., ::-1]), str(path))
    except Exception as e:  # encoder or file backend failure
        raise OSError(f'could not write image file {path!r}: {e}') from e
    if not ok:
        raise OSError(f'could not write image file {path!r}')
    return str(path)
