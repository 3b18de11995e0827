# InstAlign (arXiv 2411.15087): Swin-B (ImageNet-22K, window 12) + RoBERTa-base + 6-layer
# MSDeformAttn pixel decoder + 9 Phrase-Object Transformer blocks, N=100 queries.
# Weights are local files, loaded only in init_weights (building needs no file):
#   checkpoints/swin_base_patch4_window12_384_22k_mmdet.pth   (tools/model_converters/swin_to_mmrefer.py)
#   checkpoints/roberta-base/   (config.json, model.safetensors, vocab.json, merges.txt;
#                                check with tools/model_converters/check_text_encoder_dir.py)
swin_checkpoint = 'checkpoints/swin_base_patch4_window12_384_22k_mmdet.pth'
text_encoder_dir = 'checkpoints/roberta-base'
num_queries = 100
feat_channels = 256

model = dict(
    type='InstAlign',
    data_preprocessor=dict(
        type='RefDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        # Swin pads an input that is not a multiple of 32 inside: padding the batch to 32
        # keeps its 1/4 mask grid tiling the batch exactly (480 and 128 need no padding)
        pad_size_divisor=32),
    backbone=dict(
        # mmdet's SwinTransformer (same arguments and weights) with its window attention run by
        # F.scaled_dot_product_attention (mmrefer/models/backbones/swin.py)
        type='SDPASwinTransformer',
        pretrain_img_size=384,
        embed_dims=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=12,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.3,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        # activation checkpointing of each Swin block in training (less activation memory; the
        # layers run again in the backward pass): --cfg-options model.backbone.with_cp=True
        # (docs/benchmarks.md, "Activation checkpointing and memory")
        with_cp=False,
        convert_weights=False,  # the file is pre-converted (backbone.* mmdet keys)
        init_cfg=dict(type='Pretrained', checkpoint=swin_checkpoint)),
    text_encoder=dict(
        type='HFTextEncoder',
        model_type='roberta',  # 'bert' (with a bert-base-uncased dir) is the alternative
        arch=dict(),  # overrides of the roberta-base shape (none)
        tokenizer_dir=text_encoder_dir,
        pretrained=text_encoder_dir,
        max_length=20),
    head=dict(
        type='InstAlignHead',
        in_channels=[128, 256, 512, 1024],
        feat_channels=feat_channels,
        num_queries=num_queries,
        num_transformer_feat_level=3,
        pixel_decoder=dict(
            # mmdet's MSDeformAttnPixelDecoder with the level sizes on the host (no reads back)
            type='HostShapeMSDeformAttnPixelDecoder',
            num_outs=3,
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(  # 6 deformable layers over the 3 coarsest scales
                num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=feat_channels, num_heads=8, num_levels=3,
                                       num_points=4, im2col_step=64, dropout=0.0,
                                       batch_first=True, norm_cfg=None, init_cfg=None),
                    ffn_cfg=dict(embed_dims=feat_channels, feedforward_channels=1024,
                                 num_fcs=2, ffn_drop=0.0,
                                 act_cfg=dict(type='ReLU', inplace=True))),
                init_cfg=None),
            positional_encoding=dict(num_feats=feat_channels // 2, normalize=True),
            init_cfg=None),
        decoder=dict(num_layers=9, num_heads=8, ffn_dims=2048, dropout=0.0,
                     text_mode='bidirectional'),
        masked_attention=True,
        positional_encoding=dict(num_feats=feat_channels // 2, normalize=True),
        aggregation=dict(type='AdaptiveInstanceAggregation', mode='aia'),
        no_target_predictor=dict(type='NoTargetPredictor', inputs='qglobal_tsen'),
        instance_supervision=True,
        phrase_alignment=True,
        deep_supervision=True,
        # L_inst terms: 2 * score BCE + 5 * (mask BCE + Dice) + 1 * phrase on matched queries,
        # 1 * score BCE(p, 0) on the others (Eq. 7)
        loss_score=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=2.0),
        unmatched_score_weight=1.0,
        loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=5.0),
        loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True, naive_dice=True,
                       eps=1.0, loss_weight=5.0),
        loss_phrase=dict(type='PhraseAlignmentLoss', loss_weight=1.0),
        # lambda_merged = 5 on BCE + Dice, lambda_nt = 0.1 (lambda_inst = 1 is folded in above)
        loss_merged_bce=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=5.0),
        loss_merged_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True,
                              naive_dice=True, eps=1.0, loss_weight=5.0),
        loss_no_target=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=0.1)),
    train_cfg=dict(
        assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='ScoreBCECost', weight=2.0),
                dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0),
                dict(type='PhraseAlignmentCost', weight=1.0),
            ])),
    test_cfg=dict(mask_thr=0.5, nt_thr=0.5, extras_topk=10, words_topk=3))
