"""mmrefer registries are children of mmdet's: mmdet names resolve unprefixed, mmseg with prefix."""
from mmengine.registry import DefaultScope

from mmrefer.registry import METRICS, MODELS, TASK_UTILS, TRANSFORMS
from mmrefer.utils import register_all_modules


def test_registry_scope_and_parents():
    register_all_modules()
    assert DefaultScope.get_current_instance().scope_name == 'mmrefer'
    assert MODELS.scope == 'mmrefer'
    assert MODELS.parent.scope == 'mmdet'
    # mmdet components without a prefix
    assert MODELS.get('SwinTransformer').__module__.startswith('mmdet.')
    assert MODELS.get('MSDeformAttnPixelDecoder').__module__.startswith('mmdet.')
    assert TASK_UTILS.get('HungarianAssigner').__module__.startswith('mmdet.')
    assert TRANSFORMS.get('LoadImageFromFile') is not None
    # mmseg through its prefix
    assert MODELS.get('mmseg.BEiT').__module__.startswith('mmseg.')


def test_mmrefer_components_registered():
    register_all_modules()
    for name in ('RISMetric', 'RECMetric', 'GRESMetric', 'RefZOMMetric'):
        assert METRICS.get(name).__module__.startswith('mmrefer.'), name
    for name in ('LoadRefAnnotations', 'RefResize', 'PackRefInputs'):
        assert TRANSFORMS.get(name).__module__.startswith('mmrefer.'), name
    for name in ('BEiT3', 'LatentVG', 'InstAlign'):
        assert MODELS.get(name).__module__.startswith('mmrefer.'), name
