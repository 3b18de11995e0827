# Latent-VG schedule: AdamW, lr 1e-4 (GRES halves it to 5e-5, supplementary B.2), linear warm-up
# then poly decay, 20 epochs (the epoch count is not given in the accessible sources).
max_epochs = 20
optim_wrapper = dict(
    type='OptimWrapper',
    # one parameter group per set of options, not per parameter (mmrefer/engine/
    # merged_groups_constructor.py): the same updates in far fewer optimizer kernel launches
    constructor='MergedGroupsOptimWrapperConstructor',
    # fused: one pass over each parameter per step (foreach and the for-loop read and write
    # the weights and both moments once per arithmetic step); docs/efficiency.md
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01, fused=True),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    # no decay on norms and biases. A custom_keys entry (e.g. a backbone lr_mult) would switch
    # these two rules off for every parameter it matches (mmengine applies them only to
    # parameters no custom key matched): give such an entry its own decay_mult
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1000),
    dict(type='PolyLR', power=0.9, eta_min=1e-6, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# paper: 64 images per iteration (4 GPUs x 16)
auto_scale_lr = dict(enable=False, base_batch_size=64)
