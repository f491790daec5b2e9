"""DDP: two CPU processes (gloo) train on synthetic data and end with identical weights."""
from __future__ import annotations

import os

import pytest
import torch

from conftest import free_port

TINY = "litefer_test_ddp_tiny"


def _worker(rank: int, world: int, port: int, out: str, micro_batch: int = 0) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from fixtures.models import ensure_registered
    ensure_registered(TINY)     # this spawned process exits after the run: nothing to clean up
    from litefer.training import config_from_dict, train
    cfg = config_from_dict({
        "data": {"dataset": "synthetic", "num_classes": 4, "val_split": "val", "test_split": "test",
                 "options": {"n_train": 128, "n_val": 33, "n_test": 31, "size": 24}},
        "model": {"arch": TINY, "kwargs": {"drop_rate": 0.2}},
        "optim": {"name": "sgd", "lr": 0.05},
        "loss": {"center": {"weight": 0.01}, "cosine_harmony": {"weight": 0.1}},
        "train": {"epochs": 2, "batch_size": 16, "progress": False, "micro_batch": micro_batch},
        "aug": {"rotation": 10, "erasing": 0.3}}, name="ddp")
    res = train(cfg, out_dir=out, quiet=rank != 0)
    assert torch.distributed.is_available() and not torch.distributed.is_initialized()   # torn down
    torch.save({"state": res.model.state_dict(), "history": res.history, "test": res.test_metrics,
                "best": str(res.best_checkpoint)}, os.path.join(out, f"rank{rank}.pt"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("micro_batch", [0, 6], ids=["whole-batches", "batches-in-slices"])
def test_two_process_gloo_training_keeps_ranks_identical(tmp_path, micro_batch):
    """Also with ``train.micro_batch`` (the gradient all-reduced once, after the last slice)."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed not available")
    import torch.multiprocessing as mp
    mp.start_processes(_worker, args=(2, free_port(), str(tmp_path), micro_batch), nprocs=2, start_method="spawn")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k      # parameters and BN statistics
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in h]  # noqa: E731
    assert strip(r0["history"]) == strip(r1["history"])             # metrics summed over ranks agree
    assert r0["test"]["n"] == 31                                    # uneven shards (16 + 15) summed
    assert r0["test"] == r1["test"]
    assert max(h["val_acc"] for h in r0["history"]) > 0.4           # chance 0.25
    # only rank 0 writes; the checkpoint holds the same weights
    from litefer.models.checkpoint import read_checkpoint
    _, state, _ = read_checkpoint(tmp_path / "best.pt")
    assert all(torch.equal(state[k], r0["state"][k]) for k in state)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["training_state"]["world_size"] == 2 and len(last["training_state"]["rng_per_rank"]) == 2
    assert last["training_state"]["step_options"]["micro_batch"] == micro_batch
