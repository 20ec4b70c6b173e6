"""Trust at the boundaries: every bad input gives one clear line (naming the file or option and
the fix) and the documented exit code, or is skipped and counted; never a traceback, never a
partial output, and earlier results/cache untouched.

Exit codes (``condsim.cli.main``): 2 = fix the command or its inputs, 1 = the machine failed
(permission, disk full, file too large, unexpected error), 130 = interrupted.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest
import typer
from PIL import Image

from condsim.cli.main import build_app, main
from condsim.synthetic.cirr import write_cirr
from condsim.synthetic.lrvsf import write_lrvsf

TINY = "test/tiny-clip"


# ---------------------------------------------------------------------------------- helpers


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` in-process: (exit code, stdout + stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def assert_clean(text: str) -> None:
    assert "Traceback" not in text and "Exception ignored" not in text, text


def one_line(text: str) -> str:
    """The error message, unwrapped (rich wraps long lines at the terminal width)."""
    return " ".join(text.split())


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (by relative path)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def jpeg(color: tuple[int, int, int] = (200, 10, 10), size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "JPEG")
    return buf.getvalue()


def bomb_jpeg(side: int = 60000) -> bytes:
    """A small valid JPEG whose SOF header claims ``side x side`` pixels (a decompression
    bomb: PIL refuses it when opening, before decoding anything)."""
    data = bytearray(jpeg())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, side, side)  # FFC0, length(2), precision(1), H, W
    return bytes(data)


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def lr(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny LRVS-F set, one good run of it (results + cache) and its digests."""
    tmp = tmp_path_factory.mktemp("bad-inputs-lr")
    root = tmp / "lr"
    write_lrvsf(root, n_products=20, n_distractors=40, files=2, seed=0)
    out, cache = tmp / "runs" / "good", tmp / "cache"
    assert main(lrvsf_args(root, out, cache)) == 0
    return {"tmp": tmp, "root": root, "out": out, "cache": cache}


@pytest.fixture(scope="session")
def cirr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cirr(tmp_path_factory.mktemp("bad-inputs-cirr") / "cirr", n_queries=8,
                      n_train=8, seed=0)


def lrvsf_args(root: Path, out: Path, cache: Path) -> list[str]:
    return ["eval", "lrvsf", "--model", TINY, "--data-root", str(root), "--n-dists", "10,30",
            "--ks", "1,5", "--folds", "seeded", "--workers", "0", "--out", str(out),
            "--cache-dir", str(cache)]


# ------------------------------------------------------------ usage errors on every command


def _leaf_commands() -> list[tuple[str, ...]]:
    import typer.main

    def walk(cmd: object, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        subs = getattr(cmd, "commands", None)
        if not subs:
            return [path]
        return [leaf for name, sub in sorted(subs.items()) for leaf in walk(sub, (*path, name))]

    return walk(typer.main.get_command(build_app()), ())


@pytest.mark.parametrize("command", _leaf_commands(), ids=" ".join)
def test_usage_error_on_every_command(capsys, command):
    code, text = run(capsys, [*command, "--no-such-option"])
    assert code == 2, text
    assert_clean(text)
    assert "No such option" in text and f"condsim {' '.join(command)}" in text


@pytest.mark.parametrize("argv, expect", [
    (["eval", "cirr", "--bogus"], "No such option: --bogus"),
    (["benchmark"], "No such command 'benchmark'"),
    (["eval", "nosuch"], "No such command 'nosuch'. Commands: any2any, circo, cirr"),
    (["eval", "cirrr"], "Did you mean 'cirr'"),
    (["evl", "cirr"], "Did you mean 'eval'"),
    (["models", "--devise", "cpu"], "Possible options: --device"),
    (["eval", "lrvsf", "--model", TINY, "--data-root", "x", "--workers", "many"],
     "Invalid value for '--num-workers' / '--workers'"),
], ids=["option", "command", "subcommand", "subcommand-typo", "command-typo", "option-typo",
        "bad-value"])
def test_usage_errors(capsys, argv, expect):
    code, text = run(capsys, argv)
    assert code == 2 and expect in one_line(text), text
    assert_clean(text)
    assert "Usage: condsim" in text


# ------------------------------------------------------------------ the one error boundary


def _raiser(exc: BaseException) -> Callable[..., object]:
    def boom(*_: object, **__: object) -> object:
        raise exc
    return boom


@pytest.mark.parametrize("exc, code, expect", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/x.parquet"), 1,
     "/data/x.parquet: permission denied"),
    (OSError(errno.ENOSPC, "No space left on device", "/out/results.json"), 1,
     "/out/results.json: no space left"),
    (OSError(errno.EFBIG, "File too large", "/out/big.npy"), 1, "/out/big.npy: file too large"),
    (FileNotFoundError(errno.ENOENT, "No such file", "/in/a.json"), 2,
     "/in/a.json: no such file"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/in/f/x"), 2,
     "/in/f/x: not a folder"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/in/d"), 2, "/in/d: is a folder"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 2, "not UTF-8"),
    (KeyboardInterrupt(), 130, "aborted"),
    (RuntimeError("kaput"), 1, "unexpected RuntimeError: kaput"),
], ids=["eacces", "enospc", "efbig", "enoent", "enotdir", "eisdir", "unicode", "ctrl-c",
        "bug"])
