"""Latent-VG (ICCV 2025): one module per section of the paper.

=============================  ==================================================
section                        module
=============================  ==================================================
3.2 latent expressions         ``latent_expression.LatentExpressionInitializer``
3.3 subject distributor        ``subject_distributor.SubjectDistributor``
3.3 visual concept injector    ``visual_concept_injector.VisualConceptInjector``
3.4 positive-margin loss       ``contrastive_losses.PositiveMarginContrastiveLoss``
3.4 prediction head            ``latentvg_head.LatentVGHead``
supp. B, GRES empty token      ``empty_token.EmptyTokenPredictor``
3.1 the whole model            ``latent_vg.LatentVG``
=============================  ==================================================
"""
from .contrastive_losses import (ArcFaceContrastiveLoss, InfoNCELoss,
                                 PositiveMarginContrastiveLoss, TripletContrastiveLoss)
from .empty_token import EmptyTokenPredictor
from .latent_expression import LatentExpressionInitializer
from .latent_vg import LatentVG
from .latentvg_head import LatentVGHead
from .subject_distributor import SubjectDistributor
from .visual_concept_injector import VisualConceptInjector

__all__ = [
    'LatentVG', 'LatentVGHead', 'LatentExpressionInitializer', 'SubjectDistributor',
    'VisualConceptInjector', 'EmptyTokenPredictor', 'PositiveMarginContrastiveLoss',
    'InfoNCELoss', 'TripletContrastiveLoss', 'ArcFaceContrastiveLoss'
]
