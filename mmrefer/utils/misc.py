import importlib
import pkgutil


def import_submodules(package_name: str) -> None:
    """Import every module of a package so that its ``@register_module`` decorators run.

    Used by the ``__init__`` of folders that hold one registered component per file (layers,
    heads, losses, ...), so adding a file is enough to register it.
    """
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith('_'):
            importlib.import_module(f'{package_name}.{info.name}')
