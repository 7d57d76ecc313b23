"""Every benchmark at a tiny size, so none of them rots. Nothing here is timed or compared against a time."""
from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from bench import evaluation, ivf, loader, loss_step, projection, retrieval, run_all, scale, serving, training
from bench.report import Section


def cells(section: Section, column: str) -> list[str]:
    i = section.columns.index(column)
    return [row[i] for row in section.rows]


def test_evaluation_agrees_with_pml_and_skips_pml_past_its_limit() -> None:
    (section,) = evaluation.run(sizes=(300, 600), dim=8, class_size=10, repeat=2, repeat_above=400, pml_up_to=300)
    assert cells(section, "N") == ["300", "600"]
    assert cells(section, "ratio")[0].endswith("×") and cells(section, "PML")[1] == "not run"
    # Same arrays, same definitions: the MAP@R both report must be equal, else the ratio compares different work.
    assert cells(section, "MAP@R dmlscope")[0] == cells(section, "MAP@R PML")[0]
    assert any("timed once" in note for note in section.notes)


def test_loss_step_covers_every_loss_distance_and_regularizer() -> None:
    from models.distances import list_distances
    from models.losses import list_losses
    from models.regularizers import list_regularizers

    by_distance, by_regularizer = loss_step.run(batch=16, dim=4, classes=4, repeat=1)
    assert cells(by_distance, "loss") == ["(distance matrix only)", *list_losses()]
    assert by_distance.columns[2:] == list_distances()
    assert all(cell.endswith("×") for row in by_distance.rows for cell in row[2:])
    assert {name for _, name, _, _ in loss_step.REGULARIZER_ROWS if name} == set(list_regularizers())
    assert len(by_regularizer.rows) == len(loss_step.REGULARIZER_ROWS) + 1


def test_training_runs_the_trainer_and_the_bare_loop() -> None:
    (section,) = training.run(dataset="synthetic", dataset_params={"num_classes": 4, "per_class": 8, "size": 8},
                              steps_per_epoch=2, repeat=1, classes_per_batch=2, samples_per_class=4)
    (row,) = section.rows
    assert row[1] == "2 × 8" and row[-1].endswith("×")


def test_loader_times_the_bare_loop_and_the_dataloader() -> None:
    (section,) = loader.run(images=24, classes=3, classes_per_batch=2, samples_per_class=4, workers=0, repeat=1)
    assert len(section.rows) == 3 and cells(section, "vs bare loop")[0] == "1.00×"
    assert all(cell.endswith("×") for cell in cells(section, "vs bare loop"))
    assert cells(section, "images") == ["24"] * 3  # 3 batches of 2 × 4: every image the same number of times
    assert all(p.endswith("(stored JPEG)") for p in cells(section, "pipeline")[1:])  # imported as a benchmark


def test_retrieval_flat_is_exact_and_approximate_indexes_are_close() -> None:
    (section,) = retrieval.run(sizes=(2_000,), dim=8, queries=10)
    assert [row[1] for row in section.rows] == ["flat (exact)", "IVF-flat (ours)", "HNSW-flat (faiss)"]
    recalls = [float(r) for r in cells(section, "recall@10")]
    assert recalls[0] == 1.0 and min(recalls[1:]) >= 0.8
    assert any("Threshold" in note for note in section.notes)


def test_ivf_bench_measures_fresh_queries_against_flat_for_both_metrics() -> None:
    (section,) = ivf.run(n=3_000, dim=16, queries=40, spreads=(1.0,))
    assert cells(section, "distance") == ["euclidean"] * 2 + ["cosine"] * 2
    assert cells(section, "index") == ["flat (exact)", "IVF-flat (ours)"] * 2
    recalls = [float(r) for r in cells(section, "recall@10")]
    assert recalls[::2] == [1.0, 1.0] and min(recalls[1::2]) >= 0.9  # tight classes: the tuned IVF is close
    assert all(cell.startswith("nlist") for cell in cells(section, "setting")[1::2])
    assert any(note.startswith("Load average") for note in section.notes)


def test_serving_downloads_both_formats_over_loopback() -> None:
    (section,) = serving.run(sizes=(300,), repeat=1)
    assert [row[1] for row in section.rows] == ["JSON", "binary", "binary ÷ JSON"]
    assert float(cells(section, "bytes")[2].rstrip("×")) < 1.0  # 4 bytes a cell beat its decimal text


