"""Latent-VG (ICCV 2025): one module per section of the paper.

=============================  ==================================================
section                        module
=============================  ==================================================
3.1 latent expressions         ``latent_expression.LatentExpressionInitializer``
3.2* subject distributor       ``subject_distributor.SubjectDistributor``
3.2 visual concept injector    ``visual_concept_injector.VisualConceptInjector``
3.3* positive-margin loss      ``contrastive_losses.PositiveMarginContrastiveLoss``
3.3* prediction head           ``latentvg_head.LatentVGHead``
supp. B, GRES empty token      ``empty_token.EmptyTokenPredictor``
3 the whole model              ``latent_vg.LatentVG``
=============================  ==================================================

The supplementary cites Sec. 3.1 for the subject extraction and the dropout of the latent
expressions and Sec. 3.2 for the visual concept injector; the numbers marked * are inferred.
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
