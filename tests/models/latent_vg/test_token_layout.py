"""TokenLayout: every position of Latent-VG's joint sequence, counted by hand."""
import pytest

from mmrefer.models.latent_vg.token_layout import TokenLayout, as_layout


def test_positions_of_the_paper_layout():
    # 480 px / 16 = 30 x 30 patches, L = 20, k = (4, 10)
    lay = TokenLayout.build(num_patches=900, text_len=20, attr_lengths=(4, 10))
    assert lay.group_sizes == [901, 20, 6, 12] and lay.length == 939
    assert lay.offsets == [0, 901, 921, 927]
    assert lay.patches == slice(1, 901) and lay.text_cls == 901
    assert lay.class_tokens == [901, 921, 927]
    assert [lay.subject(0), lay.subject(1)] == [922, 928]
    assert lay.attrs(0) == slice(923, 927) and lay.attrs(1) == slice(929, 939)
    assert lay.latent(1) == slice(927, 939)


def test_no_latents_and_conversion():
    lay = TokenLayout.build(num_patches=16, text_len=8)
    assert lay.group_sizes == [17, 8] and lay.class_tokens == [17] and lay.num_latents == 0
    assert as_layout([17, 8, 6]) == TokenLayout(17, 8, (6, ))
    assert as_layout(lay) is lay
    with pytest.raises(ValueError, match='no room'):
        TokenLayout(17, 8, (2, ))
    with pytest.raises(ValueError, match=r'\[1 \+ P, L'):
        as_layout([17])
