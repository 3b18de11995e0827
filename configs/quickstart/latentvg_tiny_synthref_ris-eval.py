# Evaluate the tiny latentvg quick-start model (trained on SynthRef's gRefCOCO-format refs) on
# SynthRef's RefCOCO-format refs of the same val images: single-target sentences, RIS metrics
# (mIoU, oIoU, Pr@X) and REC metrics (Acc@0.5, box mIoU; box = the model's pred_box).
#   mim test mmrefer latentvg_tiny_synthref_ris-eval.py -C CKPT
_base_ = ['./latentvg_tiny_synthref.py']

test_dataloader = dict(
    dataset=dict(
        type='RefCOCODataset',
        ann_file='refcoco/instances.json',
        split_file='refcoco/refs(unc).p',
        split='val'))
test_evaluator = [dict(type='RISMetric'), dict(type='RECMetric')]
