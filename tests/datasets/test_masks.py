"""mmrefer.datasets.masks (the one segmentation decoder) against pycocotools' COCO index on the
official formats, and its errors."""
import contextlib
import io

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from _refmini import H11, H12, W11, W12, rect_mask, uncompressed_rle
from pycocotools.coco import COCO

from mmrefer.datasets import load_coco_instances
from mmrefer.datasets.masks import decode_ref_mask, segm_area, segm_to_rle
from mmrefer.datasets.transforms.resize import rasterize_polygons


def _coco(segms, h, w):
    """A COCO index holding one image ``h x w`` and one annotation per segmentation."""
    coco = COCO()
    coco.dataset = dict(images=[dict(id=1, height=h, width=w)],
                        annotations=[dict(id=i + 1, image_id=1, category_id=1, segmentation=s)
                                     for i, s in enumerate(segms)],
                        categories=[dict(id=1, name='x')])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def test_every_official_format_decodes_as_pycocotools():
    rng = np.random.default_rng(0)
    h, w = 37, 53
    blob = (rng.random((h, w)) < 0.3).astype(np.uint8)
    compressed = mask_utils.encode(np.asfortranarray(blob))
    segms = [
        [[3.5, 4, 30, 2.25, 20, 30]],                              # one polygon
        [[3, 4, 30, 2, 20, 30], [40, 5, 50, 5, 50, 35, 41, 33]],   # two parts (ints), merged
        uncompressed_rle(blob),                                    # counts list
        dict(size=[h, w], counts=compressed['counts'].decode('ascii')),  # counts str (JSON)
        dict(size=[h, w], counts=compressed['counts']),            # counts bytes
    ]
    coco = _coco(segms, h, w)
    for i, segm in enumerate(segms):
        expect = coco.annToMask(coco.anns[i + 1])
        got = decode_ref_mask(segm, h, w)
        assert got.dtype == np.uint8 and got.shape == (h, w)
        np.testing.assert_array_equal(got, expect, err_msg=f'segmentation {i}')
        assert segm_area(segm, h, w) == int(mask_utils.area(coco.annToRLE(coco.anns[i + 1])))
        assert segm_area(segm, h, w) == int(expect.sum()) > 0


def test_degenerate_polygon_parts_are_ignored_not_read_as_boxes():
    """pycocotools takes a list whose first part has 4 numbers for boxes (and fails on the
    polygon after it); the decoder drops parts with fewer than 3 vertices and rasterises the
    rest, as pycocotools does the triangle alone."""
    tri = [10, 10, 30, 10, 20, 25]
    coco = _coco([[[1, 1, 2, 2], tri], [tri]], H12, W12)
    with pytest.raises(TypeError):
        coco.annToMask(coco.anns[1])
    got = decode_ref_mask([[1, 1, 2, 2], tri], H12, W12)
    np.testing.assert_array_equal(got, coco.annToMask(coco.anns[2]))
    assert segm_area([[1, 1, 5, 5]], H12, W12) == 0
    assert not decode_ref_mask([], H12, W12).any()


def test_scaled_polygons_rasterise_as_pycocotools_at_the_new_size():
    poly = [[5.0, 5.0, 20.0, 5.0, 20.0, 20.0, 5.0, 20.0, 7.0]]  # odd length: last value unused
    got = rasterize_polygons(poly, (31 / W11, 23 / H11), (2.0, 1.0), (35, 25))
    fx, fy = 31 / W11, 23 / H11
    exp = [[5 * fx + 2, 5 * fy + 1, 20 * fx + 2, 5 * fy + 1, 20 * fx + 2, 20 * fy + 1,
            5 * fx + 2, 20 * fy + 1]]
    np.testing.assert_array_equal(got, mask_utils.decode(mask_utils.merge(
        mask_utils.frPyObjects(exp, 25, 35))))


@pytest.mark.parametrize('segm,err,match', [
    (dict(size=[H11, W11]), KeyError, 'counts and size'),
    (dict(size=[W11, H11], counts=uncompressed_rle(rect_mask(W11, H11, 0, 2, 0, 2))['counts']),
     ValueError, r'RLE size \[50, 40\] differs from the image size \[40, 50\]'),
    (None, TypeError, 'NoneType'),
])
def test_bad_segmentations(segm, err, match):
    with pytest.raises(err, match=match):
        segm_to_rle(segm, H11, W11)


def test_load_coco_instances_is_a_quiet_pycocotools_index(mini_root, capsys):
    coco = load_coco_instances(str(mini_root / 'instances.json'))
    assert capsys.readouterr().out == ''
    ref = COCO(str(mini_root / 'instances.json'))
    assert coco.anns == ref.anns and coco.imgs == ref.imgs
    assert coco.getAnnIds(imgIds=12) == ref.getAnnIds(imgIds=12) == [5, 6]


def test_load_coco_instances_names_the_file_and_field(mini_root):
    (mini_root / 'bad.json').write_text('{"images": [{"id": 1}], "annotations": [{"id": 3}]}')
    with pytest.raises(KeyError, match=r"bad\.json.*'image_id'"):
        load_coco_instances(str(mini_root / 'bad.json'))
    (mini_root / 'bad2.json').write_text('{"annotations": [{"id": 3}]}')
    with pytest.raises(KeyError, match=r"bad2\.json.*no 'images' field"):
        load_coco_instances(str(mini_root / 'bad2.json'))
