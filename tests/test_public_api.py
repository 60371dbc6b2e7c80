"""The public API: every name in dnncost.__all__ resolves."""
import dnncost


def test_every_public_name_resolves():
    for name in dnncost.__all__:
        assert getattr(dnncost, name) is not None, name


def test_count_from_the_top_level():
    # LeNet-5 forward MACs, hand count in tests/test_models.py: 416,520
    assert dnncost.count("lenet5").total().macs == 416_520