@pytest.mark.slow
@pytest.mark.umap
def test_projection_maps_keep_classes() -> None:
    (section,) = projection.run(sizes=(200,), dim=128, class_size=20)  # classes apart in 128-d (vote 1.0)
    maps = cells(section, "map")
    assert maps[0] == "PCA (first picture)" and maps[1].startswith("UMAP (fit, fresh")
    assert all(m.startswith("UMAP of a retrained run (fit, from the parent's map") for m in maps[2:]) and len(maps) == 4
    ours, peer = cells(section, "10-NN vote dmlscope")[1:], cells(section, "10-NN vote umap-learn")[1:]
    assert min(float(v) for v in ours) > 0.8
    assert cells(section, "Δ vote")[1:] == [f"{float(a) - float(b):+.4f}" for a, b in zip(ours, peer)]


def test_spread_quotes_each_ratio_over_runs() -> None:
    def table(ratio_a: str, ratio_b: str) -> Section:
        section = Section("Evaluation: vs PML", ["N", "time", "ratio"])
        section.add("10k", "1 s", ratio_a)
        section.add("100k", "9 s", ratio_b)
        return section

    (spread,) = [run_all.spread([[table("0.80×", "0.50×")], [table("0.90×", "0.40×")], [table("0.70×", "0.45×")]])]
    assert spread.rows == [["Evaluation", "10k", "ratio", "0.80×", "0.70–0.90×"],
                           ["Evaluation", "100k", "ratio", "0.45×", "0.40–0.50×"]]
    twice = Section("Retrieval", ["N", "index", "ratio"])
    twice.add("100k", "flat", "1.00×")
    twice.add("100k", "IVF", "0.25×")
    assert [row[1] for row in run_all.spread([[twice]]).rows] == ["100k · flat", "100k · IVF"]  # rows stay apart


def test_scale_set_has_sops_shape() -> None:
    """SOP's 22 634 classes of 2–12 images hold 120 053 images, most classes small: a uniform draw gave 158k."""
    import numpy as np

    sizes = scale.class_sizes(22_634, np.random.default_rng(0))
    assert sizes.sum() == 120_053 and sizes.min() == 2 and sizes.max() == 12
    assert np.median(sizes) < sizes.mean() < 6  # skewed to small classes


@pytest.mark.slow
@pytest.mark.umap
def test_scale_runs_every_stage_on_a_tiny_sop_shaped_set() -> None:
    """Generate, import, one epoch, measure, UMAP and /points on 12 + 12 classes (chromium: the browser tests)."""
    (section,) = scale.run(train_classes=12, test_classes=12, browser=False)
    assert cells(section, "stage") == [name for name in scale.BUDGET_S if "chromium" not in name]
    assert "MiB on the wire" in cells(section, "what")[-1]
    assert all(cell.endswith("GiB") or cell == "—" for cell in cells(section, "peak RSS"))


@pytest.mark.slow
@pytest.mark.browser
def test_browser_map_opens_the_run_page_and_hovers(tmp_path: Path) -> None:
    """In a process of its own: the browser tests' chromium session may still be open in this one, and
    Playwright's sync API cannot start inside another's event loop."""
    pytest.importorskip("playwright.sync_api")
    out = tmp_path / "sections.pickle"
    code = ("import pickle, sys; from bench import browser_map; "
            "open(sys.argv[1], 'wb').write(pickle.dumps(browser_map.run(sizes=(3_000,))))")
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (section,) = pickle.loads(out.read_bytes())
    assert cells(section, "points drawn") == ["3k"]
    assert cells(section, "/points on the wire")[0].endswith("KiB")
    assert all(cells(section, key)[0].endswith("s") for key in ("map ready", "hover (median)"))


@pytest.mark.parametrize("name", run_all.BENCHMARKS)
def test_full_sizes_are_parameters_of_run(name: str) -> None:
    """--full is never run in tests: at least its sizes must still be names `run` accepts."""
    module = __import__(f"bench.{name}", fromlist=["run"])
    assert set(module.FULL) <= set(inspect.signature(module.run).parameters)


def test_document_names_the_machine_and_every_table() -> None:
    sections = [Section("A table", ["x"], [["1"]]), Section("Another", ["y"], [["2"]], ["a note"])]
    text = run_all.document(sections, full=False, seconds=3.0)
    assert text.startswith("# Benchmarks") and "cores" in text and "`make bench`" in text
    assert "`python -m bench.run_all --repeat 3`" in run_all.document(sections, full=False, seconds=3.0, repeat=3)
    assert "## A table" in text and "## Another" in text and "- a note" in text
    scale_table = run_all.KEPT + "\n\n## Scale\n\n| stage |\n|---|\n| import |\n"
    again = run_all.document(sections, full=False, seconds=4.0, kept=run_all.kept_part(text + "\n" + scale_table))
    assert again.endswith(scale_table) and "## A table" in again  # make bench keeps a table run on its own
