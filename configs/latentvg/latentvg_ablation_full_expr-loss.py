# Ablation: the full model with the mask losses also on every expression's own map (weight 1,
# averaged over the original text and the latent expressions), besides the averaged map. The
# paper notes put the losses on the averaged map (the default); the supplementary's "all
# expressions are optimized by the identical loss function" (D.4) also fits this reading
# (docs/latentvg.md). RefCOCO+ training, as the other ablations.
_base_ = ['./latentvg_ablation_full.py']
model = dict(head=dict(expression_loss_weight=1.0))
