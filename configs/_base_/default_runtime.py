# Shared runtime settings for every mmrefer config (Latent-VG, InstAlign, quick start).
default_scope = 'mmrefer'
custom_imports = dict(imports=['mmrefer'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # draws prediction next to ground truth during val/test when draw=True (--show-dir)
    visualization=dict(type='RefVisualizationHook', draw=False),
)

env_cfg = dict(
    # every pipeline here resizes (and pads) to one fixed input size: let cuDNN time its
    # convolution algorithms once for it instead of taking its heuristic's pick (CUDA only)
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='RefLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)

log_level = 'INFO'
load_from = None
resume = False

# Random generator states travel in checkpoints, so --resume reproduces an uninterrupted run;
# every loaded checkpoint is reported by module (missing / unexpected / mis-shaped keys).
custom_hooks = [dict(type='RNGStateHook'), dict(type='CheckpointReportHook')]

# DDP: every parameter of every config gets a gradient (what no config uses is not built: the
# MIM mask token, the visual CLS the subject token replaces, RoBERTa's pooler, modules an
# ablation switches off), so DDP need not search the autograd graph for unused ones each step.
find_unused_parameters = False
