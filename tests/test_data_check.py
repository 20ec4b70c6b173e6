"""``condsim data check``: synthetic sets are complete but not the published size (exit 1,
exit 0 with ``--expect any``); damaged copies name each problem with its status and the
exit code says whether the benchmark can run (0 complete / 1 differs / 2 cannot run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from condsim.benchmarks.datacheck import (
    EXIT_CANNOT_RUN,
    EXIT_COMPLETE,
    EXIT_DIFFERS,
    DataReport,
    ImageItem,
    check_images,
    check_parquet_fragment,
    render_report,
)
from condsim.cli.main import main
from condsim.progress import no_progress
from condsim.registry import list_benchmarks

SPECS = {spec.name: spec for spec in list_benchmarks()}


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Each benchmark's synthetic set (its spec's writer), written once."""
    root = tmp_path_factory.mktemp("datacheck")
    return root, {name: spec.synthetic(root / name, 0) for name, spec in SPECS.items()}


def _argv(name: str, fields: dict[str, Any], *extra: str) -> list[str]:
    args = ["data", "check", name]
    for key, value in fields.items():
        flag = "--" + key.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            args += [flag, str(v)]
    return args + ["--workers", "2", *extra]


def _copy(synthetic: tuple[Path, dict[str, Any]], name: str, tmp_path: Path
          ) -> tuple[Path, dict[str, Any]]:
    """A private copy of ``name``'s synthetic set (to damage) and its config fields."""
    root, fields = synthetic
    dst = tmp_path / name
    shutil.copytree(root / name, dst)

    def moved(v: Any) -> Any:
        if isinstance(v, list):
            return [moved(x) for x in v]
        return v.replace(str(root / name), str(dst)) if isinstance(v, str) else v

    return dst, {k: moved(v) for k, v in fields[name].items()}


def _report(tmp_path: Path, name: str, fields: dict[str, Any], *extra: str
            ) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "report.json"
    code = main(_argv(name, fields, "--out", str(out), *extra))
    return code, json.loads(out.read_text())


