# RefCOCO+ (refcoco+/instances.json + refcoco+/refs(unc).p): the RefCOCO loaders with other files.
# Splits train / val / testA / testB; other test splits via
# --cfg-options test_dataloader.dataset.split=testB (or val).
_base_ = ['./refcoco.py']

train_dataloader = dict(dataset=dict(
    ann_file='refcoco+/instances.json', split_file='refcoco+/refs(unc).p',
    metainfo=dict(dataset_name='refcoco+')))
val_dataloader = test_dataloader = train_dataloader
