# Ablation (supplementary Table 10 / component and contrastive ablations), RefCOCO+ training.
# Contrastive-strategy ablation: triplet loss (hardest in-batch negative, margin 0.2).
_base_ = ['./latentvg_ablation_full.py']
model = dict(
    head=dict(loss_contrastive=dict(
        _delete_=True, type='TripletContrastiveLoss', margin=0.2, loss_weight=1.0)))
