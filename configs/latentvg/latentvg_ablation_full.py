# Ablation (supplementary Table 10 / component and contrastive ablations), RefCOCO+ training.
# Full model: SD + VCI + positive-margin contrastive loss (gamma 0.2).
_base_ = ['./latentvg_beit3-b_refcocop.py']
model = dict(
    head=dict(loss_contrastive=dict(type='PositiveMarginContrastiveLoss', gamma=0.2,
                                    temperature=0.07, loss_weight=1.0)))
