from mmrefer.utils.misc import import_submodules

import_submodules(__name__)
