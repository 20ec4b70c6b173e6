"""condsim.synthetic: the seeded world and the writers of datasets in the real formats."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from condsim.synthetic import world
from condsim.synthetic.lrvsf import CATEGORIES, category_region, write_lrvsf
from condsim.synthetic.world import (
    COLOURS,
    PATTERNS,
    SHAPES,
    ObjectSpec,
    Region,
    all_specs,
    jpeg_bytes,
    parse_caption,
    random_spec,
    render_alone,
    render_scene,
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _decode(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    img.load()
    return np.asarray(img.convert("RGB"))


def _near(arr: np.ndarray, rgb: tuple[int, int, int], tol: float = 45.0) -> np.ndarray:
    return np.linalg.norm(arr.astype(float) - np.array(rgb, float), axis=-1) < tol


# -- world -----------------------------------------------------------------------------------

def test_specs_caption_round_trip_and_validation():
    specs = all_specs()
    assert len(specs) == len(SHAPES) * len(COLOURS) * len(PATTERNS) == len(set(specs))
    for spec in specs:
        assert parse_caption(spec.caption()) == spec
    assert ObjectSpec("circle", "red", "striped").caption() == "a red striped circle"
    assert ObjectSpec("square", "blue").caption() == "a blue square"
    with pytest.raises(ValueError, match="unknown shape"):
        ObjectSpec("blob", "red")
    with pytest.raises(ValueError, match="unknown colour"):
        ObjectSpec("circle", "mauve")
    with pytest.raises(ValueError, match="not an object caption"):
        parse_caption("two dogs")
    with pytest.raises(ValueError, match="invalid region"):
        Region(0.5, 0.0, 0.4, 1.0)


def test_rendering_is_deterministic_and_fast():
    def draw(seed: int) -> list[bytes]:
        rng = np.random.default_rng(seed)
        specs = [random_spec(rng) for _ in range(20)]
        out = [render_alone(s, (256, 300), rng).tobytes() for s in specs]
        out.append(render_scene([(specs[0], (0.3, 0.3)), (specs[1], Region(0.5, 0.5, 1, 1))],
                                (300, 256), rng).tobytes())
        return out

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)
    rng = np.random.default_rng(0)
    specs = [random_spec(rng) for _ in range(100)]
    start = time.perf_counter()
    for spec in specs:
        jpeg_bytes(render_alone(spec, (256, 320), rng))
    per_image = (time.perf_counter() - start) / len(specs)
    assert per_image < 0.02, f"{per_image * 1e3:.1f} ms per 256 px image (render + JPEG)"


def test_render_alone_shows_the_object_in_its_colour():
    rng = np.random.default_rng(3)
    for spec in [ObjectSpec(s, c) for s in SHAPES for c in COLOURS]:
        arr = np.asarray(render_alone(spec, (256, 256), rng))
        centre = arr[112:144, 112:144]
        assert _near(centre, COLOURS[spec.colour], 10).mean() > 0.9, spec


def test_scene_objects_stay_inside_their_regions():
    rng = np.random.default_rng(5)
    bg = (128, 128, 128)
    regions = [Region(0.0, 0.0, 0.3, 0.4), Region(0.55, 0.1, 1.0, 0.45),
               Region(0.2, 0.6, 0.6, 1.0)]
    for _ in range(20):
        items = [(random_spec(rng), r) for r in regions]
        size = world.shortest_side_size(rng)
        arr = np.asarray(render_scene(items, size, rng, bg, clutter=0))
        inside = np.zeros(arr.shape[:2], bool)
        for r in regions:
            left, top, right, bottom = r.pixels(size)
            inside[top:bottom, left:right] = True
            assert (~_near(arr[top:bottom, left:right], bg, 1)).mean() > 0.1
        assert (arr[~inside] == bg).all()


# -- LRVS-F ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lrvsf_root(tmp_path_factory) -> Path:
    return write_lrvsf(tmp_path_factory.mktemp("lrvsf"), n_products=40, n_distractors=60,
                       files=3, seed=0, corrupt_distractors=4)


def test_lrvsf_layout_and_schema(lrvsf_root):
    products = pq.read_table(lrvsf_root / "products.parquet")
    assert products.schema.names == ["SIMPLE_IMG", "COMPLEX_IMG", "CATEGORY", "blip2_caption1"]
    assert products.schema.field("SIMPLE_IMG").type == pa.binary()
    assert products.schema.field("COMPLEX_IMG").type == pa.binary()
    assert products.num_rows == 40
    assert set(products.column("CATEGORY").to_pylist()) == set(CATEGORIES)
    assert len(CATEGORIES) == 10
    parts = sorted(p.name for p in (lrvsf_root / "distractors").iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    dist = pq.read_table(lrvsf_root / "distractors")
    assert dist.num_rows == 60
    for name, typ in [("jpg", pa.binary()), ("key", pa.string()), ("url", pa.string()),
                      ("caption", pa.string()), ("width", pa.int64()),
                      ("height", pa.int64())]:
        assert dist.schema.field(name).type == typ
    assert len(set(dist.column("key").to_pylist())) == 60


def test_lrvsf_images_decode_with_shortest_side_256(lrvsf_root):
    products = pq.read_table(lrvsf_root / "products.parquet")
    shapes = set()
    for col in ("SIMPLE_IMG", "COMPLEX_IMG"):
        for data in products.column(col).to_pylist():
            h, w = _decode(data).shape[:2]
            assert min(w, h) == 256 and max(w, h) <= 320
            shapes.add((w, h))
    assert len(shapes) > 3  # the aspect ratio varies, both orientations
    dist = pq.read_table(lrvsf_root / "distractors").to_pylist()
    bad = 0
    for row in dist:
        try:
            arr = _decode(row["jpg"])
        except OSError:
            bad += 1
            continue
        assert arr.shape[:2] == (row["height"], row["width"])
        assert min(arr.shape[:2]) == 256
        parse_caption(row["caption"])
    assert bad == 4


def test_lrvsf_corrupt_distractors_really_fail(tmp_path):
    root = write_lrvsf(tmp_path / "c", n_products=2, n_distractors=10, files=1,
                       corrupt_distractors=10)
    for data in pq.read_table(root / "distractors").column("jpg").to_pylist():
        with pytest.raises(OSError):
            Image.open(io.BytesIO(data)).load()


def test_lrvsf_is_deterministic_and_seeded(tmp_path):
    kw = dict(n_products=6, n_distractors=9, files=2, corrupt_distractors=1)
    a = _files(write_lrvsf(tmp_path / "a", seed=7, **kw))
    b = _files(write_lrvsf(tmp_path / "b", seed=7, **kw))
    c = _files(write_lrvsf(tmp_path / "c", seed=8, **kw))
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_lrvsf_struct_image_columns_and_stale_parts(tmp_path):
    root = write_lrvsf(tmp_path / "s", n_products=3, n_distractors=8, files=4)
    root = write_lrvsf(tmp_path / "s", n_products=3, n_distractors=8, files=2,
                       image_col_struct=True)
    assert len(list((root / "distractors").glob("*.parquet"))) == 2
    products = pq.read_table(root / "products.parquet")
    typ = products.schema.field("SIMPLE_IMG").type
    assert pa.types.is_struct(typ) and typ.field("bytes").type == pa.binary()
    assert typ.field("path").type == pa.string()
    row = products.to_pylist()[0]
    assert min(_decode(row["COMPLEX_IMG"]["bytes"]).shape[:2]) == 256
    with pytest.raises(ValueError, match="corrupt_distractors"):
        write_lrvsf(tmp_path / "x", n_products=1, n_distractors=2, corrupt_distractors=3)
    with pytest.raises(ValueError, match="unknown LRVS-F category"):
        category_region("Hat")


def test_lrvsf_regions_are_disjoint():
    size = (256, 320)
    masks = []
    for cat in CATEGORIES:
        m = np.zeros(size[::-1], bool)
        left, top, right, bottom = category_region(cat).pixels(size)
        m[top:bottom, left:right] = True
        masks.append(m)
    assert (np.sum(masks, axis=0) <= 1).all()
    assert category_region("Head").centre[1] < category_region("Feet").centre[1]


def test_lrvsf_target_is_in_its_category_region(lrvsf_root):
    """The product's colour fills its category's region of COMPLEX_IMG and no other region
    (the scene's other objects have other colours), and fills SIMPLE_IMG's centre."""
    rows = pq.read_table(lrvsf_root / "products.parquet").to_pylist()
    for row in rows:
        spec = parse_caption(row["blip2_caption1"])
        rgb = COLOURS[spec.colour]
        arr = _decode(row["COMPLEX_IMG"])
        size = (arr.shape[1], arr.shape[0])
        share = {}
        for cat in CATEGORIES:
            left, top, right, bottom = category_region(cat).pixels(size)
            share[cat] = _near(arr[top:bottom, left:right], rgb).mean()
        assert share[row["CATEGORY"]] > 0.03, (row["CATEGORY"], spec, share)
        others = [v for k, v in share.items() if k != row["CATEGORY"]]
        assert max(others) < 0.015, (row["CATEGORY"], spec, share)
        simple = _decode(row["SIMPLE_IMG"])
        h, w = simple.shape[:2]
        assert _near(simple[h // 2 - 20:h // 2 + 20, w // 2 - 20:w // 2 + 20], rgb).mean() > 0.3
