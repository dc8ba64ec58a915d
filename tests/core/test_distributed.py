"""Data-parallel training under torchrun: two CPU processes (gloo) stay in lockstep."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_semiseg.core.engine.checkpoint import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_two_ranks_train_identical_weights_and_stop_together(tmp_path):
    """Rank 1 alone is stopped after 3 steps: the ranks agree to stop at the same iteration, with
    the same weights (DDP averages the gradients); only rank 0 writes the model."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(WORKER), str(tmp_path), "cross_teaching", "3"]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["iteration"] for r in ranks] == [3, 3]
    assert [r["reason"] for r in ranks] == ["stopped", "stopped"]
    for name, state in ranks[0]["states"].items():
        other = ranks[1]["states"][name]
        for key, value in state.items():
            assert torch.equal(value, other[key]), f"{name}.{key} differs between ranks"
    model = load_checkpoint(tmp_path / "model.pt")
    assert model["iteration"] == ranks[0]["iteration"]
    saved = {m["name"]: m["state_dict"] for m in model["members"]}
    assert all(torch.equal(saved["cnn"][k], v) for k, v in ranks[0]["states"]["cnn"].items())
    assert not (tmp_path / "training_log.jsonl").exists()
