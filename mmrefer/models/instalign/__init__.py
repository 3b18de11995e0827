"""InstAlign (instance-aware GRES): one module per section of the paper.

=====================================  ===================================================
section                                module
=====================================  ===================================================
3.3 Phrase-Object Transformer (+3.3.1)  ``phrase_object_transformer.PhraseObjectTransformer``
3.4 phrase-aligned instance supervision ``instance_supervision`` (match costs, GT instances,
                                        assignment, ``L_inst``:
                                        ``PhraseAlignedInstanceSupervision``)
3.5 adaptive instance aggregation       ``instance_aggregation.AdaptiveInstanceAggregation``
3.6 no-target predictor                 ``no_target_predictor.NoTargetPredictor``
3.2 pixel decoder                       ``pixel_decoder.HostShapeMSDeformAttnPixelDecoder``
                                        (its attention:
                                        ``HostShapeMultiScaleDeformableAttention``)
3.2-3.7 head                            ``instalign_head.InstAlignHead``
3.1 the whole model                     ``instalign.InstAlign``
=====================================  ===================================================
"""
from .instalign import InstAlign
from .instalign_head import InstAlignHead
from .instance_aggregation import AdaptiveInstanceAggregation
from .instance_supervision import (PhraseAlignedInstanceSupervision, PhraseAlignmentCost,
                                   PhraseAlignmentLoss, ScoreBCECost)
from .no_target_predictor import NoTargetPredictor
from .pixel_decoder import (HostShapeMSDeformAttnPixelDecoder,
                            HostShapeMultiScaleDeformableAttention)
from .phrase_object_transformer import PhraseObjectTransformer, phrase_object_alignment

__all__ = [
    'InstAlign', 'InstAlignHead', 'PhraseObjectTransformer', 'phrase_object_alignment',
    'AdaptiveInstanceAggregation', 'NoTargetPredictor', 'ScoreBCECost', 'PhraseAlignmentCost',
    'PhraseAlignmentLoss', 'PhraseAlignedInstanceSupervision', 'HostShapeMSDeformAttnPixelDecoder',
    'HostShapeMultiScaleDeformableAttention'
]
