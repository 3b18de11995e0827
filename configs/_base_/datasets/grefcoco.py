# GRefCOCODataset (grefcoco/instances.json + grefcoco/grefs(unc).json),
# One sample per sentence; see docs/dataset_prepare.md.
# Other test splits: --cfg-options test_dataloader.dataset.split=testB (or val).
# Child configs that change img_scale must also rebuild train_pipeline / test_pipeline
# (mmengine resolves base variables inside the base file).
dataset_type = 'GRefCOCODataset'
data_root = 'data/'
img_scale = (480, 480)  # (width, height) of the network input
backend_args = None

train_pipeline = [
    dict(type='LoadRefImageFromFile', color_type='color', backend_args=backend_args),
    dict(type='LoadRefAnnotations'),
    dict(type='RefResize', scale=img_scale, gt_mask_resize='polygon'),  # ReLA
    dict(type='PackRefInputs'),
]
test_pipeline = [
    dict(type='LoadRefImageFromFile', color_type='color', backend_args=backend_args),
    dict(type='LoadRefAnnotations'),
    dict(type='RefResize', scale=img_scale, gt_mask_resize='polygon'),  # ReLA
    # keep the GT at the original size too, for eval_resolution='original'
    dict(type='PackRefInputs', keep_ori_gt=True),
]

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
        ann_file='grefcoco/instances.json',
        split_file='grefcoco/grefs(unc).json',
        split='train',
        data_prefix=dict(img_path='images/train2014/'),
        metainfo=dict(dataset_name='grefcoco'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    pin_memory=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='grefcoco/instances.json',
        split_file='grefcoco/grefs(unc).json',
        split='val',
        data_prefix=dict(img_path='images/train2014/'),
        metainfo=dict(dataset_name='grefcoco'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    pin_memory=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='grefcoco/instances.json',
        split_file='grefcoco/grefs(unc).json',
        split='testA',
        data_prefix=dict(img_path='images/train2014/'),
        metainfo=dict(dataset_name='grefcoco'),
        test_mode=True,
        pipeline=test_pipeline))

val_evaluator = dict(type='GRESMetric')
test_evaluator = val_evaluator
