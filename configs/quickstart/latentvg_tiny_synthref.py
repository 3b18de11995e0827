# Tiny Latent-VG (GRES variant) on SynthRef, trainable on CPU in minutes (quick start).
#   python tools/dataset_converters/make_synthref.py --out data/synthref
#   mim train mmrefer configs/quickstart/latentvg_tiny_synthref.py
# Same modules as the paper model (latent expressions, visual concept injector, empty token,
# positive-margin contrastive loss), with a 4-layer, 64-wide BEiT-3 trained from scratch, patch 8
# on 128x128 images (16x16 grid, mask logits at 64x64) and the SynthRef sentencepiece tokenizer.
# GRES variant: no subject distributor (supplementary B). Batch 8 for 8 epochs (3088 iterations).
# Benchmark and the settings tried: tools/analysis_tools/benchmark_latentvg_tiny.py,
# docs/latentvg.md#tiny-quick-start-benchmark.
_base_ = [
    '../_base_/datasets/synthref_gres.py',
    '../_base_/default_runtime.py',
]
text_len = 16  # SynthRef sentences have at most 13 pieces
dims = 64

model = dict(
    type='LatentVG',
    data_preprocessor=dict(type='RefDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3,
                           bgr_to_rgb=True, pad_size_divisor=1),
    pretrained=None,
    # lower_case: SynthRef's raw sentences start with a capital ("Red circle"), which the tiny
    # from-scratch tokenizer spells letter by letter; the official BEiT-3 one is cased
    tokenizer=dict(type='BEiT3Tokenizer', spm_path='data/synthref/tokenizers/beit3.spm',
                   max_length=text_len, lower_case=True),
    backbone=dict(
        type='BEiT3',
        arch=dict(embed_dims=dims, num_layers=4, num_heads=4, ffn_ratio=2),
        img_size=128,  # = img_scale of synthref_gres.py
        patch_size=8,  # SynthRef shapes are 10-40 px: 16x16 tokens instead of 8x8
        vocab_size=128,
        max_text_len=64,
        drop_path_rate=0.0,
        num_latent_groups=2),
    latent_init=dict(type='LatentExpressionInitializer', embed_dims=dims, text_len=text_len,
                     attr_lengths=(4, 10), drop_probs=(0.2, 0.15), temperature=0.07),
    subject_distributor=None,
    concept_injector=dict(type='VisualConceptInjector', embed_dims=dims, num_concepts=16),
    head=dict(
        type='LatentVGHead',
        in_channels=dims,
        num_class_tokens=3,
        feat_channels=32,
        embed_dims=32,
        extra_upsamples=0,  # 16x16 patch grid -> 64x64 mask logits
        num_decoder_layers=1,
        decoder_heads=4,
        decoder_ffn_dims=2 * dims,
        mlp_hidden_dims=dims,
        no_target_predictor=dict(type='EmptyTokenPredictor', embed_dims=dims, num_heads=4,
                         ffn_ratio=2.0),
        loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=2.0),
        # mmdet's default (squared) Dice denominator, what the quick start and its benchmark were
        # measured with; the paper config uses the plain form (naive_dice=True)
        loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=False, activate=False,
                       naive_dice=False, loss_weight=0.5),
        loss_contrastive=dict(type='PositiveMarginContrastiveLoss', gamma=0.2,
                              temperature=0.07, loss_weight=0.1),
        loss_no_target=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=0.5)))

train_dataloader = dict(batch_size=8, num_workers=1)
val_dataloader = dict(batch_size=16, num_workers=1)
test_dataloader = dict(batch_size=16, num_workers=1)

max_epochs = 8
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01,
                   fused=True),  # one kernel for all parameters: faster on CPU
    clip_grad=dict(max_norm=1.0, norm_type=2),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=1e-5, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_epochs))
log_processor = dict(window_size=20)
# A fixed seed makes the quick start repeatable: without one, mmengine draws a new seed per run
# (the latent expressions' dropout and the sampler order then change from run to run).
randomness = dict(seed=0)
