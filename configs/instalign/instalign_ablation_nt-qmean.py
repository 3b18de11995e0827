# Ablation (InstAlign Table 3, gRefCOCO val): no-target predictor from the mean of all queries (ReLA / LQMFormer style).
_base_ = './instalign_swin-b_roberta_grefcoco.py'
model = dict(head=dict(no_target_predictor=dict(inputs='qmean')))
