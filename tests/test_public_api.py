"""The public API: every name in dnncost.__all__ resolves."""
import dnncost


def test_every_public_name_resolves():
    for name in dnncost.__all__:
        assert getattr(dnncost, name) is not None, name


def test_count_from_the_top_level():
    # LeNet-5 forward MACs, hand count in tests/test_models.py: 416,520
    assert dnncost.count("lenet5").total().macs == 416_520


def test_dir_and_help_show_the_api():
    names = dir(dnncost)
    for name in ("count", "time_model", "StepOptions", "register_formula", "register_model", "open_store"):
        assert name in names, name
    assert "time_model" in (dnncost.__doc__ or "")


def test_lazy_names_come_from_their_modules():
    from dnncost.counting.counter import count
    from dnncost.study.store import open_store

    assert dnncost.count is count and dnncost.open_store is open_store


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dnncost.nope  # noqa: B018


def test_all_lists_exactly_the_lazy_names():
    assert set(dnncost.__all__) == {"__version__", *dnncost._LAZY}
