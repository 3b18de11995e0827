# RefZOMDataset (refzom/instances.json + refzom/refs(final).p), one sample per sentence.
# See docs/dataset_prepare.md.
# SynthRef (python tools/dataset_converters/make_synthref.py --out data/synthref). The test
# loader uses the held-out val/test split. Re-point to another copy with --cfg-options
# train_dataloader.dataset.data_root=DIR val_dataloader.dataset.data_root=DIR
# test_dataloader.dataset.data_root=DIR
# Child configs that change img_scale must also rebuild train_pipeline / test_pipeline
# (mmengine resolves base variables inside the base file).
dataset_type = 'RefZOMDataset'
data_root = 'data/synthref/'
img_scale = (128, 128)  # (width, height) of the network input
backend_args = None

train_pipeline = [
    dict(type='LoadRefImageFromFile', color_type='color', backend_args=backend_args),
    dict(type='LoadRefAnnotations'),
    dict(type='RefResize', scale=img_scale),
    dict(type='PackRefInputs'),
]
test_pipeline = [
    dict(type='LoadRefImageFromFile', color_type='color', backend_args=backend_args),
    dict(type='LoadRefAnnotations'),
    dict(type='RefResize', scale=img_scale),
    # keep the GT at the original size too, for eval_resolution='original'
    dict(type='PackRefInputs', keep_ori_gt=True),
]

train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    pin_memory=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='refzom/instances.json',
        split_file='refzom/refs(final).p',
        split='train',
        data_prefix=dict(img_path='images/train2014/'),
        metainfo=dict(dataset_name='synthref'),
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
        ann_file='refzom/instances.json',
        split_file='refzom/refs(final).p',
        split='test',
        data_prefix=dict(img_path='images/train2014/'),
        metainfo=dict(dataset_name='synthref'),
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
        ann_file='refzom/instances.json',
        split_file='refzom/refs(final).p',
        split='test',
        data_prefix=dict(img_path='images/train2014/'),
        metainfo=dict(dataset_name='synthref'),
        test_mode=True,
        pipeline=test_pipeline))

val_evaluator = dict(type='RefZOMMetric')
test_evaluator = val_evaluator
