"""The `slow` and `real_data` markers of tests/conftest.py: `make test-fast` leaves out what they mark."""
import ast

from conftest import SLOW, TESTS, _reads_real_data


def test_every_slow_entry_names_a_test_that_exists():
    for entry in SLOW:
        file, _, test = entry.partition('::')
        assert (TESTS / file).is_file(), entry
        if test:
            name, _, param = test.partition('[')
            tree = ast.parse((TESTS / file).read_text())
            assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, entry


def _cut():
    from conftest import cut_real
    return cut_real


def _through_a_helper():
    return _cut()


def _stacked(tmp):
    from conftest import stacked_cut
    return [stacked_cut(tmp, 8, 2) for _ in range(1)]  # inside a comprehension


def _generated():
    import numpy as np
    return np.zeros((4, 101, 101))


# by name: a test that named these functions would itself be found reading the real data
EXAMPLES = {'_cut': True, '_through_a_helper': True, '_stacked': True, '_generated': False}


def test_real_data_is_found_in_the_code_a_test_runs():
    for name, reads in EXAMPLES.items():
        assert _reads_real_data(globals()[name], set()) == reads, name


def test_a_test_on_generated_data_is_not_marked(request, tmp_path):
    assert request.node.get_closest_marker('real_data') is None
    assert request.node.get_closest_marker('slow') is None


def test_a_test_with_the_real_data_fixture_is_marked(request, real_dir):
    assert request.node.get_closest_marker('real_data') is not None
    assert (real_dir / 'train.csv').is_file()