def test_known_failures_one_line(capsys, monkeypatch, exc, code, expect):
    monkeypatch.setattr("condsim.cli.cmd_models.list_models", _raiser(exc))
    got, text = run(capsys, ["models"])
    assert got == code, text
    assert expect in one_line(text)
    assert_clean(text)
    assert len(text.strip().splitlines()) <= 3  # one line (wrapped at most by the console)


def test_debug_flag_and_env_show_the_traceback(capsys, monkeypatch):
    monkeypatch.setattr("condsim.cli.cmd_models.list_models", _raiser(RuntimeError("kaput")))
    code, text = run(capsys, ["--debug", "models"])
    assert code == 1 and "Traceback" in text and "kaput" in text
    monkeypatch.setenv("CONDSIM_DEBUG", "1")
    code, text = run(capsys, ["models"])
    assert code == 1 and "Traceback" in text


# ------------------------------------------------------------ outputs checked before work


@pytest.fixture()
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "afile"
    path.write_text("not a folder")
    return path


OUT_CASES: dict[str, Callable[[Path], list[str]]] = {
    "train-combiner": lambda o: ["train", "combiner", "--cirr-root", "nowhere", "--out", o],
    "train-condvit": lambda o: ["train", "condvit", "--train-root", "nowhere", "--out", o],
    "suite": lambda o: ["eval", "suite", "--suite", "SUITE", "--model", TINY, "--out", o],
    "demo": lambda o: ["demo", "--out", o, "--size", "tiny"],
    "report": lambda o: ["report", "RUNS", "--out", f"{o}/report.html"],
    "encode": lambda o: ["encode", "--model", TINY, "--images", "IMAGES", "--out", f"{o}/e.npy"],
}


@pytest.mark.parametrize("where", ["is-a-file", "under-a-file"])
@pytest.mark.parametrize("case", sorted(OUT_CASES))
def test_out_must_be_a_writable_folder(capsys, monkeypatch, tmp_path, a_file, lr, case, where):
    def no_model(*_: object, **__: object) -> None:
        raise AssertionError("a model was loaded before --out was checked")

    monkeypatch.setattr("condsim.registry._create", no_model)  # a global: no stale copies
    suite = tmp_path / "s.yaml"
    suite.write_text("- benchmark: lrvsf\n  data_root: nowhere\n")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(jpeg())
    out = a_file if where == "is-a-file" else a_file / "sub"
    argv = [a.replace("SUITE", str(suite)).replace("RUNS", str(lr["out"]))
            .replace("IMAGES", str(tmp_path / "imgs")) for a in map(str, OUT_CASES[case](out))]
    code, text = run(capsys, argv)
    assert code == 2, text
    assert_clean(text)
    assert "--out" in text and str(a_file) in one_line(text) and "not a folder" in text
    assert a_file.read_text() == "not a folder"


