# RefCOCOg, UMD partition (refcocog/instances.json + refcocog/refs(umd).p): the RefCOCO loaders
# with other files. Splits train / val / test (the google partition, refs(google).p, has
# train / val only).
_base_ = ['./refcoco.py']

train_dataloader = val_dataloader = dict(dataset=dict(
    ann_file='refcocog/instances.json', split_file='refcocog/refs(umd).p',
    metainfo=dict(dataset_name='refcocog')))
test_dataloader = dict(dataset=dict(train_dataloader['dataset'], split='test'))
