# Latent-VG at paper size: BEiT3-B (indomain weights), N=2 latent expressions with k={4,10},
# 100 concept tokens, gamma=0.2 (the paper's); 480x480 and text length 20 (ours: the paper does
# not state them, see docs/latentvg.md); trained on the combined
# RefCOCO/RefCOCO+/RefCOCOg set, evaluated for RIS (masks) and REC (box of the mask).
#   mim train mmrefer configs/latentvg_beit3.py --cfg-options \
#       model.pretrained=PATH/beit3_base_indomain_patch16_224.pth \
#       model.tokenizer.spm_path=PATH/beit3.spm
_base_ = [
    './_base_/models/latentvg_beit3-b.py',
    './_base_/datasets/refcoco_combined.py',
    './_base_/schedules/latentvg_adamw-20e.py',
    './_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=16)  # x 4 GPUs = 64
val_dataloader = dict(batch_size=16)
test_dataloader = dict(batch_size=16)
