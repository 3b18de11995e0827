# Ablation: the full model with sharp visual-concept-injector softmaxes (temperature 0.07 on both
# cosine logits, as CLIP and our contrastive loss use) instead of the plain cosine logits of the
# LEAD port (temperature 1, the default). Cosines lie in [-1, 1], so at temperature 1 two patches'
# weights differ by at most e^2: every concept retrieves nearly the mean of the target patches and
# the injected attribute tokens come out nearly identical (docs/latentvg.md, "VCI temperature").
# RefCOCO+ training, as the other ablations.
_base_ = ['./latentvg_ablation_full.py']
model = dict(concept_injector=dict(concept_temperature=0.07, assign_temperature=0.07))
