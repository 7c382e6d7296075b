"""Every Dataset operation against a plain-Python oracle, on real worker processes."""

import operator
from collections import Counter, defaultdict

import pytest

from shuffle import Context

WORDS = "the quick brown fox jumps over the lazy dog the end".split()
PAIRS = [(i % 37, i) for i in range(2000)] + [("k%d" % (i % 11), i) for i in range(300)] + [(None, 5), ((1, "t"), 6)]


@pytest.fixture(scope="module", params=["bypass", "above-threshold"])
def ctx(request, tmp_path_factory):
    conf = {"spark.shuffle.sync": "false", "spark.executor.memory": "256m"}
    if request.param == "above-threshold":
        # Fewer partitions than the ops use: every shuffle takes the serialized or sort path.
        conf["spark.shuffle.sort.bypassMergeThreshold"] = "2"
    with Context(parallelism=2, conf=conf, local_dir=tmp_path_factory.mktemp("ctx")) as context:
        yield context


def grouped(pairs):
    out = defaultdict(list)
    for k, v in pairs:
        out[k].append(v)
    return out


def test_narrow_operations_pipeline_in_one_stage(ctx):
    ds = ctx.parallelize(range(100), 4)
    result = ds.map(lambda x: x * 2).filter(lambda x: x % 3 == 0).flat_map(lambda x: [x, -x]).collect()
    assert result == [y for x in range(100) for y in (2 * x, -2 * x) if (2 * x) % 3 == 0]
    assert len(ctx.last_job_metrics.stages) == 1
    assert ds.map_partitions(lambda it: [sum(it)]).collect() == [sum(range(i * 25, (i + 1) * 25)) for i in range(4)]
    assert ds.key_by(lambda x: x % 2).map_values(str).take(3) == [(0, "0"), (1, "1"), (0, "2")]
    assert ctx.parallelize(PAIRS, 3).keys().count() == len(PAIRS)
    assert ctx.parallelize([(1, 2)], 1).values().collect() == [2]


@pytest.mark.parametrize("n", [1, 4, 7])
def test_reduce_by_key_equals_a_dict_oracle(ctx, n):
    result = dict(ctx.parallelize(PAIRS, 5).reduce_by_key(operator.add, n).collect())
    assert result == {k: sum(vs) for k, vs in grouped(PAIRS).items()}
    stages = ctx.last_job_metrics.stages
    assert [s.kind for s in stages] == ["map", "result"]
    assert stages[0].write.records_written <= len(PAIRS)      # combined on the map side


def test_combine_by_key_builds_combiners(ctx):
    result = dict(ctx.parallelize(PAIRS, 4).combine_by_key(
        lambda v: (v, 1), lambda c, v: (c[0] + v, c[1] + 1), lambda a, b: (a[0] + b[0], a[1] + b[1]), 3).collect())
    assert result == {k: (sum(vs), len(vs)) for k, vs in grouped(PAIRS).items()}


def test_group_by_key_does_not_combine_on_the_map_side(ctx):
    result = {k: sorted(vs) for k, vs in ctx.parallelize(PAIRS, 4).group_by_key(5).collect()}
    assert result == {k: sorted(vs) for k, vs in grouped(PAIRS).items()}
    assert ctx.last_job_metrics.stages[0].write.records_written == len(PAIRS)


@pytest.mark.parametrize("ascending", [True, False])
def test_sort_by_key_gives_a_total_order_across_partitions(ctx, ascending):
    data = [((i * 7919) % 1000, i) for i in range(3000)]
    ds = ctx.parallelize(data, 4).sort_by_key(ascending=ascending, num_partitions=5)
    result = ds.collect()
    assert [k for k, _ in result] == sorted((k for k, _ in data), reverse=not ascending)
    assert sorted(result) == sorted(data)


def test_sort_by_key_with_key_func(ctx):
    data = [(w, i) for i, w in enumerate(WORDS * 5)]
    result = ctx.parallelize(data, 3).sort_by_key(num_partitions=3, key_func=lambda w: (len(w), w)).keys().collect()
    assert result == sorted((w for w, _ in data), key=lambda w: (len(w), w))


