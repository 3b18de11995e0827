# RefZOMDataset (refzom/instances.json + refzom/refs(final).p), one sample per sentence; see
# docs/dataset_prepare.md. The refcoco.py loaders with Ref-ZOM's files, images (COCO
# train2014 + val2014 in one folder), splits (train / test) and metric.
_base_ = ['./refcoco.py']

dataset_type = 'RefZOMDataset'
train_dataloader = dict(dataset=dict(
    type=dataset_type, ann_file='refzom/instances.json', split_file='refzom/refs(final).p',
    data_prefix=dict(img_path='images/trainval2014/'), metainfo=dict(dataset_name='refzom')))
val_dataloader = test_dataloader = dict(dataset=dict(train_dataloader['dataset'], split='test'))

val_evaluator = dict(_delete_=True, type='RefZOMMetric')
test_evaluator = dict(val_evaluator)
