# RefCOCO + RefCOCO+ + RefCOCOg(umd) combined training set (mmengine ConcatDataset), with every
# image of the three datasets' val/test splits removed from all three training sets, so that no
# evaluation image is seen in training. Validation / test: RefCOCO (unc) val / testA; evaluate
# the other sets with --cfg-options or with refcocop.py / refcocog_umd.py test loaders.
_base_ = ['./refcoco.py']

# images of these splits are dropped from every training set (paths relative to data_root)
eval_splits = [
    dict(split_file='refcoco/refs(unc).p', splits=['val', 'testA', 'testB']),
    dict(split_file='refcoco+/refs(unc).p', splits=['val', 'testA', 'testB']),
    dict(split_file='refcocog/refs(umd).p', splits=['val', 'test']),
]

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        ignore_keys=['dataset_name'],  # the parts differ only in metainfo.dataset_name
        # each part: the base's training set with the dataset's files and name (each sample's
        # source), without the evaluation images
        datasets=[
            dict(_base_.train_dataloader.dataset, ann_file=f'{name}/instances.json',
                 split_file=f'{name}/{refs}', metainfo=dict(dataset_name=name),
                 exclude_images_of=eval_splits)
            for name, refs in (('refcoco', 'refs(unc).p'), ('refcoco+', 'refs(unc).p'),
                               ('refcocog', 'refs(umd).p'))
        ]))