def test_out_folder_not_writable(capsys, monkeypatch, tmp_path):
    import condsim.cli.common as common

    real = common.tempfile.mkstemp
    ro = tmp_path / "ro"
    ro.mkdir()

    def mkstemp(*args: object, dir: object = None, **kwargs: object) -> tuple[int, str]:
        if dir is not None and Path(str(dir)) == ro:
            raise PermissionError(errno.EACCES, "Permission denied", str(ro))
        return real(*args, dir=dir, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(common.tempfile, "mkstemp", mkstemp)
    code, text = run(capsys, ["train", "condvit", "--train-root", "x", "--out", ro])
    assert code == 2 and f"--out {ro}: folder is not writable" in one_line(text), text
    assert_clean(text)
    code, text = run(capsys, ["train", "condvit", "--train-root", "x", "--out", ro / "new"])
    assert code == 2 and f"parent folder {ro} is not writable" in one_line(text), text
    assert not (ro / "new").exists()


@pytest.mark.parametrize("device, expect", [
    ("tpu", "--device tpu: must be cpu, cuda, cuda:N or mps, got 'tpu'"),
    ("cuda", "--device cuda: 'cuda' requested but CUDA is not available"),
    ("cuda:7", "--device cuda:7"),
    ("mps", "--device mps"),
])
def test_device_checked(capsys, device, expect):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, text = run(capsys, ["models", TINY, "--device", device])
    if device == "mps" and code == 0:
        pytest.skip("this machine has MPS")
    assert code == 2 and expect in one_line(text), text
    assert_clean(text)


# ------------------------------------------------------------------------------- encode


def test_encode_inputs_checked(capsys, tmp_path, a_file):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.jpg").write_bytes(jpeg())
    base = ["encode", "--model", TINY, "--out", tmp_path / "e.npy"]
    cases = [
        ([*base, "--images", tmp_path / "missing"], f"--images {tmp_path / 'missing'}: no such"),
        ([*base, "--images", a_file], "is a file"),
        ([*base, "--images", tmp_path / "empty"], "no such folder"),
        ([*base, "--images", imgs, "--cache-dir", a_file], f"--cache-dir {a_file}: is a file"),
        (["encode", "--model", TINY, "--images", imgs, "--out", tmp_path],
         "is a folder; give the .npy file"),
        ([*base, "--parquet", tmp_path / "none.parquet"], "no such file"),
    ]
    for argv, expect in cases:
        code, text = run(capsys, argv)
        assert code == 2 and expect in one_line(text), (argv, text)
        assert_clean(text)
    assert not (tmp_path / "e.npy").exists()


def test_encode_bomb_and_corrupt_images_named(capsys, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.jpg").write_bytes(jpeg())
    (imgs / "bomb.jpg").write_bytes(bomb_jpeg())
    (imgs / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code, text = run(capsys, ["encode", "--model", TINY, "--images", imgs, "--out",
                              tmp_path / "e.npy", "--cache-dir", tmp_path / "c"])
    msg = one_line(text)
    assert code == 2 and "2 image(s) cannot be decoded" in msg, text
    assert str(imgs / "bomb.jpg") in msg and str(imgs / "corrupt.jpg") in msg
    assert "decompression bomb" in msg
    assert_clean(text)
    assert not (tmp_path / "e.npy").exists()


def test_bomb_decode_is_an_image_decode_error():
    from condsim.data.images import ImageDecodeError, decode_image

    with pytest.raises(ImageDecodeError, match="x.parquet row 3: refused as a decompression"):
        decode_image(bomb_jpeg(), "x.parquet row 3")
    with pytest.raises(ImageDecodeError, match="row 4: cannot decode"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "row 4")


# ------------------------------------------------------------------------------- LRVS-F


def test_lrvsf_bad_distractor_file_refused_before_encoding(capsys, lr):
    bad = lr["tmp"] / "lr-truncated"
    shutil.copytree(lr["root"], bad)
    first = sorted((bad / "distractors").glob("*.parquet"))[0]
    (bad / "distractors" / "zz-truncated.parquet").write_bytes(first.read_bytes()[:300])
    results, cache = tree_digest(lr["out"]), tree_digest(lr["cache"])
    code, text = run(capsys, lrvsf_args(bad, lr["out"], lr["cache"]))
    assert code == 2 and "zz-truncated.parquet: not a readable parquet file" in one_line(text)
    assert_clean(text)
    assert tree_digest(lr["out"]) == results and tree_digest(lr["cache"]) == cache


def test_lrvsf_bad_image_column_type_named(lr):
    from condsim.data.lrvsf import count_distractors
    from condsim.errors import DataError

    bad = lr["tmp"] / "lr-badcol"
    shutil.copytree(lr["root"], bad)
    pq.write_table(pa.table({"jpg": ["not bytes"]}), bad / "distractors" / "zz.parquet")
    with pytest.raises(DataError, match=r"zz\.parquet: column 'jpg' has type string"):
        count_distractors(bad)


def test_lrvsf_bomb_and_corrupt_distractors_counted(capsys, lr):
    root = lr["tmp"] / "lr-bomb"
    shutil.copytree(lr["root"], root)
    first = sorted((root / "distractors").glob("*.parquet"))[0]
    table = pq.read_table(first).slice(0, 3)
    images = pa.array([bomb_jpeg(), b"\xff\xd8 corrupt", jpeg()], table.schema.field("jpg").type)
    pq.write_table(table.set_column(table.schema.get_field_index("jpg"), "jpg", images),
                   root / "distractors" / "zz-bad.parquet")
    out = lr["tmp"] / "runs" / "bomb"
    code, text = run(capsys, lrvsf_args(root, out, lr["tmp"] / "cache-bomb"))
    assert code == 0, text
    assert_clean(text)
    skipped = json.loads((out / "results.json").read_text())["skipped"]
    assert skipped["corrupt_distractors"] == 2
    assert any("decompression bomb" in e for e in skipped["examples"])


# --------------------------------------------------------------------- annotation JSON


@pytest.mark.parametrize("damage, expect", [
    (lambda p: p.write_bytes(p.read_bytes()[:5] + b"\xe9t\xe9" + p.read_bytes()[5:]),
     "not UTF-8 text (byte offset 5"),
    (lambda p: (p.unlink(), p.mkdir()), "is a folder"),
    (lambda p: p.write_text('[\n  {"pairid": 1,\n   "reference": }\n]'),
     "malformed JSON at line 3 column 17"),
    (lambda p: p.write_bytes(p.read_bytes()[:40]), "malformed JSON at line 1"),
], ids=["latin-1", "folder", "malformed", "truncated"])
def test_annotation_json_errors(capsys, tmp_path, cirr, damage, expect):
    root = tmp_path / "cirr"
    shutil.copytree(cirr, root)
    ann = root / "captions" / "cap.rc2.val.json"
    damage(ann)
    code, text = run(capsys, ["eval", "cirr", "--model", TINY, "--root", root, "--workers", "0",
                              "--out", tmp_path / "out", "--cache-dir", tmp_path / "c"])
    msg = one_line(text)
    assert code == 2 and str(ann) in msg and expect in msg, text
    assert_clean(text)
    assert not (tmp_path / "out" / "results.json").exists()


# ------------------------------------------------------------------------- results.json


@pytest.mark.parametrize("damage, expect", [
    (lambda d: d.pop("metrics") and json.dumps(d), "not a complete results file: no metrics"),
    (lambda d: json.dumps([d]), "expected a JSON object"),
    (lambda d: b"\xff" + json.dumps(d).encode(), "not UTF-8 text (byte offset 0"),
    (lambda d: json.dumps(d, indent=2)[:200], "not valid JSON (line"),
    (lambda d: json.dumps({**d, "metrics": [1]}), "metrics is a list"),
], ids=["no-metrics", "a-list", "0xff", "truncated", "metrics-list"])
def test_bad_results_file(capsys, tmp_path, lr, damage, expect):
    run_dir = tmp_path / "broken"
    run_dir.mkdir()
    data = damage(json.loads((lr["out"] / "results.json").read_text()))
    (run_dir / "results.json").write_bytes(data if isinstance(data, bytes) else data.encode())
    for argv in (["compare", lr["out"], run_dir], ["leaderboard", run_dir],
                 ["report", run_dir, "--out", tmp_path / "rep" / "r.html"]):
        code, text = run(capsys, argv)
        msg = one_line(text)
        assert code == 2 and str(run_dir / "results.json") in msg and expect in msg, text
        assert_clean(text)
    assert not (tmp_path / "rep").exists() or not any((tmp_path / "rep").iterdir())


def test_failing_report_writes_nothing(capsys, tmp_path, lr):
    other = tmp_path / "other"
    other.mkdir()
    data = json.loads((lr["out"] / "results.json").read_text())
    data["protocol"]["conditioning"] = "text"  # its own section, after the good run's
    del data["metrics"]["recall"][next(iter(data["metrics"]["recall"]))]["1"]
    (other / "results.json").write_text(json.dumps(data))
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, text = run(capsys, ["report", lr["out"], other, "--out", out / "report.html"])
    assert code == 2 and "lack the metrics" in one_line(text), text
    assert_clean(text)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # no PNG, no temp file
    code, text = run(capsys, ["report", lr["out"], "--out", out / "report.html"])
    assert code == 0 and (out / "report.html").is_file() and (out / "keep.txt").is_file()
    assert not list(out.glob(".*.tmp"))


def test_report_out_is_an_html_file(capsys, tmp_path, lr):
    code, text = run(capsys, ["report", lr["out"], "--out", tmp_path])
    assert code == 2 and "is a folder; give the HTML file" in one_line(text)
    assert_clean(text)


# -------------------------------------------------------------------------------- parse


def test_parse_skips_bad_lines_and_stats_do_not_break_parquet_readers(capsys, tmp_path):
    from condsim.training.captions import read_captions

    tsv = tmp_path / "caps.tsv"
    tsv.write_bytes(b"a dog on a bed\thttp://x/1.jpg\n"
                    b"caf\xe9 au lait on a table\thttp://x/2.jpg\n"   # latin-1
                    b"latin \xe9 and one field\n"                      # latin-1, 1 field
                    b"\x00\x01\x02 garbage\thttp://x/3.jpg\n"          # control characters
                    b"a cat under a tree\thttp://x/4.jpg\n")
    table = read_captions(tsv)
    assert table.num_rows == 2 and table.malformed_rows == 3
    assert table.skipped_lines == {"wrong_field_count": {"count": 1, "lines": [3]},
                                   "invalid_utf8": {"count": 1, "lines": [2]},
                                   "control_characters": {"count": 1, "lines": [4]}}
    pytest.importorskip("spacy")
    pytest.importorskip("sng_parser")
    from condsim.training.scenegraph import resolve_spacy_model

    try:
        resolve_spacy_model(None)
    except Exception:  # noqa: BLE001 - no spaCy English model here
        pytest.skip("no spaCy English model")
    out = tmp_path / "graphs"
    code, text = run(capsys, ["parse", "--captions", tsv, "--out", out])
    assert code == 0, text
    assert_clean(text)
    assert "\\xe9" not in text and "caf\ufffd" not in text  # no raw-bytes echo
    assert "lines 2" in one_line(text)
    stats = json.loads((out / "_graphs-00000-of-00001.json").read_text())
    assert stats["captions_file_skipped_lines"]["invalid_utf8"]["lines"] == [2]
    assert stats["counts"]["captions"] == 2
    assert pds.dataset(out).count_rows() == pq.read_table(
        out / "graphs-00000-of-00001.parquet").num_rows
    import pandas as pd

    assert len(pd.read_parquet(out)) == pds.dataset(out).count_rows()
    code, text = run(capsys, ["parse", "--captions", tsv, "--out", out])  # resumes: done
    assert code == 0 and "already done" in one_line(text)


def test_all_cli_usage_errors_are_typer_exceptions():
    """typer vendors click: its usage errors are not ``click.ClickException``s, which is why
    ``main`` checks ``typer.TyperException``."""
    from typer._click.exceptions import NoSuchOption

    assert issubclass(NoSuchOption, typer.TyperException)


# ------------------------------------------------------------------- training options


@pytest.mark.parametrize("extra, expect", [
    (["--batch-size", "0"], "batch_size (--batch-size) must be an integer >= 1, got 0"),
    (["--grad-accum", "0"], "grad_accum (--grad-accum) must be an integer >= 1, got 0"),
    (["--grad-accum", "3"], "batch size 256 must be divisible by the gradient accumulation"),
    (["--epochs", "-1"], "epochs (--epochs) must be an integer >= 1, got -1"),
    (["--lr", "-1"], "lr (--lr) must be a finite number > 0"),
    (["--logit-scale", "nan"], "logit_scale (--logit-scale) must be a finite number > 0"),
    (["--schedule", "linear"], "schedule (--schedule) must be constant or cosine"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1), got 1.5"),
    (["--projection-dim", "0"], "--projection-dim must be an integer >= 1"),
    (["--val", "coco:/x"], "--val must be cirr:<CIRR root> or genecis:<root>"),
    (["--val", "cirr:/no/such/dir"], "--val cirr:/no/such/dir: /no/such/dir is not a folder"),
    (["--backbone", "test/nope"], "Unknown model 'test/nope'"),
    (["--triplets", "/no/such/t", "--images", "/no/such/i"], "not both"),
])
def test_train_combiner_options_checked_before_anything(capsys, tmp_path, cirr, extra, expect):
    """A bad training option is one line, exit 2, before data or models load and before a
    job is submitted (the --submit local:2 here never starts); --out is not created."""
    out = tmp_path / "out"
    code, text = run(capsys, ["train", "combiner", "--cirr-root", cirr, "--out", out,
                              "--submit", "local:2", *extra])
    assert code == 2 and expect in one_line(text), text
    assert_clean(text)
    assert not out.exists()


@pytest.mark.parametrize("extra, expect", [
    (["--train-root", "/no/such/dir"], "--train-root /no/such/dir is not a folder"),
    (["--conditioning", "colour"], "--conditioning must be category or text"),
    (["--val-root", "/no/such/val"], "--val-root /no/such/val is not a folder"),
    (["--val-k", "0"], "--val-k must be an integer >= 1, got 0"),
    (["--val-dists", "-5"], "--val-dists must be an integer >= 0, got -5"),
    (["--batch-size", "-3"], "batch_size (--batch-size) must be an integer >= 1, got -3"),
    (["--init", "test/nope"], "Unknown model 'test/nope'"),
])
def test_train_condvit_options_checked_before_anything(capsys, tmp_path, lr, extra, expect):
    out = tmp_path / "out"
    code, text = run(capsys, ["train", "condvit", "--train-root", lr["root"], "--out", out,
                              "--submit", "local:2", *extra])
    assert code == 2 and expect in one_line(text), text
    assert_clean(text)
    assert not out.exists()


def test_train_config_checked_in_the_library():
    """TrainConfig itself refuses bad values (the Python API gets the CLI's checks)."""
    from condsim.errors import ConfigError
    from condsim.training.trainer import TrainConfig

    TrainConfig(out_dir="x", batch_size=8, grad_accum=2)  # fine
    for bad in ({"batch_size": 0}, {"epochs": 1.5}, {"lr": float("inf")}, {"amp": "fp8"},
                {"weight_decay": -0.1}, {"warmup_steps": -1}, {"batch_size": True}):
        with pytest.raises(ConfigError):
            TrainConfig(out_dir="x", **bad)


@pytest.mark.parametrize("command", ["info", "verify", "prune"])
def test_cache_commands_refuse_a_missing_cache_dir(capsys, tmp_path, command):
    """A typo'd --cache-dir is an error (exit 2), not an empty cache reported as fine; nothing
    is created."""
    missing = tmp_path / "no-such-cache"
    code, text = run(capsys, ["cache", command, "--cache-dir", missing])
    assert code == 2 and f"--cache-dir {missing}: no such folder" in one_line(text), text
    assert_clean(text)
    assert not missing.exists()


@pytest.mark.parametrize("content, expect", [
    (b"root:x:0:0:root:/root:/bin/bash\n", "expected a .npy array or a torch.save'd tensor"),
    (None, "no such file"),
])
def test_lrvsf_folds_file_checked_with_the_config(capsys, tmp_path, lr, content, expect):
    """--folds PATH is read when the config is checked: a missing or unreadable file is one
    line before any model loads or --out exists."""
    folds = tmp_path / "folds.pt"
    if content is not None:
        folds.write_bytes(content)
    out = tmp_path / "out"
    code, text = run(capsys, ["eval", "lrvsf", "--model", TINY, "--data-root", lr["root"],
                              "--folds", folds, "--out", out])
    assert code == 2 and expect in one_line(text) and "folds" in text, text
    assert_clean(text)
    assert not out.exists()
