# InstAlign on gRefCOCO (paper setting): Swin-B + RoBERTa-base, 480x480, K=9 POT blocks,
# N=100, AdamW 1e-4 -> 1e-6 linear over 20 epochs, total batch 32 (4 GPUs x 8).
#   mim train mmrefer instalign_swin-b_roberta_grefcoco --gpus 4 --launcher pytorch
_base_ = [
    '../_base_/models/instalign_swin-b_roberta.py',
    '../_base_/datasets/grefcoco.py',
    '../_base_/schedules/instalign_20e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=8)  # x 4 GPUs = 32
