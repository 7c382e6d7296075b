import dataclasses
import gc
import os
from collections import Counter
from functools import partial

import psutil
import pytest

import fetch_faults
from shuffle import CorruptBlockError, FetchFailedError, ShuffleConf, ShuffleError
from shuffle.blocks import BlockFormat
from shuffle.dependency import ShuffleDependency
from shuffle.manager import SortShuffleManager
from shuffle.map_output import BlockManagerId, MapOutputTracker, ShuffleBlockId
from shuffle.metrics import ReadMetrics
from shuffle.partitioner import HashPartitioner
from shuffle.read import fetch_pool
from shuffle.read.block_io import diagnose_corruption
from shuffle.read.fetcher import ShuffleBlockFetcher

BASE_CONF = {
    "spark.shuffle.sync": "false",
    "spark.shuffle.io.retryWait": "10ms",
    "spark.network.timeout": "2s",
}
P = 8  # partitions


def stray_processes():
    """Descendants of this process other than multiprocessing's shared helpers (zombies included)."""
    me = psutil.Process()
    found = []
    for p in me.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
            helper = "multiprocessing.forkserver" in cmd or "multiprocessing.resource_tracker" in cmd
            if p.ppid() == me.pid and helper:
                continue
            found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


class Cluster:
    """Three executors sharing one tracker: e1 (the reducer's), e2 (same host), e3 (another host)."""

    def __init__(self, root, conf, placement, keys):
        self.conf = ShuffleConf({**BASE_CONF, **conf})
        self.tracker = MapOutputTracker()
        self.managers = {}
        for eid in ("e1", "e2", "e3"):
            m = SortShuffleManager(self.conf, local_dir=root / eid, executor_id=eid, tracker=self.tracker)
            if eid == "e3":
                m.location = dataclasses.replace(m.location, host="host-b")
            self.managers[eid] = m
        dep = ShuffleDependency(0, len(placement), HashPartitioner(P))
        handles = {eid: m.register_shuffle(dep) for eid, m in self.managers.items()}
        self.written = {}
        for map_id, eid in enumerate(placement):
            records = [(k, f"m{map_id}-{k}") for k in keys(map_id)]
            self.managers[eid].get_writer(handles[eid], map_id).write(records)
            for k, v in records:
                self.written.setdefault((map_id, k % P), []).append((k, v))
        self.format = BlockFormat.for_shuffle(self.conf, dep.serializer)
        self.local = self.managers["e1"].location

    def plan(self, start_map=0, end_map=None, start_p=0, end_p=P):
        end_map = len(self.tracker.get_statuses(0)) if end_map is None else end_map
        return self.tracker.get_map_sizes_by_range(0, start_map, end_map, start_p, end_p)

    def fetcher(self, plan=None, conf=None, read_fn=None):
        conf = self.conf.copy() if not conf else ShuffleConf({**self.conf.to_dict(), **conf})
        metrics = ReadMetrics()
        f = ShuffleBlockFetcher(0, self.plan() if plan is None else plan, local=self.local,
                                conf=conf, metrics=metrics, _read_fn=read_fn)
        return f, metrics

    def decoded(self, block):
        return sorted(tuple(r) for r in self.format.decode(block.data))

    def expected(self, plan):
        keys = [(b.map_id, b.reduce_id) for _, blocks in plan for b, _, _ in blocks]
        return {key: sorted(self.written[key]) for key in keys}

    def files(self):
        return {eid: sorted(os.listdir(m.local_dir)) for eid, m in self.managers.items()}

    def data_file(self, map_id):
        for m in self.managers.values():
            path = m.resolver.data_file(0, map_id)
            if path.exists():
                return path
        raise AssertionError(f"no data file for map {map_id}")

    def close(self):
        for m in self.managers.values():
            m.stop()


@pytest.fixture
def make_cluster(tmp_path):
    made = []

    def make(placement=("e1", "e2", "e3", "e1", "e2", "e3"), conf=(), keys=lambda m: range(m, m + 40)):
        c = Cluster(tmp_path, dict(conf), list(placement), keys)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
    assert stray_processes() == []


