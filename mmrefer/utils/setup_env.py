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
