# Ablation (supplementary Table 10 / component and contrastive ablations), RefCOCO+ training.
# Contrastive-strategy ablation: InfoNCE instead of the positive-margin loss.
_base_ = ['./latentvg_ablation_full.py']
model = dict(
    head=dict(loss_contrastive=dict(
        _delete_=True, type='InfoNCELoss', temperature=0.07, loss_weight=1.0)))
