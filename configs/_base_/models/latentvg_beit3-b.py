# Latent-VG (ICCV 2025) on BEiT3-B: the full model (latent expressions N=2, k={4,10},
# subject distributor, visual concept injector, positive-margin contrastive loss).
# Weights and tokenizer are read only at init_weights / first batch:
#   --cfg-options model.pretrained=PATH/beit3_base_indomain_patch16_224.pth
#                 model.tokenizer.spm_path=PATH/beit3.spm
text_len = 20
img_size = 480
embed_dims = 768

model = dict(
    type='LatentVG',
    data_preprocessor=dict(
        type='RefDataPreprocessor',
        mean=[127.5, 127.5, 127.5],  # BEiT-3 normalisation: mean = std = 0.5
        std=[127.5, 127.5, 127.5],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    pretrained='data/pretrained/beit3_base_indomain_patch16_224.pth',
    tokenizer=dict(type='BEiT3Tokenizer', spm_path='data/pretrained/beit3.spm',
                   max_length=text_len),  # the text length L fed to the encoder
    replace_visual_cls=True,
    backbone=dict(
        type='BEiT3',
        arch='base',
        img_size=img_size,
        patch_size=16,
        vocab_size=64010,
        drop_path_rate=0.1,
        num_latent_groups=2,
        # activation checkpointing of each encoder layer in training (less activation memory; the
        # layers run again in the backward pass): --cfg-options model.backbone.with_cp=True
        # (docs/benchmarks.md, "Activation checkpointing and memory")
        with_cp=False),
    latent_init=dict(
        type='LatentExpressionInitializer',
        embed_dims=embed_dims,
        text_len=text_len,
        attr_lengths=(4, 10),
        drop_probs=(0.2, 0.15),
        temperature=0.07,
        learnable_temperature=True,
        mode='latent',
        use_norm=True),
    subject_distributor=dict(type='SubjectDistributor'),
    concept_injector=dict(
        type='VisualConceptInjector',
        embed_dims=embed_dims,
        num_concepts=100,
        concept_temperature=1.0,
        assign_temperature=1.0,
        row_normalize=True,
        residual=False),
    head=dict(
        type='LatentVGHead',
        in_channels=embed_dims,
        num_class_tokens=3,
        feat_channels=256,
        embed_dims=256,
        num_decoder_layers=3,
        decoder_heads=12,
        decoder_ffn_dims=3072,
        mlp_hidden_dims=embed_dims,
        no_target_predictor=None,  # GRES: the empty token (latentvg_beit3-b_grefcoco.py)
        loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=2.0),
        # the plain Dice 1 - (2 sum pM + eps) / (sum p + sum M + eps) of the paper's equation
        loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=False, activate=False, naive_dice=True,
                       loss_weight=0.5),
        loss_contrastive=dict(type='PositiveMarginContrastiveLoss', gamma=0.2,
                              temperature=0.07, loss_weight=1.0),
        loss_no_target=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=0.5)),
    test_cfg=dict(mask_thr=0.5, nt_thr=0.5))
