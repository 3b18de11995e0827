# Ablation (supplementary Table 10 / component and contrastive ablations), RefCOCO+ training.
# Naive latent expressions: [t_cls; t_cls; phi_i(T)] without subject selection or dropout,
# no subject distributor, no visual concept injector, no contrastive loss.
_base_ = ['./latentvg_beit3-b_refcocop.py']
model = dict(
    latent_init=dict(mode='naive'),
    subject_distributor=None,
    concept_injector=None,
    head=dict(loss_contrastive=None))
