"""The combine kernel and its plain-Python twin fold records into the same dict, and fail alike."""

import operator

import pytest
from hypothesis import given, settings, strategies as st

from shuffle._native import combine as native
from shuffle._twins import combine as twin

KERNELS = [pytest.param(native, id="cython"), pytest.param(twin, id="twin")]

keys = st.one_of(st.integers(-5, 5), st.text(max_size=2), st.none(), st.floats(allow_nan=False, width=16))
numbers = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=False, allow_infinity=False))
merges = st.sampled_from([operator.add, min, max, operator.mul, lambda a, b: a - b])


@settings(max_examples=200, deadline=None)
@given(records=st.lists(st.tuples(keys, numbers), max_size=60), merge=merges,
       create=st.sampled_from([None, abs, float]), start=st.dictionaries(keys, numbers, max_size=4))
def test_kernel_and_twin_fold_to_the_same_combiners(records, merge, create, start):
    results = []
    for kernel in (native, twin):
        into = dict(start)
        try:
            count = kernel.combine_values(records, into, create, merge)
            results.append((count, into))
        except (TypeError, OverflowError) as e:  # e.g. float(10**400): both must fail alike
            results.append((type(e), dict(into)))
    assert repr(results[0]) == repr(results[1])  # repr: a combiner may be NaN (inf * 0), never equal to itself


def test_builtin_min_and_max_keep_the_current_combiner_on_ties():
    # 1 == 1.0 == True: which object survives shows whether ties keep the current one.
    for kernel in (native, twin):
        into = {}
        kernel.combine_values([("k", 1), ("k", 1.0), ("k", True)], into, None, min)
        assert type(into["k"]) is int
        into = {}
        kernel.combine_values([("k", 1.0), ("k", 1), ("k", True)], into, None, max)
        assert type(into["k"]) is float


@pytest.mark.parametrize("kernel", KERNELS)
def test_operator_add_matches_a_dict_loop_on_a_million_records(kernel):
    records = [(i % 1000, i) for i in range(1_000_000)]
    into = {}
    assert kernel.combine_values(records, into, None, operator.add) == len(records)
    expected = {}
    for k, v in records:
        expected[k] = expected.get(k, 0) + v
    assert into == expected


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_create_function_starts_each_combiner_and_merge_grows_it(kernel):
    def append(values, value):
        values.append(value)
        return values
    into = {}
    kernel.combine_values([("a", 1), ("b", 2), ("a", 3)], into, lambda v: [v], append)
    assert into == {"a": [1, 3], "b": [2]}


@pytest.mark.parametrize("kernel", KERNELS)
def test_generic_iterables_are_accepted(kernel):
    into = {}
    assert kernel.combine_values(iter([("a", 1), ("b", 2), ("a", 3)]), into, None, operator.add) == 3
    assert into == {"a": 4, "b": 2}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bad, error", [
    (("a", 1, 2), TypeError), (("a",), TypeError), (5, TypeError), (None, TypeError), ("ab", TypeError),
    (["a", 1], TypeError), (([1], 2), TypeError)])
def test_a_record_that_is_not_a_2_tuple_or_has_an_unhashable_key_raises_and_keeps_what_came_before(kernel, bad, error):
    into = {}
    with pytest.raises(error):
        kernel.combine_values([("x", 1), bad, ("y", 2)], into, None, operator.add)
    assert into == {"x": 1}


@pytest.mark.parametrize("kernel", KERNELS)
def test_bad_arguments_are_type_errors_not_crashes(kernel):
    with pytest.raises(TypeError):
        kernel.combine_values([], None, None, operator.add)
    with pytest.raises(TypeError):
        kernel.combine_values([], [], None, operator.add)
    with pytest.raises(TypeError):
        kernel.combine_values([], {}, 5, operator.add)
    with pytest.raises(TypeError):
        kernel.combine_values([], {}, None, None)
    with pytest.raises(TypeError):
        kernel.combine_values(None, {}, None, operator.add)


@pytest.mark.parametrize("kernel", KERNELS)
def test_an_exception_from_merge_propagates(kernel):
    def boom(a, b):
        raise RuntimeError("merge failed")
    into = {}
    with pytest.raises(RuntimeError, match="merge failed"):
        kernel.combine_values([("k", 1), ("k", 2)], into, None, boom)
    assert into == {"k": 1}


@pytest.mark.parametrize("kernel", KERNELS)
def test_add_is_exactly_operator_add_even_for_signed_zeros(kernel):
    into = {}
    kernel.combine_values([("k", 0), ("k", -0.0)], into, None, operator.add)
    assert repr(into["k"]) == repr(operator.add(0, -0.0)) == "0.0"


@settings(max_examples=100, deadline=None)
@given(records=st.lists(st.tuples(keys, numbers), max_size=60))
def test_group_values_kernel_and_twin_build_the_same_lists_as_setdefault_append(records):
    expected = {}
    for key, value in records:
        expected.setdefault(key, []).append(value)
    for kernel in (native, twin):
        into = {}
        assert kernel.group_values(records, into) == len(records)
        assert repr(into) == repr(expected)


@pytest.mark.parametrize("kernel", KERNELS)
def test_group_values_refuses_non_pairs_unhashable_keys_and_non_list_entries(kernel):
    for bad in [("a", 1, 2), "ab", ["a", 1], ([1], 2)]:
        into = {}
        with pytest.raises(TypeError):
            kernel.group_values([("x", 1), bad], into)
        assert into == {"x": [1]}
    with pytest.raises(TypeError):
        kernel.group_values([("x", 1)], {"x": 5})
    with pytest.raises(TypeError):
        kernel.group_values([], None)
