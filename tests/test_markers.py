"""The `slow` and `real_data` marks sit on the tests; a real-data test without its mark is refused."""
from types import SimpleNamespace

import pytest

from conftest import real_data_or_fail, unmarked_real_data_users


def test_a_test_on_generated_data_is_not_marked(request, tmp_path):
    assert request.node.get_closest_marker('real_data') is None
    assert request.node.get_closest_marker('slow') is None


@pytest.mark.real_data
def test_a_test_with_the_real_data_fixture_is_marked(request, real_dir):
    assert request.node.get_closest_marker('real_data') is not None
    assert (real_dir / 'train.csv').is_file()


def test_an_unmarked_test_cannot_reach_the_real_data():
    with pytest.raises(pytest.fail.Exception, match='mark it @pytest.mark.real_data'):
        real_data_or_fail()


@pytest.mark.real_data
def test_a_marked_test_reaches_the_real_data():
    assert (real_data_or_fail() / 'train.csv').is_file()


def _item(nodeid, fixtures, marks=()):
    return SimpleNamespace(nodeid=nodeid, fixturenames=fixtures,
                           get_closest_marker=lambda name: name if name in marks else None)


def test_collection_names_the_unmarked_users_of_the_real_data_fixtures():
    items = [_item('a', ['tmp_path']), _item('b', ['real_cut']), _item('c', ['real_dir'], marks=('real_data',)),
             _item('d', ['real_dir', 'tmp_path'], marks=('slow',))]
    assert unmarked_real_data_users(items) == ['b', 'd']

