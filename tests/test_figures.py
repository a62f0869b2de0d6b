"""The figures and image sheets: what they draw follows the data they are given."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gammaface.report import figures
from gammaface.common import images
from gammaface.data import registry


def _png(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG"
    return im


def test_a_grid_is_the_images_tiled_with_white_borders():
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 255, (4, 5, 3), dtype=np.uint8) for _ in range(5)]
    sheet = images.grid(faces, ncol=3, pad=1)
    assert sheet.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    for i, face in enumerate(faces):
        r, c = divmod(i, 3)
        np.testing.assert_array_equal(sheet[1 + r * 5:1 + r * 5 + 4, 1 + c * 6:1 + c * 6 + 5], face)
    assert (sheet[6:, 13:] == 255).all()  # the sixth cell is empty
    assert (sheet[0] == 255).all() and (sheet[:, 0] == 255).all()
    one = images.grid(faces[:1], ncol=4, pad=1, upscale=2)
    assert one.shape == (12, 14, 3) and (one[:2] == 255).all()
    np.testing.assert_array_equal(one[2:10:2, 2:12:2], faces[0])


def test_png_bytes_decode_to_the_same_pixels():
    image = np.random.default_rng(1).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(_png(images.encode_png(image))), image)


def test_the_report_figures_are_pngs_sized_by_their_content():
    train = pd.DataFrame({a: np.random.default_rng(2).choice(registry.get(a).classes, 50)
                          for a in registry.ATTRIBUTE_NAMES})
    one = train.copy()
    for a in registry.ATTRIBUTE_NAMES[1:]:
        one[a] = None  # attributes without labels get no panel
    assert _png(figures.skew(train)).width > 2 * _png(figures.skew(one)).width

    tpr = {"baseline": pd.Series([0.5, 0.7], index=["a", "b"]),
           "gmm": pd.Series([0.6, 0.6], index=["a", "b"])}
    assert _png(figures.group_tpr(tpr)).size[0] > 0

    table = pd.DataFrame({"k": [1, 2, 3], "bic": [5.0, 3.0, 4.0], "aic": [4.0, 2.0, 3.5]})
    assert _png(figures.bic_curve(table, 2)).size == (600, 384)

    def summary(sizes):
        rows = [{"n_per_class": n, "method": m, "ratio": r, "B_mean": 0.1, "B_std": 0.01,
                 "Acc_mean": 0.8, "Acc_std": 0.02}
                for n in sizes for m, r in (("baseline", 0.0), ("gmm", 0.5))]
        return pd.DataFrame(rows)

    one_size = _png(figures.ratio_ablation(summary([50]), "baseline"))
    two_sizes = _png(figures.ratio_ablation(summary([50, 100]), "baseline"))
    assert two_sizes.height == pytest.approx(2 * one_size.height, rel=0.01)

    balance = pd.DataFrame({"set": ["train", "gmm"], "discrepancy/gender": [0.3, 0.1],
                            "discrepancy_std/gender": [0.01, 0.02]})
    assert _png(figures.balance_bars(balance, ["gender"])).size[0] > 0


def test_the_composition_heatmap_grows_with_components_and_cells():
    comp = pd.DataFrame(np.full((3, 12), 1 / 12), columns=[f"c{i}" for i in range(12)])
    small, big = _png(figures.composition_heatmap(comp)), _png(
        figures.composition_heatmap(pd.concat([comp] * 3, ignore_index=True)))
    assert big.size[1] > small.size[1] and big.size[0] == small.size[0]


def test_predicted_against_measured_draws_with_a_missing_judge_figure():
    table = pd.DataFrame({"method": ["gmm", "gmm_attr"], "predicted": [0.24, 0.17],
                          "labeller": [0.25, 0.18], "labeller_std": [0.01, 0.01],
                          "judge": [0.24, np.nan], "judge_lo": [0.21, np.nan],
                          "judge_hi": [0.26, np.nan]})
    assert _png(figures.predicted_vs_measured(table)).size[0] > 100


def test_the_html_page_embeds_every_image_it_can_read_and_renders_tables():
    from gammaface.report import webpage

    png = figures.composition_heatmap(pd.DataFrame(np.eye(2), columns=["a", "b"]))
    md = "# t\n\n| set | n |\n|---|---|\n| gmm | 3 |\n\n![x](x.png)\n\n![y](gone.png)\n"
    page = webpage.render(md, "t & u", {"x.png": png}.get)
    assert "<table>" in page and "<td>gmm</td>" in page and "<title>t &amp; u</title>" in page
    assert webpage.missing_images(page) == ["gone.png"]
    import base64
    data = page.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(data) == png