def _issues(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return report["issues"][kind]


def test_every_benchmark_declares_a_check():
    assert {"lrvsf", "genecis", "cirr", "circo", "fashioniq", "mitstates"} <= set(SPECS)
    assert all(callable(spec.check) for spec in SPECS.values())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_synthetic_set_is_complete_but_not_the_published_size(name, synthetic, tmp_path):
    _, fields = synthetic
    code, report = _report(tmp_path, name, fields[name])
    if all(c["status"] == "not verified" for c in report["counts"]):
        # a benchmark without a published set (any2any): complete is all there is to say
        assert code == EXIT_COMPLETE and report["images_checked"] > 0, report
        assert not any(report["issues"][k] for k in ("error", "missing", "corrupt"))
        return
    assert code == EXIT_DIFFERS, report
    assert report["verdict"].startswith("complete but not the published size")
    assert not any(report["issues"][k] for k in ("error", "missing", "corrupt"))
    assert report["images_checked"] > 0
    statuses = {c["status"] for c in report["counts"]}
    assert "differs" in statuses and "unreadable" not in statuses
    # every compared count names where the official number comes from
    assert all(c["source"] for c in report["counts"])
    assert main(_argv(name, fields[name], "--expect", "any")) == EXIT_COMPLETE


def test_missing_image_is_named_with_its_source(synthetic, tmp_path):
    root, fields = _copy(synthetic, "cirr", tmp_path)
    victim = sorted((root / "img_raw" / "dev").rglob("*.png"))[0]
    victim.unlink()
    code, report = _report(tmp_path, "cirr", fields)
    assert code == EXIT_CANNOT_RUN  # --max-missing 0: the run stops
    (missing,) = _issues(report, "missing")
    assert missing["where"] == str(victim) and missing["blocking"]
    assert "NLVR2" in missing["source"]
    # tolerated by --max-missing: the run skips its queries, not the published set
    code, report = _report(tmp_path, "cirr", fields, "--max-missing", "1")
    assert code == EXIT_DIFFERS
    assert not _issues(report, "missing")[0]["blocking"]


def test_truncated_jpeg_is_corrupt_with_the_reason(synthetic, tmp_path):
    root, fields = _copy(synthetic, "circo", tmp_path)
    victim = sorted((root / "unlabeled2017").glob("*.jpg"))[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    code, report = _report(tmp_path, "circo", fields)
    assert code == EXIT_CANNOT_RUN
    (bad,) = _issues(report, "corrupt")
    assert bad["where"] == str(victim)
    assert "truncated" in bad["reason"].lower()
    assert "unlabeled2017.zip" in bad["source"]


def test_missing_annotation_file(synthetic, tmp_path):
    root, fields = _copy(synthetic, "fashioniq", tmp_path)
    victim = root / "captions" / "cap.shirt.val.json"
    victim.unlink()
    code, report = _report(tmp_path, "fashioniq", fields)
    assert code == EXIT_CANNOT_RUN
    (missing,) = _issues(report, "missing")
    assert missing["where"] == str(victim) and missing["blocking"]
    assert "XiaoxiaoGuo/fashion-iq" in missing["source"]
    assert "captions/cap.shirt.val.json" in missing["source"]
    # the other categories are still counted
    assert {c["name"] for c in report["counts"]} >= {"dress queries", "toptee queries"}


def test_duplicated_query_id(synthetic, tmp_path):
    root, fields = _copy(synthetic, "cirr", tmp_path)
    path = root / "captions" / "cap.rc2.val.json"
    entries = json.loads(path.read_text())
    entries.append(dict(entries[0]))
    path.write_text(json.dumps(entries))
    code, report = _report(tmp_path, "cirr", fields)
    assert code == EXIT_CANNOT_RUN
    (dup,) = _issues(report, "duplicate")
    assert str(path) in dup["where"] and f"pairid {entries[0]['pairid']}" in dup["reason"]
    assert dup["blocking"]


def test_duplicated_circo_query_id(synthetic, tmp_path):
    root, fields = _copy(synthetic, "circo", tmp_path)
    path = root / "annotations" / "val.json"
    entries = json.loads(path.read_text())
    entries[1]["id"] = entries[0]["id"]
    path.write_text(json.dumps(entries))
    code, report = _report(tmp_path, "circo", fields)
    assert code == EXIT_CANNOT_RUN
    assert any(f"query id {entries[0]['id']}" in d["reason"]
               for d in _issues(report, "duplicate"))


def test_fake_and_truncated_parquet_fragments(synthetic, tmp_path):
    root, fields = _copy(synthetic, "lrvsf", tmp_path)
    folder = root / "distractors"
    real = sorted(folder.glob("*.parquet"))[0]
    fake = folder / "part-fake.parquet"
    fake.write_bytes(b"PAR1 this is not a parquet file PAR1")
    cut = folder / "part-cut.parquet"
    cut.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    code, report = _report(tmp_path, "lrvsf", fields)
    assert code == EXIT_CANNOT_RUN
    corrupt = {c["where"]: c for c in _issues(report, "corrupt")}
    assert {str(fake), str(cut)} <= set(corrupt)
    assert all(corrupt[str(p)]["blocking"] for p in (fake, cut))
    assert "footer" in corrupt[str(fake)]["reason"]
    rows = next(c for c in report["counts"] if c["name"].startswith("distractors"))
    assert rows["note"].startswith("2 of 4 fragment(s)")


def test_parquet_fragment_without_a_binary_image_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"jpg": ["not bytes"], "key": ["0"]}), path)
    rows, problem = check_parquet_fragment(path, "jpg")
    assert rows == 1 and "expected binary" in problem
    rows, problem = check_parquet_fragment(path, "image")
    assert "no image column 'image'" in problem


