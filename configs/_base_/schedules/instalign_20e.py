# InstAlign schedule: AdamW, lr 1e-4 decaying linearly to 1e-6 over 20 epochs, batch 32
# (e.g. 4 GPUs x 8; set train_dataloader.batch_size accordingly). Backbone lr x0.1 and no decay on
# norms / Swin position tables follow ReLA / Mask2Former (not stated in the paper).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={
            'backbone': dict(lr_mult=0.1, decay_mult=1.0),
            'text_encoder': dict(lr_mult=0.1, decay_mult=1.0),
            'backbone.patch_embed.norm': dict(lr_mult=0.1, decay_mult=0.0),
            'absolute_pos_embed': dict(lr_mult=0.1, decay_mult=0.0),
            'relative_position_bias_table': dict(lr_mult=0.1, decay_mult=0.0),
            'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
            'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
            'level_embed': dict(lr_mult=1.0, decay_mult=0.0),
        },
        norm_decay_mult=0.0))

max_epochs = 20
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0, end_factor=0.01, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=32)
