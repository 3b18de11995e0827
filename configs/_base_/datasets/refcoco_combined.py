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
        # the three parts differ only in metainfo.dataset_name (each sample's source)
        ignore_keys=['dataset_name'],
        datasets=[
            dict(
                type='RefCOCODataset',
                data_root={{_base_.data_root}},
                ann_file='refcoco/instances.json',
                split_file='refcoco/refs(unc).p',
                split='train',
                data_prefix=dict(img_path='images/train2014/'),
                exclude_images_of=eval_splits,
                metainfo=dict(dataset_name='refcoco'),
                pipeline={{_base_.train_pipeline}}),
            dict(
                type='RefCOCODataset',
                data_root={{_base_.data_root}},
                ann_file='refcoco+/instances.json',
                split_file='refcoco+/refs(unc).p',
                split='train',
                data_prefix=dict(img_path='images/train2014/'),
                exclude_images_of=eval_splits,
                metainfo=dict(dataset_name='refcoco+'),
                pipeline={{_base_.train_pipeline}}),
            dict(
                type='RefCOCODataset',
                data_root={{_base_.data_root}},
                ann_file='refcocog/instances.json',
                split_file='refcocog/refs(umd).p',
                split='train',
                data_prefix=dict(img_path='images/train2014/'),
                exclude_images_of=eval_splits,
                metainfo=dict(dataset_name='refcocog'),
                pipeline={{_base_.train_pipeline}}),
        ]))
