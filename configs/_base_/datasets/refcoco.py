# RefCOCODataset (refcoco/instances.json + refcoco/refs(unc).p), one sample per sentence; see
# docs/dataset_prepare.md. The root of the dataset configs: refcocop.py, refcocog_umd.py,
# grefcoco.py and refzom.py are these loaders with other files, dataset types and metrics.
# Other test splits: --cfg-options test_dataloader.dataset.split=testB (or val).
# Child configs that change img_scale must also rebuild train_pipeline / test_pipeline
# (mmengine resolves base variables inside the base file), as synthref_*.py do.
dataset_type = 'RefCOCODataset'
data_root = 'data/'
img_scale = (480, 480)  # (width, height) of the network input
backend_args = None

train_pipeline = [
    dict(type='LoadRefImageFromFile', color_type='color', backend_args=backend_args),
    dict(type='LoadRefAnnotations'),
    dict(type='RefResize', scale=img_scale),
    dict(type='PackRefInputs'),
]
# keep the GT at the original size too, for eval_resolution='original'
test_pipeline = train_pipeline[:-1] + [dict(type='PackRefInputs', keep_ori_gt=True)]

train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    pin_memory=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='refcoco/instances.json',
        split_file='refcoco/refs(unc).p',
        split='train',
        data_prefix=dict(img_path='images/train2014/'),
        metainfo=dict(dataset_name='refcoco'),
        pipeline=train_pipeline))
# evaluation: the training loader in order, on another split, with test_pipeline
val_dataloader = dict(
    train_dataloader,
    num_workers=2,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(train_dataloader['dataset'], split='val', test_mode=True, pipeline=test_pipeline))
test_dataloader = dict(val_dataloader, dataset=dict(val_dataloader['dataset'], split='testA'))

val_evaluator = [dict(type='RISMetric'), dict(type='RECMetric')]
test_evaluator = val_evaluator
