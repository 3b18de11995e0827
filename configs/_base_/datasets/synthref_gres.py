# SynthRef in the gRefCOCO layout (make it with
# tools/dataset_converters/make_synthref.py --out data/synthref):
# the grefcoco.py loaders on data/synthref/ at 128x128, named 'synthref'; tests on the val split.
# Re-point to another copy with --cfg-options train_dataloader.dataset.data_root=DIR
# val_dataloader.dataset.data_root=DIR test_dataloader.dataset.data_root=DIR
_base_ = ['./grefcoco.py']

data_root = 'data/synthref/'
img_scale = (128, 128)  # (width, height) of the network input
# the base's pipelines hold its own img_scale (resolved in the base file): rescale their resize
train_pipeline, test_pipeline = (
    [dict(t, scale=img_scale) if t.type == 'RefResize' else t for t in pipeline]
    for pipeline in (_base_.train_pipeline, _base_.test_pipeline))

train_dataloader = dict(
    num_workers=2,
    dataset=dict(data_root=data_root, metainfo=dict(dataset_name='synthref'),
                 pipeline=train_pipeline))
val_dataloader = test_dataloader = dict(
    dataset=dict(train_dataloader['dataset'], pipeline=test_pipeline, split='val'))
