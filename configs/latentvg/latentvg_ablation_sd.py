# Ablation (supplementary Table 10 / component and contrastive ablations), RefCOCO+ training.
# Latent expressions + subject distributor (no visual concept injector, no contrastive loss).
_base_ = ['./latentvg_beit3-b_refcocop.py']
model = dict(concept_injector=None, head=dict(loss_contrastive=None))
