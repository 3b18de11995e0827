# RefCOCOg, UMD partition (refcocog/instances.json + refcocog/refs(umd).p): the RefCOCO loaders
# with other files. Splits train / val / test (the google partition, refs(google).p, has
# train / val only).
_base_ = ['./refcoco.py']

_files = dict(ann_file='refcocog/instances.json', split_file='refcocog/refs(umd).p',
              metainfo=dict(dataset_name='refcocog'))
train_dataloader = dict(dataset=_files)
val_dataloader = dict(dataset=_files)
test_dataloader = dict(dataset=dict(_files, split='test'))
