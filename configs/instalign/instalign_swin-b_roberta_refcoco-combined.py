# InstAlign for classic RES: trained on the union of RefCOCO / RefCOCO+ / RefCOCOg train splits
# (val/test images removed, MagNet protocol), evaluated per dataset/split. Every sample has a
# target; the no-target predictor is still trained (always negative) and its decision is used.
_base_ = [
    '../_base_/models/instalign_swin-b_roberta.py',
    '../_base_/datasets/refcoco_combined.py',
    '../_base_/schedules/instalign_20e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=8)  # x 4 GPUs = 32
