# Ablation (InstAlign Table 3, gRefCOCO val): N = 100 object queries.
_base_ = './instalign_swin-b_roberta_grefcoco.py'
model = dict(head=dict(num_queries=100))
