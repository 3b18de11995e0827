# InstAlign schedule: AdamW, lr 1e-4 decaying linearly to 1e-6 over 20 epochs, batch 32
# (e.g. 4 GPUs x 8; set train_dataloader.batch_size accordingly). The paper states one learning
# rate, so Swin-B and RoBERTa train at it too (no backbone multiplier). Our choices where the
# paper is silent: weight decay 0.05 (Mask2Former's) except on norms, Swin's position tables, the
# query / level embeddings (the decoder's level_embed and the pixel decoder's level_encoding) and
# the aggregation's PReLU slope (decay would pull it towards a ReLU, as PyTorch's PReLU docs
# warn); gradient clipping at 0.01 (ReLA's).
optim_wrapper = dict(
    type='OptimWrapper',
    # one parameter group per set of options, not per parameter (mmrefer/engine/
    # merged_groups_constructor.py): the same updates in far fewer optimizer kernel launches
    constructor='MergedGroupsOptimWrapperConstructor',
    # fused: one pass over each parameter per step (docs/efficiency.md, "Optimizer groups")
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999),
                   fused=True),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.0),
            'relative_position_bias_table': dict(decay_mult=0.0),
            'query_embed': dict(decay_mult=0.0),
            'query_feat': dict(decay_mult=0.0),
            'level_embed': dict(decay_mult=0.0),
            'level_encoding': dict(decay_mult=0.0),
            'prelu': dict(decay_mult=0.0),
        },
        norm_decay_mult=0.0))  # every LayerNorm / GroupNorm: Swin's, RoBERTa's, the head's

max_epochs = 20
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0, end_factor=0.01, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=32)
