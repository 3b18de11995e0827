"""The skeleton both heads share, as mmdet's ``MaskFormerHead`` is ``Mask2FormerHead``'s.

A head turns the detector's features ``x`` into losses or into the prediction fields of
docs/contracts.md section 3. The flow is written once here; each method's head overrides four
hooks (``forward``, ``loss_by_feat``, ``predict_maps``, ``fill_predictions``)::

    loss(x, samples)            = loss_by_feat(*forward(x, samples), samples)
    predict(x, samples)         = predict_by_feat(*forward(x, samples), samples,
                                                  **predict_inputs(x))
    predict_by_feat(*outs, samples, words=None, **kw)
                                = fill_predictions(post_processor, test_cfg, samples,
                                                   predict_maps(*outs, (H, W), **kw), words)

``predict_maps`` gives the tensors at the padded batch shape ``(H, W)`` (also the outputs of the
ONNX graph, :mod:`mmrefer.models.deployment`); the static ``fill_predictions`` turns them into the
fields with the shared :class:`~mmrefer.models.post_processing.RefPostProcessor` (the
onnxruntime predictor calls it on the graph's outputs). ``OLD_KEYS`` renames the state-dict keys
of checkpoints saved before a rename; ``TEST_CFG`` gives the ``test_cfg`` defaults.
"""
from abc import ABCMeta, abstractmethod
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.model import BaseModule
from torch import Tensor

from .post_processing import RefPostProcessor
from .utils import batch_shape


class BaseRefHead(BaseModule, metaclass=ABCMeta):
    """Base of :class:`LatentVGHead` and :class:`InstAlignHead` (see the module docstring)."""

    #: (old prefix, new prefix) pairs of state-dict keys, relative to the head
    OLD_KEYS: Tuple[Tuple[str, str], ...] = ()
    #: ``test_cfg`` defaults; ``mask_thr`` / ``nt_thr`` configure the post-processor
    TEST_CFG: Dict = dict(mask_thr=0.5, nt_thr=0.5)

    def init_test_cfg(self, test_cfg: Optional[dict]) -> None:
        """``self.test_cfg`` (``TEST_CFG`` updated by ``test_cfg``) and the post-processor."""
        self.test_cfg = dict(self.TEST_CFG, **(test_cfg or {}))
        self.post_processor = RefPostProcessor(self.test_cfg['mask_thr'],
                                               self.test_cfg['nt_thr'])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for old, new in self.OLD_KEYS:
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def forward(self, x: Dict, batch_data_samples: Optional[List] = None) -> Tuple:
        """The head's raw outputs (a tuple; ``loss_by_feat`` / ``predict_by_feat`` take them)."""

    @abstractmethod
    def loss_by_feat(self, *outs_and_samples) -> Dict[str, Tensor]:
        """``(*forward outputs, batch_data_samples)`` -> the losses."""

    @abstractmethod
    def predict_maps(self, *outs, pad_shape: Tuple[int, int], **kwargs) -> Dict:
        """The forward outputs -> the tensors ``fill_predictions`` reads, at ``pad_shape``."""

    @staticmethod
    @abstractmethod
    def fill_predictions(post_processor: RefPostProcessor, test_cfg: dict,
                         batch_data_samples: List, maps: Dict, words=None) -> List:
        """``predict_maps``' tensors -> the samples' prediction fields."""

    def predict_inputs(self, x: Dict) -> Dict:
        """Keyword arguments of ``predict_by_feat`` taken from ``x`` besides the forward
        outputs (e.g. InstAlign's ``words``, Latent-VG's ``subject_index``)."""
        return {}

    # ------------------------------------------------------------------ the flow
    def loss(self, x: Dict, batch_data_samples: List) -> Dict[str, Tensor]:
        return self.loss_by_feat(*self(x, batch_data_samples), batch_data_samples)

    @torch.no_grad()
    def predict(self, x: Dict, batch_data_samples: List) -> List:
        return self.predict_by_feat(*self(x, batch_data_samples), batch_data_samples,
                                    **self.predict_inputs(x))

    def predict_by_feat(self, *outs_and_samples, words=None, **kwargs) -> List:
        """``(*forward outputs, batch_data_samples)`` -> the samples with their prediction
        fields at ``img_shape`` (``predict_maps`` at the batch shape, then
        ``fill_predictions``); ``kwargs`` go to ``predict_maps``, ``words`` to
        ``fill_predictions``."""
        *outs, batch_data_samples = outs_and_samples
        maps = self.predict_maps(*outs, pad_shape=batch_shape(batch_data_samples), **kwargs)
        return self.fill_predictions(self.post_processor, self.test_cfg, batch_data_samples,
                                     maps, words)