def flip_byte_on_disk(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def read_all(fetcher, cluster):
    got = {}
    for block in fetcher:
        key = (block.map_id, block.reduce_id)
        assert key not in got, f"block {key} handed out twice"
        assert block.data
        got[key] = cluster.decoded(block)
    return got


# ------------------------------------------------------------------ reading


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_subset_of_maps_and_partitions_reads_back_what_was_written(make_cluster, start_method):
    c = make_cluster(conf={"shuffle.fetch.startMethod": start_method})
    before = c.files()
    plan = c.plan(1, 6, 2, 7)
    fetcher, metrics = c.fetcher(plan)
    pids, got, where = set(), {}, Counter()
    with fetcher:
        for block in fetcher:
            pids.update(fetcher.fetch_pids)
            got[(block.map_id, block.reduce_id)] = c.decoded(block)
            where[(block.location.executor_id, block.local)] += 1
    assert got == c.expected(plan)
    by_executor = Counter(loc.executor_id for loc, blocks in plan for _ in blocks)
    assert where == {("e1", True): by_executor["e1"], ("e2", True): by_executor["e2"],
                     ("e3", False): by_executor["e3"]}
    assert metrics.local_blocks_fetched == by_executor["e1"] + by_executor["e2"]
    assert fetcher.host_local_blocks_fetched == by_executor["e2"]
    assert metrics.remote_blocks_fetched == by_executor["e3"] > 0
    assert metrics.bytes_read == sum(size for _, blocks in plan for _, size, _ in blocks)
    assert metrics.peak_bytes_in_flight > 0 and metrics.corrupt_blocks_retried == 0
    assert pids and all(not psutil.pid_exists(pid) for pid in pids)
    assert stray_processes() == []
    assert c.files() == before  # nothing left behind, nothing removed
    with pytest.raises(StopIteration):
        next(fetcher)


def test_plan_of_local_blocks_only_starts_no_fetch_process(make_cluster):
    c = make_cluster(placement=["e1", "e2", "e1"])
    fetcher, metrics = c.fetcher()
    for _ in fetcher:
        assert stray_processes() == []
    assert fetcher.fetch_processes_started == 0
    assert metrics.local_blocks_fetched == sum(len(b) for _, b in c.plan())
    assert metrics.remote_blocks_fetched == 0 and metrics.fetch_wait_time_ns == 0


def test_zero_size_block_in_plan_is_a_fetch_failure(make_cluster):
    c = make_cluster(placement=["e1"])
    loc, blocks = c.plan()[0]
    plan = [(loc, blocks + [(ShuffleBlockId(0, 0, 99), 0, 0)])]
    with pytest.raises(FetchFailedError, match="empty blocks") as info:
        c.fetcher(plan)
    assert (info.value.map_id, info.value.reduce_id) == (0, 99)


def test_empty_blocks_are_never_requested_and_contiguous_partitions_are_one_read(make_cluster, tmp_path):
    # Keys k with k % 8 in {0, 1, 2, 5, 6}: partitions 3, 4 and 7 of every map stay empty.
    keys = lambda m: [k for k in range(60) if k % P in (0, 1, 2, 5, 6)]  # noqa: E731
    c = make_cluster(placement=["e3", "e3", "e3"], keys=keys)
    log = tmp_path / "reads.log"
    fetcher, metrics = c.fetcher(read_fn=partial(fetch_faults.recording, str(log)))
    assert read_all(fetcher, c) == c.expected(c.plan())
    reads = sorted(tuple(map(int, line.split())) for line in log.read_text().splitlines())
    assert reads == [(m, s, e) for m in range(3) for s, e in ((0, 3), (5, 7))]
    assert metrics.fetch_wait_time_ns > 0  # the first block had to wait for a fetch process


def test_host_local_blocks_go_to_fetch_processes_when_host_local_reads_are_off(make_cluster):
    c = make_cluster(placement=["e1", "e2"], conf={"spark.shuffle.readHostLocalDisk": "false"})
    fetcher, metrics = c.fetcher()
    blocks = list(fetcher)
    assert {b.local for b in blocks if b.location.executor_id == "e2"} == {False}
    assert metrics.remote_blocks_fetched == sum(len(b) for loc, b in c.plan() if loc.executor_id == "e2")


# ------------------------------------------------------------- flow control


@pytest.mark.parametrize("limit, value, keys_per_map, peak", [
    # ~180-byte blocks, requests of two: four processes could hold 1440 bytes.
    ("spark.reducer.maxSizeInFlight", "1k", 200, lambda f, m: m.peak_bytes_in_flight <= 1024),
    # ~27-byte blocks, requests of three (target 80 bytes): four processes could hold four requests.
    ("spark.reducer.maxReqsInFlight", "2", 24, lambda f, m: f.peak_reqs_in_flight <= 2),
    ("spark.reducer.maxBlocksInFlightPerAddress", "3", 24, lambda f, m: f.peak_blocks_in_flight_per_address <= 3),
], ids=["bytes", "requests", "blocks-per-address"])
def test_in_flight_limits_hold_for_many_maps(make_cluster, limit, value, keys_per_map, peak):
    conf = {"spark.reducer.maxSizeInFlight": "400b", "shuffle.fetch.processes": "4", limit: value}
    c = make_cluster(placement=["e3"] * 16, conf=conf, keys=lambda m: range(m, m + keys_per_map))
    fetcher, metrics = c.fetcher()
    assert read_all(fetcher, c) == c.expected(c.plan())
    assert peak(fetcher, metrics)
    assert metrics.peak_bytes_in_flight > 0 and metrics.remote_blocks_fetched == 16 * P


def test_a_block_larger_than_max_size_in_flight_is_fetched_alone(make_cluster):
    c = make_cluster(placement=["e3"] * 4, conf={"spark.reducer.maxSizeInFlight": "16b"})
    fetcher, metrics = c.fetcher()
    assert read_all(fetcher, c) == c.expected(c.plan())
    largest = max(size for _, blocks in c.plan() for _, size, _ in blocks)
    assert largest > 16
    assert metrics.peak_bytes_in_flight == largest  # never two at once, since each is over the limit


# ----------------------------------------------------------------- corruption


def test_flipped_byte_on_disk_of_a_local_block_is_a_disk_issue_without_refetch(make_cluster):
    c = make_cluster(placement=["e1", "e1"])
    flip_byte_on_disk(c.data_file(1), 0)  # first non-empty partition of map 1
    fetcher, metrics = c.fetcher()
    handed = []
    with pytest.raises(CorruptBlockError) as info:
        for block in fetcher:
            handed.append((block.map_id, block.reduce_id))
    err = info.value
    assert err.diagnosis == "DISK_ISSUE" and err.map_id == 1 and "DISK_ISSUE" in str(err)
    assert (1, err.reduce_id) not in handed
    assert metrics.corrupt_blocks_retried == 0


def test_flipped_byte_on_disk_of_a_remote_block_is_a_disk_issue_after_one_refetch(make_cluster):
    c = make_cluster(placement=["e3", "e3", "e3"])
    flip_byte_on_disk(c.data_file(2), 5)
    fetcher, metrics = c.fetcher()
    handed = []
    with pytest.raises(CorruptBlockError) as info:
        for block in fetcher:
            handed.append((block.map_id, block.reduce_id))
    assert info.value.diagnosis == "DISK_ISSUE" and info.value.map_id == 2
    assert (2, info.value.reduce_id) not in handed
    assert metrics.corrupt_blocks_retried == 1
    assert stray_processes() == []


def test_byte_flipped_in_every_transfer_is_a_network_issue_after_one_retry(make_cluster, tmp_path):
    c = make_cluster(placement=["e3"])
    fetcher, metrics = c.fetcher(read_fn=partial(fetch_faults.flip_first, str(tmp_path / "n"), 10**6))
    with pytest.raises(CorruptBlockError) as info:
        list(fetcher)
    assert info.value.diagnosis == "NETWORK_ISSUE"
    assert metrics.corrupt_blocks_retried == 1


def test_byte_flipped_once_in_transfer_is_healed_by_the_refetch(make_cluster, tmp_path):
    c = make_cluster(placement=["e3", "e3"])
    fetcher, metrics = c.fetcher(read_fn=partial(fetch_faults.flip_first, str(tmp_path / "n"), 1))
    assert read_all(fetcher, c) == c.expected(c.plan())
    assert metrics.corrupt_blocks_retried == 1


@pytest.mark.parametrize("conf", [{"spark.shuffle.detectCorrupt": "false"},
                                  {"spark.shuffle.checksum.enabled": "false"}])
def test_blocks_are_not_verified_without_detect_corrupt_or_checksum_files(make_cluster, conf):
    c = make_cluster(placement=["e1"], conf=conf)
    path = c.data_file(0)
    original = path.read_bytes()
    flip_byte_on_disk(path, 0)
    fetcher, _ = c.fetcher()
    first = next(b for b in fetcher if b.reduce_id == 0)
    assert first.data[0] == original[0] ^ 0xFF


def test_diagnosis_tells_disk_network_unsupported_and_unknown_apart(make_cluster):
    c = make_cluster(placement=["e1"])
    resolver, local_dir = c.managers["e1"].resolver, str(c.local.local_dir)
    good = resolver.read_block(0, 0, 1)
    bad = bytes([good[0] ^ 1]) + good[1:]
    assert diagnose_corruption(local_dir, 0, 0, 1, good)[0] == "CHECKSUM_VERIFY_PASS"
    assert diagnose_corruption(local_dir, 0, 0, 1, bad)[0] == "NETWORK_ISSUE"
    checksum = resolver.checksum_file(0, 0)
    os.rename(checksum, checksum.with_suffix(".CRC32C"))
    assert diagnose_corruption(local_dir, 0, 0, 1, bad)[0] == "UNSUPPORTED_CHECKSUM_ALGORITHM"
    os.rename(checksum.with_suffix(".CRC32C"), checksum)
    flip_byte_on_disk(resolver.data_file(0, 0), 0)
    assert diagnose_corruption(local_dir, 0, 0, 0, b"x")[0] == "DISK_ISSUE"
    checksum.unlink()
    diagnosis, detail = diagnose_corruption(local_dir, 0, 0, 1, bad)
    assert diagnosis == "UNKNOWN_ISSUE" and "no checksum file" in detail


# ------------------------------------------------------------- read failures


def test_deleted_data_file_of_a_local_map_fails_at_once_naming_the_file(make_cluster):
    c = make_cluster(placement=["e1", "e1"])
    path = c.data_file(1)
    path.unlink()
    fetcher, _ = c.fetcher()
    with pytest.raises(FetchFailedError) as info:
        list(fetcher)
    assert info.value.map_id == 1 and path.name in str(info.value)


def test_truncated_index_is_a_fetch_failure(make_cluster):
    c = make_cluster(placement=["e1"])
    index = c.managers["e1"].resolver.index_file(0, 0)
    os.truncate(index, 16)
    fetcher, _ = c.fetcher()
    with pytest.raises(FetchFailedError, match="index file"):
        list(fetcher)


def test_deleted_data_file_of_a_remote_map_fails_after_the_retries(make_cluster, tmp_path):
    c = make_cluster(placement=["e3", "e3"], conf={"spark.shuffle.io.maxRetries": "2"})
    path = c.data_file(1)
    path.unlink()
    counter = str(tmp_path / "reads")
    fetcher, _ = c.fetcher(plan=c.plan(1, 2), read_fn=partial(fetch_faults.counting, counter))
    with pytest.raises(FetchFailedError) as info:
        list(fetcher)
    assert info.value.map_id == 1 and path.name in str(info.value)
    assert isinstance(info.value.location, BlockManagerId) and info.value.location.executor_id == "e3"
    assert fetch_faults.count(counter) == 3  # the read and two retries
    assert stray_processes() == []


def test_transient_read_error_is_retried_then_succeeds(make_cluster, tmp_path):
    c = make_cluster(placement=["e3", "e3"], conf={"spark.shuffle.io.maxRetries": "3"})
    counter = str(tmp_path / "n")
    fetcher, _ = c.fetcher(read_fn=partial(fetch_faults.fail_first, counter, 3))
    assert read_all(fetcher, c) == c.expected(c.plan())
    assert fetch_faults.count(counter) > 3


def test_killed_fetch_process_is_replaced_and_its_request_retried(make_cluster, tmp_path):
    c = make_cluster(placement=["e3", "e3", "e3"], conf={"shuffle.fetch.processes": "1"})
    fetcher, _ = c.fetcher(read_fn=partial(fetch_faults.exit_first, str(tmp_path / "n"), 1))
    assert read_all(fetcher, c) == c.expected(c.plan())
    assert fetcher.fetch_processes_started == 2


def test_hung_fetch_process_is_killed_after_the_network_timeout(make_cluster, tmp_path):
    c = make_cluster(placement=["e3"], conf={"shuffle.fetch.processes": "1"})
    fetcher, _ = c.fetcher(read_fn=partial(fetch_faults.hang_first, str(tmp_path / "n"), 1))
    assert read_all(fetcher, c) == c.expected(c.plan())
    assert fetcher.fetch_processes_started == 2


# ------------------------------------------------------------------ clean-up


def test_closing_early_or_on_keyboard_interrupt_leaves_no_process(make_cluster, monkeypatch):
    c = make_cluster(placement=["e3", "e3"])
    fetcher, _ = c.fetcher()
    with fetcher:
        next(fetcher)
        assert fetcher.fetch_pids
    assert stray_processes() == []
    fetcher.close()  # idempotent
    with pytest.raises(ShuffleError, match="closed"):
        next(fetcher)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_pool, "wait", interrupted)
    fetcher, _ = c.fetcher()
    with pytest.raises(KeyboardInterrupt):
        list(fetcher)
    assert fetcher.fetch_processes_started > 0
    assert stray_processes() == []


def test_a_fetcher_dropped_without_close_still_reaps_its_processes(make_cluster):
    c = make_cluster(placement=["e3", "e3"])
    fetcher, _ = c.fetcher()
    next(fetcher)
    pids = fetcher.fetch_pids
    assert pids
    del fetcher
    gc.collect()
    assert not any(psutil.pid_exists(pid) for pid in pids)


def test_unknown_start_method_is_a_config_error(make_cluster):
    from shuffle import ConfigError

    c = make_cluster(placement=["e3"])
    with pytest.raises(ConfigError, match="shuffle.fetch.startMethod"):
        c.fetcher(conf={"shuffle.fetch.startMethod": "teleport"})
