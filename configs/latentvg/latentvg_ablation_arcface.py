# Ablation (supplementary Table 10 / component and contrastive ablations), RefCOCO+ training.
# Contrastive-strategy ablation: ArcFace (additive angular margin 0.2 on the positive).
_base_ = ['./latentvg_ablation_full.py']
model = dict(
    head=dict(loss_contrastive=dict(
        _delete_=True, type='ArcFaceContrastiveLoss', margin=0.2, temperature=0.07,
        loss_weight=1.0)))
