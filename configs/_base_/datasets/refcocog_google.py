# RefCOCOg, Google partition (refcocog/instances.json + refcocog/refs(google).p): the RefCOCO
# loaders with other files. Splits train / val only: the val split is also the test split
# (the Latent-VG supplementary's "val(G)").
_base_ = ['./refcoco.py']

train_dataloader = val_dataloader = dict(dataset=dict(
    ann_file='refcocog/instances.json', split_file='refcocog/refs(google).p',
    metainfo=dict(dataset_name='refcocog_google')))
test_dataloader = dict(dataset=dict(train_dataloader['dataset'], split='val'))
