"""`ipce predict --engine ray` on a local Ray instance of 2 CPUs: the files of one process, and a
shard whose task dies once is run again, not lost."""
import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")
pytest.importorskip("webdataset")

from ipce.cli import main
from ipce.datasets.shards import ShardSource
from ipce.engine.ray_predict import run_on_ray, score_task
from ipce.engine.shards import ShardTask, output_paths
from tests.conftest import tiny_checkpoint
from tests.test_predict_resume import ipce_run
from tests.test_predict_shards import write_shards

pytestmark = pytest.mark.slow  # a Ray instance takes seconds to start, its workers to import torch
VIEWS = ["--resize", "224", "--patches", "2", "--batch-size", "2", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def local_ray():
    # the workers import ipce (and, pickled by value, this module's DiesOnce) as the tests do
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1",
                                       "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH", "")])}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """Four shards (one bad sample) scored by one process on one thread: (checkpoint, shards, output)."""
    root = tmp_path_factory.mktemp("ray")
    ckpt = tiny_checkpoint(root / "m.safetensors", seed=7)
    write_shards(root / "shards", 4, 3, bad={(2, 1): {"png": b"\x89PNG broken", "txt": "a castle"}})
    done = ipce_run(["predict", "--webdataset", str(root / "shards" / "{00000..00003}.tar"), "--checkpoint",
                     str(ckpt), "--out", str(root / "one"), *VIEWS])
    assert done.returncode == 3, done.stderr[-2000:]
    return ckpt, root / "shards", root / "one"


def same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and len(names) == 4
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_the_ray_engine_writes_the_files_of_one_process(local_ray, one_process, tmp_path, capsys):
    ckpt, shards, one = one_process
    out = tmp_path / "ray"
    code = main(["predict", "--webdataset", str(shards / "{00000..00003}.tar"), "--checkpoint", str(ckpt),
                 "--out", str(out), "--engine", "ray", *VIEWS])
    assert code == 3, capsys.readouterr().err
    assert "on Ray" in capsys.readouterr().out
    same_files(out, one)
    assert (tmp_path / "ray.errors.csv").read_bytes() == one.with_name("one.errors.csv").read_bytes()


class DiesOnce:
    """A shard task whose worker process dies (os._exit) the first time it meets `shard`."""

    def __init__(self, shard: str, marker: Path):
        self.shard, self.marker = shard, marker

    def __call__(self, options, task):
        if task.source.path.name == self.shard and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return score_task(options, task)


def test_a_shard_whose_worker_dies_is_retried_and_written(local_ray, one_process, tmp_path):
    ckpt, shards, one = one_process
    sources = [ShardSource(shards / f"{s:05d}.tar", "webdataset") for s in range(4)]
    out = tmp_path / "ray"
    tasks = [ShardTask(s, o, batch_size=2) for s, o in zip(sources, output_paths(sources, out))]
    options = dict(checkpoint=[str(ckpt)], resize=224, patches=2, batch_size=2, device="cpu")
    marker = tmp_path / "died"
    results = run_on_ray(options, tasks, shard_fn=DiesOnce("00001.tar", marker), max_retries=2)
    assert marker.is_file()  # the task did die once
    assert [r.scored for r in results] == [3, 3, 2, 3] and [r.unreadable for r in results] == [0, 0, 1, 0]
    same_files(out, one)
