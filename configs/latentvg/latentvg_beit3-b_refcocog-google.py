# Latent-VG (full model), single-dataset training on the RefCOCOg Google partition (RIS + REC
# evaluation on its val split, the supplementary's "val(G)").
_base_ = [
    '../_base_/models/latentvg_beit3-b.py',
    '../_base_/datasets/refcocog_google.py',
    '../_base_/schedules/latentvg_adamw-20e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=16)  # x 4 GPUs = 64
val_dataloader = dict(batch_size=16)
test_dataloader = dict(batch_size=16)
