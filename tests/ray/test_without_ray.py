"""The Ray backend's parts that run without a cluster: the missing-Ray error, bad choices, the block service.

These run always, with or without Ray installed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from shuffle import Context, ShuffleConf
from shuffle.dependency import ShuffleDependency
from shuffle.engine.block_service import BlockService, node_directory
from shuffle.errors import ConfigError
from shuffle.manager import SortShuffleManager
from shuffle.map_output import BlockManagerId
from shuffle.metrics import ReadMetrics
from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.partitioner import HashPartitioner
from shuffle.read.block_io import read_ranges
from shuffle.read.fetcher import ShuffleBlockFetcher


def test_asking_for_ray_without_ray_names_the_extra_and_makes_nothing(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" now raises ImportError
    with pytest.raises(ConfigError) as caught:
        Context(backend="ray", address="auto", conf={"spark.local.dir": str(tmp_path)})
    assert "pip install 'shuffle[ray]'" in str(caught.value)
    assert "backend" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no context directory was made


def test_an_unknown_backend_name_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'local', 'ray' or an ExecutorBackend"):
        Context(backend="dask", conf={"spark.local.dir": str(tmp_path)})
    assert list(tmp_path.iterdir()) == []


def test_an_address_is_only_for_the_ray_backend(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only backend='ray' connects to a cluster"):
        Context(address="ray://127.0.0.1:10001", conf={"spark.local.dir": str(tmp_path)})
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_fetch_transport_is_a_config_error() -> None:
    local = BlockManagerId("0", "host", "/nowhere")
    with pytest.raises(ConfigError, match="shuffle.fetch.transport"):
        ShuffleBlockFetcher(0, [], local=local, conf=ShuffleConf({"shuffle.fetch.transport": "carrier-pigeon"}),
                            metrics=ReadMetrics())


def _map_output(directory: str, records: list) -> None:
    # Not stopped: stop() would delete the shuffle's files, which are the point here.
    manager = SortShuffleManager({"spark.shuffle.sync": "false"}, local_dir=directory)
    dep = ShuffleDependency(shuffle_id=0, num_maps=1, partitioner=HashPartitioner(4), serializer=MsgpackSerializer())
    manager.get_writer(manager.register_shuffle(dep), 0).write(records)


def test_the_block_service_serves_and_verifies_what_a_local_read_gives(tmp_path: Path) -> None:
    service = BlockService(str(tmp_path / "root"), "node-a")
    executor_dir = os.path.join(service.directory, "executor-1")
    _map_output(executor_dir, [(i, str(i)) for i in range(200)])
    ranges = [(0, 0, 2), (0, 2, 4)]
    served = service.read_ranges(None, executor_dir, 0, ranges, True)
    assert served == read_ranges(None, executor_dir, 0, ranges, True)
    assert all(r.error is None and r.data and r.verdicts == (None, None) for r in served)

    # A flipped byte on disk is diagnosed by the service, as by a local fetch process.
    data_file = Path(executor_dir) / "shuffle_0_0_0.data"
    raw = bytearray(data_file.read_bytes())
    raw[0] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    verdicts = service.read_ranges(None, executor_dir, 0, [(0, 0, 1)], True)[0].verdicts
    assert verdicts is not None and verdicts[0] is not None and verdicts[0][0] == "DISK_ISSUE"


def test_the_block_service_refuses_a_directory_of_another_node(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    service = BlockService(root, "node-a")
    other = os.path.join(node_directory(root, "node-b"), "executor-1")
    _map_output(other, [(1, "x")])
    (result,) = service.read_ranges(None, other, 0, [(0, 0, 4)], False)
    assert result.data is None and "is not a directory of node node-a" in (result.error or "")
    (result,) = service.read_ranges(None, os.path.join(service.directory, "..", "node-b", "executor-1"),
                                    0, [(0, 0, 4)], False)
    assert result.data is None and result.error


def test_the_block_service_removes_its_node_directory_or_only_temporaries(tmp_path: Path) -> None:
    root = tmp_path / "root"
    kept = BlockService(str(root), "node-a")
    executor = Path(kept.directory) / "executor-1"
    _map_output(str(executor), [(1, "x")])
    (executor / "temp_shuffle_123").write_bytes(b"spill")
    kept.remove(keep_files=True)
    assert not (executor / "temp_shuffle_123").exists()
    assert (executor / "shuffle_0_0_0.index").exists()

    removed = BlockService(str(root), "node-b")
    removed.remove(keep_files=False)
    assert not os.path.exists(removed.directory)
    assert os.path.exists(kept.directory)  # the other node's directory is not this service's
