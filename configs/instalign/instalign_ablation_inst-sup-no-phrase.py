# Ablation (InstAlign Table 3, gRefCOCO val): Mask2Former-style instance supervision without phrase-object alignment
# (no phrase term in the matching cost nor in L_inst).
_base_ = './instalign_swin-b_roberta_grefcoco.py'
model = dict(
    head=dict(phrase_alignment=False),
    train_cfg=dict(
        assigner=dict(
            _delete_=True,
            type='HungarianAssigner',
            match_costs=[
                dict(type='ScoreBCECost', weight=2.0),
                dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0),
            ])))
