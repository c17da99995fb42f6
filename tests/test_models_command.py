"""``lightsr models``: a compact view that fits a 100-column terminal, the full Markdown tables (``--wide``) and
JSON (``--json``), all showing the same records: the registry's networks, the bundled files' own metadata and the
published weights' entries."""

from __future__ import annotations

import json

import pytest

from conftest import chain_totals
from lightsr.bundled import DEFAULT_MODEL, bundled_metadata, bundled_names, bundled_weights, default_upscale_model
from lightsr.cli import main
from lightsr.hub import published

FILES = sorted((name, scale, path) for name in bundled_names() for scale, path in bundled_weights(name).items())
# The papers' trainable-parameter counts (ELAN Table 2, HASN Table 3, LKSMN Table 4 at ×4; ×2/×3 from the same
# configurations), typed from the papers and the docs' model table, not computed by lightsr.
PAPER_PARAMS = {
    "elan_light": (582_012, 590_127, 601_488),
    "elan": (8_254_092, 8_278_407, 8_312_448),
    "hasn": (418_388, 425_423, 435_272),
    "lksmn": (238_596, 245_091, 254_184),
}


def _width(text: str) -> int:
    return max(len(line) for line in text.splitlines())


@pytest.mark.parametrize("columns", [None, "300", "100"])
def test_default_view_fits_100_columns(capsys, monkeypatch, tmp_path, columns) -> None:
    """However wide the terminal, and with a cache path longer than a line, no line passes 100 columns."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setenv("LIGHTSR_HOME", str(tmp_path / ("a-very-long-cache-folder-name" * 5)))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert _width(out) <= 100, [line for line in out.splitlines() if len(line) > 100]
    lines = out.splitlines()
    for name in PAPER_PARAMS:
        row = next(line for line in lines if line.split()[:1] == [name])
        assert f"{PAPER_PARAMS[name][2]:,}" in row
        assert row.split()[1] == "*" if name == DEFAULT_MODEL else "*" not in row
    for name, scale, path in FILES:
        meta = bundled_metadata(path)
        row = next(line for line in lines if line.startswith(f"{name}_x{scale} "))
        psnr = json.loads(meta["psnr_ssim"])
        assert [f"{psnr[k][0]:.2f}" for k in ("Set5", "Set14", "B100")] == row.split()[-3:], row
        assert f"{chain_totals(meta)[0]:,}" in row.split(), row
        # The row's cells may wrap onto continuation lines (blank first column).
        i = lines.index(row) + 1
        cell = [row]
        while i < len(lines) and lines[i].startswith(" "):
            cell.append(lines[i])
            i += 1
        words = " ".join(" ".join(cell).split())
        assert ("upscale's" in words) == (name == default_upscale_model(scale)), words
    for name, (_spec, entry) in published().items():
        row = next(line for line in lines if line.startswith(name + " "))
        assert [f"{p:.2f}" for _s, p, _q in entry.scores] == row.split()[-4:-1], row
        assert row.split()[-1] == "no"


def test_default_view_follows_a_narrower_terminal(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert _width(out) <= 80
    assert all(f"{name}_x{scale}" in out for name, scale, _ in FILES)


def test_json_view_holds_every_record(capsys) -> None:
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["default_network"] == DEFAULT_MODEL
    nets = {n["name"]: n for n in data["networks"]}
    assert set(nets) == set(PAPER_PARAMS)
    for name, counts in PAPER_PARAMS.items():
        assert tuple(nets[name]["params"].values()) == counts
        assert nets[name]["bundled_scales"] == sorted(bundled_weights(name))
    assert [b["file"] for b in data["bundled"]] == [p.name for _, _, p in
                                                    sorted(FILES, key=lambda t: (t[0], t[1]))]
    for b, (name, scale, path) in zip(data["bundled"], sorted(FILES, key=lambda t: (t[0], t[1])), strict=True):
        meta = bundled_metadata(path)
        assert b["psnr_ssim"] == json.loads(meta["psnr_ssim"])
        its, hours = chain_totals(meta)
        assert b["iterations"] == its and b["train_hours"] == pytest.approx(hours, abs=1e-9)
        assert b["runs"][-1]["run"] == meta["run"] and meta["hardware"] in b["hardware"]
        assert b["runs"][-1]["iterations"] == int(meta["iterations"])
        assert b["network"] == meta.get("arch", name) and b["scale"] == scale
        assert b["upscale_default"] == (name == default_upscale_model(scale))
    pub = {p["name"]: p for p in data["published"]}
    assert set(pub) == set(published())
    for name, (spec, entry) in published().items():
        assert pub[name]["sha256"] == entry.sha256 and pub[name]["network"] == spec.name
        assert pub[name]["psnr_ssim"] == {s: [p, q] for s, p, q in entry.scores}


def test_wide_and_json_exclude_each_other(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["models", "--wide", "--json"])
    assert e.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_a_file_trained_in_stages_counts_every_run() -> None:
    """``training_runs`` reads the nested ``previous`` records first to last; a field that does not decode is
    left out, and ``lightsr models`` then shows no total rather than a wrong one."""
    from lightsr.bundled import training_runs
    from lightsr.commands.models import _total

    first = {"run": "a", "iterations": 100, "train_hours": 0.5, "hardware": "cpu A"}
    second = {"run": "b", "iterations": 200, "train_hours": 1.25, "hardware": "cpu B", "previous": first}
    meta = {"run": "c", "iterations": "300", "train_hours": "2.0", "hardware": "cpu B",
            "teacher": '{"teacher": "t", "sha256": "00"}', "previous": json.dumps(second)}
    runs = training_runs(meta)
    assert [r["run"] for r in runs] == ["a", "b", "c"]
    assert [r["iterations"] for r in runs] == [100, 200, 300] and runs[-1]["teacher"]["teacher"] == "t"
    assert all("previous" not in r for r in runs)
    assert _total(r["iterations"] for r in runs) == 600 and _total(r["train_hours"] for r in runs) == 3.75
    broken = training_runs({**meta, "iterations": "many", "teacher": "{not json"})
    assert "iterations" not in broken[-1] and "teacher" not in broken[-1]
    assert _total(r.get("iterations") for r in broken) is None
    # Nested records go through the same decoding as the file's own strings.
    odd = {**second, "iterations": "200", "train_hours": 1.25, "previous": {**first, "iterations": 100.0}}
    runs = training_runs({**meta, "previous": json.dumps(odd)})
    assert [r["iterations"] for r in runs] == [100, 200, 300] and all(type(r["iterations"]) is int for r in runs)
    bad = {**second, "train_hours": "nan", "degradation": "5", "previous": {**first, "iterations": 1.5}}
    runs = training_runs({**meta, "previous": json.dumps(bad)})
    assert "train_hours" not in runs[1] and "degradation" not in runs[1] and "iterations" not in runs[0]
    assert _total(r.get("train_hours") for r in runs) is None
    assert training_runs({}) == [] and training_runs({"iterations": "5"}) == []
