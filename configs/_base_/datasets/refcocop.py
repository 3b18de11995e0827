# RefCOCO+ (refcoco+/instances.json + refcoco+/refs(unc).p): the RefCOCO loaders with other files.
# Splits train / val / testA / testB; other test splits via
# --cfg-options test_dataloader.dataset.split=testB (or val).
_base_ = ['./refcoco.py']

_files = dict(ann_file='refcoco+/instances.json', split_file='refcoco+/refs(unc).p',
              metainfo=dict(dataset_name='refcoco+'))
train_dataloader = dict(dataset=_files)
val_dataloader = dict(dataset=_files)
test_dataloader = dict(dataset=_files)
