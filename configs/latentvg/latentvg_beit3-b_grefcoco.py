# Latent-VG GRES variant on gRefCOCO (supplementary B): an empty token cross-attends to the
# encoder output and predicts "no target" (BCE, weight 0.5); no subject distributor; lr 5e-5.
_base_ = [
    '../_base_/models/latentvg_beit3-b.py',
    '../_base_/datasets/grefcoco.py',
    '../_base_/schedules/latentvg_adamw-20e.py',
    '../_base_/default_runtime.py',
]
model = dict(
    subject_distributor=None,
    head=dict(
        no_target_predictor=dict(_delete_=True, type='EmptyTokenPredictor', embed_dims=768, num_heads=8,
                         ffn_ratio=2.0),
        loss_no_target=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=0.5)))
optim_wrapper = dict(optimizer=dict(lr=5e-5))
train_dataloader = dict(batch_size=16)  # x 4 GPUs = 64
val_dataloader = dict(batch_size=16)
test_dataloader = dict(batch_size=16)
