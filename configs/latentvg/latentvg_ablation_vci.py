# Ablation (supplementary Table 10 / component and contrastive ablations), RefCOCO+ training.
# Latent expressions + visual concept injector (no subject distributor, no contrastive loss).
_base_ = ['./latentvg_beit3-b_refcocop.py']
model = dict(subject_distributor=None, head=dict(loss_contrastive=None))
