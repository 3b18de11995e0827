from mmengine.registry import init_default_scope as _init_default_scope


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import every module that registers into mmrefer's (and mmdet's) registries.

    mmengine only triggers the lazy ``locations`` import of the registry a name is looked up in,
    never its parents', so mmdet's modules are imported here explicitly.

    Args:
        init_default_scope (bool): make ``'mmrefer'`` the current default scope.
    """
    import mmdet.datasets  # noqa: F401
    import mmdet.engine  # noqa: F401
    import mmdet.evaluation  # noqa: F401
    import mmdet.models  # noqa: F401
    import mmdet.visualization  # noqa: F401

    import mmrefer.datasets  # noqa: F401
    import mmrefer.engine  # noqa: F401
    import mmrefer.evaluation  # noqa: F401
    import mmrefer.models  # noqa: F401
    import mmrefer.visualization  # noqa: F401

    if init_default_scope:
        _init_default_scope('mmrefer')


def setup_cpu_distributed(cfg, launcher: str) -> None:
    """Initialise a gloo process group for ``--launcher pytorch`` on machines without CUDA.

    mmengine 0.10.7's pytorch launcher always calls ``torch.cuda.set_device``, which fails on a
    CPU build of torch. When CUDA is absent we create the (gloo) process group from the
    ``torchrun`` environment ourselves; the Runner then finds it initialised and skips its own
    set-up. Its default DDP wrapper pins ``device_ids=[LOCAL_RANK]`` (GPU-only), so the model
    wrapper is set to a CPU ``MMDistributedDataParallel`` unless the config chose one. With CUDA
    present, or with ``launcher='none'``, nothing happens.
    """
    import os

    import torch
    import torch.distributed as dist
    if launcher != 'pytorch' or torch.cuda.is_available() or dist.is_initialized():
        return
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']))
