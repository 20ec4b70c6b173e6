"""condsim.synthetic: the seeded world and the writers of datasets in the real formats."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from condsim.synthetic import world, write_captions, write_genecis
from condsim.synthetic.captions import RELATIONS
from condsim.synthetic.genecis import TRUTH_FILE
from condsim.synthetic.lrvsf import CATEGORIES, category_box, category_region, write_lrvsf
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
from condsim.training.captions import count_reasons, read_captions, skip_reason


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
    assert ObjectSpec("heart", "orange", "dotted").caption() == "an orange dotted heart"
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
        mask = _near(arr, COLOURS[spec.colour], 10)
        assert mask.mean() > 0.04, spec
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() - 128) < 40 and abs(ys.mean() - 128) < 40, spec
        assert not mask[:40].any() and not mask[-40:].any(), spec


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
    for size in [(256, 320), (320, 256), (256, 256)]:
        masks = []
        for cat in CATEGORIES:
            m = np.zeros(size[::-1], bool)
            left, top, right, bottom = category_box(cat, size)
            m[top:bottom, left:right] = True
            masks.append(m)
        assert (np.sum(masks, axis=0) <= 1).all()
        # all inside the centred square (what a centre crop keeps)
        side = min(size)
        inside = np.zeros(size[::-1], bool)
        inside[(size[1] - side) // 2:(size[1] + side) // 2,
               (size[0] - side) // 2:(size[0] + side) // 2] = True
        assert not np.any(np.sum(masks, axis=0) & ~inside)
    assert category_region("Head").centre[1] < category_region("Feet").centre[1]


def test_lrvsf_target_is_in_its_category_region(lrvsf_root):
    """The product's colour fills its category's region of COMPLEX_IMG and no other region
    (the scene's other objects have other colours), and shows in SIMPLE_IMG."""
    rows = pq.read_table(lrvsf_root / "products.parquet").to_pylist()
    for row in rows:
        spec = parse_caption(row["blip2_caption1"])
        rgb = COLOURS[spec.colour]
        arr = _decode(row["COMPLEX_IMG"])
        size = (arr.shape[1], arr.shape[0])
        share = {}
        for cat in CATEGORIES:
            left, top, right, bottom = category_box(cat, size)
            share[cat] = _near(arr[top:bottom, left:right], rgb).mean()
        assert share[row["CATEGORY"]] > 0.04, (row["CATEGORY"], spec, share)
        others = [v for k, v in share.items() if k != row["CATEGORY"]]
        assert max(others) < 0.02, (row["CATEGORY"], spec, share)
        assert _near(_decode(row["SIMPLE_IMG"]), rgb).mean() > 0.02


# -- GeneCIS ---------------------------------------------------------------------------------

GENECIS_TASKS = ("focus_attribute", "change_attribute", "focus_object", "change_object")


@pytest.fixture(scope="module")
def genecis_root(tmp_path_factory) -> Path:
    return write_genecis(tmp_path_factory.mktemp("genecis"), n_per_task=30, seed=0)


def _task(root: Path, task: str) -> list[dict]:
    return json.loads((root / "annotations" / f"{task}.json").read_text())


def _vg_path(root: Path, entry: dict) -> Path:
    found = [root / "vg" / d / f"{entry['image_id']}.jpg" for d in ("VG_100K", "VG_100K_2")]
    found = [p for p in found if p.is_file()]
    assert len(found) == 1, entry
    return found[0]


def _coco_path(root: Path, entry: dict) -> Path:
    return root / "coco" / "val2017" / f"{entry['val_image_id']:012d}.jpg"


def _box_colour_share(root: Path, entry: dict, colour: str) -> float:
    arr = _decode(_vg_path(root, entry).read_bytes())
    x, y, w, h = (int(round(v)) for v in entry["instance_bbox"])
    return float(_near(arr[y:y + h, x:x + w], COLOURS[colour]).mean())


def test_genecis_layout_and_json_format(genecis_root):
    root = genecis_root
    assert sorted(p.name for p in (root / "annotations").iterdir()) == sorted(
        f"{t}.json" for t in GENECIS_TASKS)
    assert any((root / "vg" / "VG_100K").iterdir()) and any((root / "vg" / "VG_100K_2").iterdir())
    assert (root / "annotations" / "focus_object.json").read_text().startswith("[\n    {\n")
    for task in GENECIS_TASKS:
        data = _task(root, task)
        assert isinstance(data, list) and len(data) == 30
        pairs = set()
        for t in data:
            assert list(t) == ["condition", "gallery", "reference", "target"]
            assert isinstance(t["condition"], str) and t["condition"]
            assert len(t["gallery"]) == 14  # + the target: 15 candidates
            cands = [t["target"], *t["gallery"]]
            if task.endswith("object"):
                assert all(list(e) == ["val_image_id"] and isinstance(e["val_image_id"], int)
                           for e in [t["reference"], *cands])
                keys = [e["val_image_id"] for e in cands]
                ref = t["reference"]["val_image_id"]
                assert all(_coco_path(root, e).is_file() for e in [t["reference"], *cands])
            else:
                for e in [t["reference"], *cands]:
                    assert isinstance(e["image_id"], str) and e["image_id"].isdigit()
                    assert len(e["instance_bbox"]) == 4
                keys = [(e["image_id"], tuple(e["instance_bbox"])) for e in cands]
                ref = (t["reference"]["image_id"], tuple(t["reference"]["instance_bbox"]))
            assert len(set(keys)) == 15 and ref not in keys
            pairs.add((json.dumps(t["reference"]), t["condition"]))
        assert len(pairs) == 30  # every (reference, condition) once


def test_genecis_boxes_inside_images_and_some_touch_the_border(genecis_root):
    touching = total = 0
    for task in ("focus_attribute", "change_attribute"):
        for t in _task(genecis_root, task):
            for e in [t["reference"], t["target"], *t["gallery"]]:
                with Image.open(_vg_path(genecis_root, e)) as img:
                    width, height = img.size
                x, y, w, h = e["instance_bbox"]
                assert w > 0 and h > 0 and x >= 0 and y >= 0
                assert x + w <= width and y + h <= height
                total += 1
                touching += x == 0 or y == 0 or x + w == width or y + h == height
    assert 0.1 * total < touching < 0.7 * total


def test_genecis_attribute_semantics_by_pixels(genecis_root):
    root = genecis_root
    for t in _task(root, "focus_attribute"):
        cond = t["condition"]
        assert cond in COLOURS
        assert _box_colour_share(root, t["reference"], cond) > 0.1
        assert _box_colour_share(root, t["target"], cond) > 0.1
        assert max(_box_colour_share(root, g, cond) for g in t["gallery"]) < 0.03
    for t in _task(root, "change_attribute"):
        cond, shape = t["condition"], t["reference"]["object_name"]
        assert _box_colour_share(root, t["reference"], cond) < 0.03
        assert t["target"]["object_name"] == shape
        assert _box_colour_share(root, t["target"], cond) > 0.1
        for g in t["gallery"]:
            if g["object_name"] == shape:
                assert _box_colour_share(root, g, cond) < 0.03


def test_genecis_object_semantics(genecis_root):
    root = genecis_root
    truth = json.loads((root / TRUTH_FILE).read_text())["coco"]

    def shapes(e: dict) -> set[str]:
        return set(truth[str(e["val_image_id"])]["shapes"])

    for t in _task(root, "focus_object"):
        cond = t["condition"]
        assert cond in SHAPES and cond in shapes(t["reference"]) and cond in shapes(t["target"])
        assert not any(cond in shapes(g) for g in t["gallery"])
    for t in _task(root, "change_object"):
        cond, ref, tgt = t["condition"], t["reference"], t["target"]
        assert cond not in shapes(ref) and shapes(tgt) == shapes(ref) | {cond}
        assert not any(shapes(ref) | {cond} <= shapes(g) for g in t["gallery"])
        # the target picture is the reference picture plus one object in one place
        a = _decode(_coco_path(root, ref).read_bytes()).astype(int)
        b = _decode(_coco_path(root, tgt).read_bytes()).astype(int)
        assert a.shape == b.shape
        ys, xs = np.nonzero(np.abs(a - b).max(axis=-1) > 30)
        assert len(ys) > 200
        assert xs.max() - xs.min() < a.shape[1] / 3 + 16
        assert ys.max() - ys.min() < a.shape[0] / 2 + 16


def test_genecis_is_deterministic_and_seeded(tmp_path):
    a = _files(write_genecis(tmp_path / "a", n_per_task=5, seed=3))
    b = _files(write_genecis(tmp_path / "b", n_per_task=5, seed=3))
    c = _files(write_genecis(tmp_path / "c", n_per_task=5, seed=4))
    assert a == b
    for task in GENECIS_TASKS:
        key = f"annotations/{task}.json"
        assert a[key] != c[key]
    with pytest.raises(ValueError, match="gallery_size"):
        write_genecis(tmp_path / "d", n_per_task=5, gallery_size=1)


# -- captions --------------------------------------------------------------------------------

_CAPTION_RE = re.compile(
    rf"an? ({'|'.join(COLOURS)}) (?:({'|'.join(PATTERNS[1:])}) )?({'|'.join(SHAPES)}) "
    rf"({'|'.join(RELATIONS)}) an? ({'|'.join(COLOURS)}) (?:({'|'.join(PATTERNS[1:])}) )?"
    rf"({'|'.join(SHAPES)})")


def test_captions_folder_layout_is_cc3m_tsv_with_images(tmp_path):
    path = write_captions(tmp_path / "cc", n=40, seed=0)
    assert path == tmp_path / "cc" / "captions.tsv"
    lines = path.read_text().splitlines()
    assert len(lines) == 40
    for line in lines:
        caption, image = line.split("\t")
        assert _CAPTION_RE.fullmatch(caption), caption
        assert image.startswith("images/")
        with Image.open(tmp_path / "cc" / image) as img:
            assert min(img.size) == 256
    table = read_captions(path)
    assert table.num_rows == 40 and table.malformed_rows == 0


def test_captions_parquet_file_and_images_elsewhere(tmp_path):
    path = write_captions(tmp_path / "c.parquet", n=12, seed=1)
    table = pq.read_table(path)
    assert table.schema.names == ["caption", "image"]
    assert all(u.startswith("https://") for u in table.column("image").to_pylist())
    path = write_captions(tmp_path / "sub" / "c.tsv", n=12, seed=1, images_dir=tmp_path / "img")
    for line in path.read_text().splitlines():
        assert Path(line.split("\t")[1]).is_absolute() and Path(line.split("\t")[1]).is_file()
    a = pq.read_table(write_captions(tmp_path / "d.parquet", n=12, seed=1))
    assert a.column("caption").to_pylist() == table.column("caption").to_pylist()
    with pytest.raises(ValueError, match="does not match"):
        write_captions(tmp_path / "e.tsv", n=2, fmt="parquet")


def test_captions_bad_rows_and_determinism(tmp_path):
    a = write_captions(tmp_path / "a", n=30, seed=2, bad_rows=True)
    b = write_captions(tmp_path / "b", n=30, seed=2, bad_rows=True)
    assert _files(a.parent) == _files(b.parent)
    assert a.read_bytes() != write_captions(tmp_path / "c", n=30, seed=3).read_bytes()
    table = read_captions(a)
    assert table.malformed_rows == 1
    reasons = count_reasons(skip_reason(c) for c in table.table.column("caption").to_pylist())
    assert reasons["empty"] == 2 and reasons["too_long"] == 1 and reasons["non_english"] == 1
    clean = pq.read_table(write_captions(tmp_path / "p.parquet", n=30, seed=2))
    assert not any(skip_reason(c) for c in clean.column("caption").to_pylist())


def test_captions_parse_into_subject_relation_object(tmp_path):
    pytest.importorskip("sng_parser")
    from condsim.training.scenegraph import ParserUnavailableError, SceneGraphParser

    try:
        parser = SceneGraphParser()
    except ParserUnavailableError as exc:
        pytest.skip(str(exc))
    path = write_captions(tmp_path / "x.parquet", n=100, seed=0)
    captions = pq.read_table(path).column("caption").to_pylist()
    found = 0
    for caption, graph in zip(captions, parser.parse(captions), strict=True):
        m = _CAPTION_RE.fullmatch(caption)
        assert m and graph is not None
        heads = {(graph["entities"][r["subject"]]["head"], graph["entities"][r["object"]]["head"])
                 for r in graph["relations"]}
        found += (m.group(3), m.group(7)) in heads
    # spaCy's small model mis-tags some phrases (e.g. "square" as a verb), as on CC3M
    assert found >= 70, f"only {found}/100 captions parse into (subject, object)"