def test_partition_by_places_keys_by_hash(ctx):
    from shuffle import HashPartitioner

    ds = ctx.parallelize(PAIRS, 3).partition_by(6)
    parts = ds.map_partitions_with_index(lambda i, it: [(i, k) for k, _ in it]).collect()
    assert all(HashPartitioner(6).get_partition(k) == i for i, k in parts)
    assert sorted(ds.collect(), key=repr) == sorted(PAIRS, key=repr)


def test_join_is_an_inner_join(ctx):
    left = [(i % 10, "l%d" % i) for i in range(40)]
    right = [(i % 15, "r%d" % i) for i in range(30)]
    result = ctx.parallelize(left, 3).join(ctx.parallelize(right, 2), 4).collect()
    expected = [(k, (v, w)) for k, v in left for k2, w in right if k == k2]
    assert sorted(result) == sorted(expected)


def test_distinct_count_by_key_take_first_reduce(ctx):
    data = [i % 13 for i in range(500)]
    assert sorted(ctx.parallelize(data, 4).distinct(3).collect()) == list(range(13))
    assert ctx.parallelize(PAIRS, 4).count_by_key() == dict(Counter(k for k, _ in PAIRS))
    ds = ctx.parallelize(range(1000), 8)
    assert ds.take(5) == [0, 1, 2, 3, 4]
    assert ds.take(0) == [] and ds.first() == 0
    assert ds.reduce(operator.add) == sum(range(1000))
    assert ctx.parallelize([], 3).count() == 0


def test_wide_over_wide_reuses_earlier_shuffle_outputs(ctx):
    counts = ctx.parallelize(WORDS * 50, 4).map(lambda w: (w, 1)).reduce_by_key(operator.add, 3)
    by_count = counts.map(lambda wc: (wc[1], wc[0])).group_by_key(2)
    first = {k: sorted(v) for k, v in by_count.collect()}
    assert first == {c * 50: sorted(w for w in set(WORDS) if WORDS.count(w) == c) for c in set(map(WORDS.count, WORDS))}
    stages = len(ctx.last_job_metrics.stages)
    by_count.count()
    assert len(ctx.last_job_metrics.stages) == 1 < stages   # both shuffles' outputs reused


def test_union_and_types_round_trip(ctx):
    records = [(b"bytes", [1, 2]), ((1, 2), {"a": (3,)}), ("s", None), (2**70, 1.5)]
    result = ctx.parallelize(records[:2], 1).union(ctx.parallelize(records[2:], 1)).partition_by(3).collect()
    assert sorted(result, key=repr) == sorted(records, key=repr)
    assert all(type(a[1]) is type(b[1]) for a, b in zip(sorted(result, key=repr), sorted(records, key=repr)))


def test_word_count_through_text_files_and_saved_output(ctx, tmp_path):
    texts = {"a.txt": "to be or\nnot to be\n", "b.txt": "be quick\r\nor be dead"}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    counts = (ctx.text_file(str(tmp_path / "*.txt")).flat_map(str.split)
              .map(lambda w: (w, 1)).reduce_by_key(operator.add, 3))
    expected = Counter(" ".join(texts.values()).split())
    assert dict(counts.collect()) == dict(expected)
    out = tmp_path / "out"
    counts.save_as_text_file(str(out))
    lines = [line for part in sorted(out.glob("part-*")) for line in part.read_text().splitlines()]
    assert sorted(lines) == sorted(str(kv) for kv in expected.items())
    assert (out / "_SUCCESS").exists() and len(list(out.glob("part-*"))) == 3
    from shuffle import OutputExistsError
    with pytest.raises(OutputExistsError):
        counts.save_as_text_file(str(out))


def test_many_small_files_do_not_become_many_tasks(ctx, tmp_path):
    for i in range(2000):
        (tmp_path / f"f{i:04d}.txt").write_text(f"{i}\n")
    ds = ctx.text_file(str(tmp_path))
    assert ds.num_partitions <= 10
    assert sorted(map(int, ds.collect())) == list(range(2000))
