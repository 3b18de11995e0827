# Ablation (supplementary Table 10 / component and contrastive ablations), RefCOCO+ training.
# No latent expressions: plain BEiT-3 + mask head on the original text CLS only.
_base_ = ['./latentvg_beit3-b_refcocop.py']
model = dict(
    latent_init=None,
    subject_distributor=None,
    concept_injector=None,
    backbone=dict(num_latent_groups=0),
    head=dict(num_class_tokens=1, loss_contrastive=None))
