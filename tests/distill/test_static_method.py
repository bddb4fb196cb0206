"""``python -m raydd.distill`` with DC: stage 1 learned by ``--static-method dc`` under another base method,
DC as the base method of the naive paradigm, and stage 1's preset taken from its own method's row."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from raydd.distill.__main__ import main
from raydd.distill.artifact import read_static
from raydd.distill.presets import table_preset
from raydd.distill.settings import DistillConfig
from raydd.distill.stage_presets import resolve_presets
from raydd.distilled_set import load_distilled
from raydd.errors import RayddError
from raydd.storage import read_manifest, resolve
from tests.conftest import store_holding

pytestmark = pytest.mark.usefixtures("ray_cluster", "mlflow_in_each_store")
TINY = ["--iterations", "2", "--checkpoint-every", "2", "--network-width", "8", "--batch-real", "4", "--eval-runs", "0"]


@pytest.fixture
def store(tiny_datasets: Path, tmp_path: Path) -> str:
    return store_holding(tiny_datasets, tmp_path / "store")


def _run(store: str) -> object:
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("raydd-distill").experiment_id])
    return run


@pytest.mark.slow
def test_stage_one_learned_by_dc_under_dm_runs_end_to_end(store: str) -> None:
    assert main(["--store", store, "--method", "dm", "--static-method", "dc", *TINY]) == 0
    (static,) = (Path(store) / "distill" / "static" / "builtin").iterdir()
    assert static.name.startswith("dc-spc2-")
    images, metadata = read_static(str(static), num_classes=10, image_shape=(3, 16, 16))
    assert metadata["method"] == "dc"
    assert metadata["preset"]["lr_static"] == table_preset("dc", "static-dynamic", "builtin", 1).lr_static
    assert images.shape == (20, 3, 16, 16) and images.isfinite().all()
    runs = {path.name for path in (Path(store) / "distill" / "runs").iterdir()}
    assert any("-dc-static-" in name for name in runs) and any("-dm-dynamic-" in name for name in runs)
    (output,) = (Path(store) / "distilled" / "builtin").iterdir()
    assert read_manifest(resolve(str(output))).metadata["static_uri"].endswith(static.name)
    params = _run(store).data.params
    assert params["static_method"] == "dc" and params["stage1.method"] == "dc"
    assert params["preset.lr_static"] == str(table_preset("dm", "static-dynamic", "builtin", 1).lr_static)  # DM's row


@pytest.mark.slow
def test_dc_as_the_base_method_of_naive_distillation_runs(store: str) -> None:
    assert main(["--store", store, "--method", "dc", "--paradigm", "naive", *TINY]) == 0
    (output,) = (Path(store) / "distilled" / "builtin").iterdir()
    distilled = load_distilled(str(output))
    assert distilled.videos_NCTHW.shape == (10, 3, 4, 16, 16) and distilled.videos_NCTHW.isfinite().all()
    assert _run(store).data.tags["raydd.method"] == "dc-naive"


def test_stage_one_runs_the_base_method_unless_told_otherwise() -> None:
    # The evidence (benchmarks/stills.py on builtin) favours DM's stills over DC's: the default is the base method.
    assert resolve_presets(DistillConfig(method="dm")).stage1_method == "dm"
    assert resolve_presets(DistillConfig(method="mtt", dataset="miniucf")).stage1_method == "mtt"
    assert resolve_presets(DistillConfig(method="dm", static_method="frepo")).stage1_method == "frepo"
    assert resolve_presets(DistillConfig(method="dm")).stage1 == resolve_presets(DistillConfig(method="dm")).run


def test_stage_one_takes_its_fields_from_its_own_methods_row() -> None:
    own = DistillConfig(method="mtt", static_method="mtt")
    assert (
        resolve_presets(own).stage1 == resolve_presets(own).run == table_preset("mtt", "static-dynamic", "builtin", 1)
    )
    config = DistillConfig(method="frepo", static_method="dc")
    frepo = table_preset("frepo", "static-dynamic", "builtin", 1)
    dc = table_preset("dc", "static-dynamic", "builtin", 1)
    stage1 = resolve_presets(config).stage1
    assert (stage1.lr_static, stage1.momentum, stage1.batch_real) == (dc.lr_static, dc.momentum, dc.batch_real)
    assert stage1.iterations == frepo.iterations and resolve_presets(config).run == frepo  # stage 2 keeps FRePo's
    flagged = resolve_presets(DistillConfig(method="frepo", static_method="dc", lr_static=0.5, momentum=0.1)).stage1
    assert (flagged.lr_static, flagged.momentum) == (0.5, 0.1)
    # DC has no row for a paper dataset: stage 1 then needs its lr, and the error names every way out.
    expected = "no preset for stage 1 with --static-method dc on miniucf at IPC 1: pass --lr-static LR, --static-method"
    with pytest.raises(RayddError, match=expected):
        resolve_presets(DistillConfig(dataset="miniucf", method="dm", static_method="dc"))
    given = DistillConfig(dataset="miniucf", method="dm", static_method="dc", lr_static=0.1)
    assert resolve_presets(given).stage1.lr_static == 0.1
    # Reusing stage 1's images (--static) needs no stage-1 lr at all.
    resolve_presets(DistillConfig(dataset="miniucf", method="dm", static_method="dc", static="somewhere"))
