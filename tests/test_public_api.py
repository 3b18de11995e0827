"""The public import paths, the mmdet way, in a fresh interpreter (nothing imported before)."""
import subprocess
import sys

from e2e_helpers import ROOT

IMPORTS = """
from mmrefer.models import LatentVG, InstAlign, BEiT3, LatentVGHead, InstAlignHead
from mmrefer.models.backbones import BEiT3 as B2
from mmrefer.models.heads import LatentVGHead as H1, InstAlignHead as H2
from mmrefer.models.detectors import LatentVG as D1, InstAlign as D2
from mmrefer.models.latent_vg import (LatentExpressionInitializer, SubjectDistributor,
    VisualConceptInjector, EmptyTokenPredictor, PositiveMarginContrastiveLoss)
from mmrefer.models.instalign import (PhraseObjectTransformer, AdaptiveInstanceAggregation,
    NoTargetPredictor, ScoreBCECost, PhraseAlignmentCost)
from mmrefer.models.language_models import BEiT3Tokenizer, HFTextEncoder
from mmrefer.datasets import RefCOCODataset, GRefCOCODataset, RefZOMDataset
from mmrefer.evaluation import RISMetric, RECMetric, GRESMetric, RefZOMMetric
from mmrefer.apis import RefInferencer
from mmrefer.structures import mask_to_original, prediction_to_original
from mmrefer.registry import MODELS, METRICS, DATASETS, TASK_UTILS
assert B2 is BEiT3 and H1 is LatentVGHead and H2 is InstAlignHead
assert D1 is LatentVG and D2 is InstAlign
for name, cls in [('LatentVG', LatentVG), ('InstAlign', InstAlign), ('BEiT3', BEiT3),
                  ('LatentVGHead', LatentVGHead), ('InstAlignHead', InstAlignHead),
                  ('SubjectDistributor', SubjectDistributor),
                  ('VisualConceptInjector', VisualConceptInjector),
                  ('PhraseObjectTransformer', PhraseObjectTransformer)]:
    assert MODELS.get(name) is cls, name
assert TASK_UTILS.get('ScoreBCECost') is ScoreBCECost
for name, cls in [('GRESMetric', GRESMetric), ('RISMetric', RISMetric)]:
    assert METRICS.get(name) is cls, name
assert DATASETS.get('GRefCOCODataset') is GRefCOCODataset
import mmrefer.models, mmrefer.evaluation, mmrefer.datasets, mmrefer.structures, mmrefer.apis
for mod in (mmrefer.models, mmrefer.evaluation, mmrefer.datasets, mmrefer.structures,
            mmrefer.apis):
    assert mod.__all__ and all(hasattr(mod, n) for n in mod.__all__), mod.__name__
print('ok')
"""


def test_public_imports_in_a_fresh_interpreter():
    proc = subprocess.run([sys.executable, '-c', IMPORTS], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stderr[-3000:]