def test_corrupt_distractor_is_skipped_not_blocking(synthetic, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, fields = _copy(synthetic, "lrvsf", tmp_path)
    path = sorted((root / "distractors").glob("*.parquet"))[0]
    table = pq.read_table(path)
    jpgs = table.column("jpg").to_pylist()
    jpgs[2] = jpgs[2][:40]
    jpgs[3] = None
    table = table.set_column(table.schema.get_field_index("jpg"), "jpg",
                             pa.array(jpgs, table.schema.field("jpg").type))
    pq.write_table(table, path)
    code, report = _report(tmp_path, "lrvsf", fields)
    assert code == EXIT_DIFFERS  # the run skips them, on fewer distractors than published
    (bad,) = _issues(report, "corrupt")
    (null,) = _issues(report, "missing")
    assert bad["where"] == f"{path} row 2" and not bad["blocking"]
    assert null["where"] == f"{path} row 3" and "null" in null["reason"]


def test_corrupt_product_image_blocks(synthetic, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, fields = _copy(synthetic, "lrvsf", tmp_path)
    path = root / "products.parquet"
    table = pq.read_table(path)
    col = table.schema.get_field_index("SIMPLE_IMG")
    values = table.column(col).to_pylist()
    values[5] = b"\xff\xd8\xff" + b"\0" * 10
    table = table.set_column(col, "SIMPLE_IMG", pa.array(values, table.schema.field(col).type))
    pq.write_table(table, path)
    code, report = _report(tmp_path, "lrvsf", fields)
    assert code == EXIT_CANNOT_RUN
    (bad,) = _issues(report, "corrupt")
    assert bad["where"] == f"{path} row 5 SIMPLE_IMG" and bad["blocking"]


def test_image_checker_reports_bombs_and_identical_files(tmp_path, monkeypatch):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(img)
    shutil.copy(img, tmp_path / "b.png")
    items = [ImageItem(str(p), path=str(p)) for p in (img, tmp_path / "b.png",
                                                      tmp_path / "gone.png")]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)
    result = check_images(items, total=3, progress=no_progress, threads=2, what="x")
    assert "decompression bomb" in result.corrupt[str(img)]
    assert result.missing == {str(tmp_path / "gone.png"): "no such file"}
    monkeypatch.undo()
    result = check_images(items[:2], total=2, progress=no_progress, threads=1, what="x")
    assert result.same_content == [[str(img), str(tmp_path / "b.png")]]


def test_report_rendering_truncates_lists():
    from rich.console import Console

    report = DataReport("x", {})
    report.count("queries", 3, 3, "somewhere")
    for i in range(25):
        report.issue("missing", f"/data/{i}.jpg", "no such file", "http://source")
    console = Console(width=200, record=True)
    for item in render_report(report, limit=5):
        console.print(item)
    text = console.export_text()
    assert "/data/4.jpg" in text and "/data/5.jpg" not in text
    assert "... and 20 more" in text and "(exit 1)" in text


def test_genecis_missing_vg_image_and_tolerated_duplicate(synthetic, tmp_path):
    root, fields = _copy(synthetic, "genecis", tmp_path)
    path = Path(fields["annotations"]) / "change_object.json"
    entries = json.loads(path.read_text())
    entries[0]["gallery"].append(entries[0]["target"])  # as in the published entry 19
    path.write_text(json.dumps(entries))
    ref = json.loads((Path(fields["annotations"]) / "focus_attribute.json").read_text())[0]
    victim = next(p for folder in fields["vg_roots"]
                  for p in [Path(folder) / f"{ref['reference']['image_id']}.jpg"]
                  if p.is_file())
    victim.unlink()
    code, report = _report(tmp_path, "genecis", fields)
    assert code == EXIT_CANNOT_RUN
    missing = _issues(report, "missing")
    # a VG id found in no folder is reported under the first one
    assert [Path(m["where"]).name for m in missing] == [victim.name]
    assert "Visual Genome" in missing[0]["source"]
    (dup,) = _issues(report, "duplicate")
    assert dup["where"] == f"{path} entry 0" and not dup["blocking"]


def test_mitstates_corrupt_image(synthetic, tmp_path):
    root, fields = _copy(synthetic, "mitstates", tmp_path)
    from condsim.benchmarks.mitstates import TEST_NOUNS

    victim = next(p for p in sorted((root / "images").rglob("*.jpg"))
                  if p.parent.name.partition(" ")[2] in TEST_NOUNS
                  and not p.parent.name.startswith("adj "))
    victim.write_bytes(b"not an image")
    code, report = _report(tmp_path, "mitstates", fields, "--max-missing", "1")
    assert code == EXIT_DIFFERS
    (bad,) = _issues(report, "corrupt")
    assert bad["where"] == str(victim) and "cannot decode" in bad["reason"]
