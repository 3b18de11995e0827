"""Tiny InstAlign end to end through mmengine's Runner on the session's small SynthRef:
train a few iterations from the quick-start config, test with GRESMetric, reload the checkpoint."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

CONFIG = osp.join(osp.dirname(__file__), '..', '..', '..', 'configs', 'quickstart',
                  'instalign_tiny_synthref.py')


@pytest.mark.slow
def test_tiny_train_test_runner(synthref_root, tmp_path):
    from mmengine.runner import Runner

    from mmrefer.utils import safe_checkpoint_loading
    from mmrefer.utils.setup_env import register_all_modules
    register_all_modules()
    torch.set_num_threads(1)
    cfg = Config.fromfile(CONFIG)
    root = str(synthref_root) + '/'
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[split].dataset.data_root = root
        cfg[split].num_workers = 0
        cfg[split].persistent_workers = False
    cfg.model.text_encoder.tokenizer_dir = osp.join(root, 'tokenizers', 'roberta')
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=6, val_interval=6)
    cfg.param_scheduler = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=6, by_epoch=False)
    cfg.default_hooks.logger.interval = 1
    cfg.log_processor = dict(by_epoch=False)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    # as tools/train.py and tools/test.py run the runner: weights_only loading of mmengine
    # checkpoints (and checkpoints saved in the block load anywhere)
    with safe_checkpoint_loading():
        runner.train()
        assert osp.isfile(osp.join(str(tmp_path), 'iter_6.pth'))
        scalars = runner.message_hub.log_scalars
        assert torch.isfinite(torch.tensor(scalars['train/loss'].current()))
        for k in ('train/loss_merged_bce', 'train/loss_score', 'train/loss_phrase',
                  'train/loss_no_target', 'train/d0.loss_merged_bce', 'train/d1.loss_mask'):
            assert k in scalars, k
        metrics = runner.test()
        for k in ('gres/cIoU', 'gres/gIoU', 'gres/N-acc'):
            assert k in metrics and 0 <= metrics[k] <= 100, (k, metrics)

        # the checkpoint reloads into a fresh model, same predictions
        from mmengine.runner import load_checkpoint

        from mmrefer.registry import MODELS
        fresh = MODELS.build(cfg.model)
        load_checkpoint(fresh, osp.join(str(tmp_path), 'iter_6.pth'), map_location='cpu')
    fresh.eval()
    runner.model.eval()
    batch = next(iter(runner.test_dataloader))
    with torch.no_grad():
        a = runner.model.test_step(batch)
        b = fresh.test_step(batch)
    for x, y in zip(a, b):
        assert torch.equal(x.pred_mask, y.pred_mask)
        assert x.pred_no_target == y.pred_no_target
        assert torch.allclose(x.pred_extras['inst_scores'], y.pred_extras['inst_scores'])
