# GRefCOCODataset (grefcoco/instances.json + grefcoco/grefs(unc).json), one sample per
# sentence; see docs/dataset_prepare.md. The refcoco.py loaders with gRefCOCO's files, the ReLA
# GT protocol (polygons rasterised at the input size) and the GRES metric.
# Other test splits: --cfg-options test_dataloader.dataset.split=testB (or val).
_base_ = ['./refcoco.py']

dataset_type = 'GRefCOCODataset'
train_pipeline, test_pipeline = (
    [dict(t, gt_mask_resize='polygon') if t.type == 'RefResize' else t for t in pipeline]
    for pipeline in (_base_.train_pipeline, _base_.test_pipeline))

train_dataloader = dict(dataset=dict(
    type=dataset_type, ann_file='grefcoco/instances.json', split_file='grefcoco/grefs(unc).json',
    metainfo=dict(dataset_name='grefcoco'), pipeline=train_pipeline))
val_dataloader = test_dataloader = dict(
    dataset=dict(train_dataloader['dataset'], pipeline=test_pipeline))

val_evaluator = dict(_delete_=True, type='GRESMetric')
test_evaluator = dict(val_evaluator)
