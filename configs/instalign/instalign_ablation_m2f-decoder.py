# Ablation (InstAlign Table 3, gRefCOCO val): plain Mask2Former transformer decoder: no text in the decoder at all
# (queries attend to pixels only; text reaches only the no-target predictor).
_base_ = './instalign_swin-b_roberta_grefcoco.py'
model = dict(head=dict(decoder=dict(text_mode='none')))
