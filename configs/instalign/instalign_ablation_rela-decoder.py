# Ablation (InstAlign Table 3, gRefCOCO val): ReLA-style decoder: queries attend to the (fixed) word features, the text is
# never updated by the queries (one-directional instead of POT's bidirectional attention).
_base_ = './instalign_swin-b_roberta_grefcoco.py'
model = dict(head=dict(decoder=dict(text_mode='query_only')))
