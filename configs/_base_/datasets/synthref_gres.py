# SynthRef in the gRefCOCO layout (make it with
# tools/dataset_converters/make_synthref.py --out data/synthref):
# the grefcoco.py loaders on data/synthref/ at 128x128, named 'synthref'; tests on the val split.
# Re-point to another copy with --cfg-options train_dataloader.dataset.data_root=DIR
# val_dataloader.dataset.data_root=DIR test_dataloader.dataset.data_root=DIR
_base_ = ['./grefcoco.py']

data_root = 'data/synthref/'
img_scale = (128, 128)  # (width, height) of the network input
# the base's pipelines hold its own img_scale (resolved in the base file): rebuild them
train_pipeline = [
    dict(type='LoadRefImageFromFile', color_type='color', backend_args=None),
    dict(type='LoadRefAnnotations'),
    dict(type='RefResize', scale=img_scale, gt_mask_resize='polygon'),  # ReLA
    dict(type='PackRefInputs'),
]
test_pipeline = [
    dict(type='LoadRefImageFromFile', color_type='color', backend_args=None),
    dict(type='LoadRefAnnotations'),
    dict(type='RefResize', scale=img_scale, gt_mask_resize='polygon'),  # ReLA
    dict(type='PackRefInputs', keep_ori_gt=True),
]

_synthref = dict(data_root=data_root, metainfo=dict(dataset_name='synthref'))
train_dataloader = dict(num_workers=2, dataset=dict(_synthref, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(_synthref, pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(_synthref, pipeline=test_pipeline, split='val'))
