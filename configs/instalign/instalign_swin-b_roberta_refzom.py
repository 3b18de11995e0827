# InstAlign on Ref-ZOM (paper setting, see instalign_swin-b_roberta_grefcoco.py).
_base_ = [
    '../_base_/models/instalign_swin-b_roberta.py',
    '../_base_/datasets/refzom.py',
    '../_base_/schedules/instalign_20e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=8)  # x 4 GPUs = 32
