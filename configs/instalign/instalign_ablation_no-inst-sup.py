# Ablation (InstAlign Table 3, gRefCOCO val): no instance supervision: merged-mask + no-target losses only (no matching).
_base_ = './instalign_swin-b_roberta_grefcoco.py'
model = dict(head=dict(instance_supervision=False))
