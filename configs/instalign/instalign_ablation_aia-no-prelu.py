# Ablation (InstAlign Table 3, gRefCOCO val): AIA without the PReLU: M = sigmoid(sum_i p_i s_i).
_base_ = './instalign_swin-b_roberta_grefcoco.py'
model = dict(head=dict(aggregation=dict(mode='aia_no_prelu')))
