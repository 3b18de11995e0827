# Ablation (InstAlign Table 3, gRefCOCO val): fixed-threshold instance selection (union of instances with p > 0.5)
# instead of Adaptive Instance Aggregation.
_base_ = './instalign_swin-b_roberta_grefcoco.py'
model = dict(head=dict(aggregation=dict(mode='threshold', threshold=0.5)))
