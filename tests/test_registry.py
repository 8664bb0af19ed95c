import pytest

from crossvis.registry import DuplicateComponentError, Registry, UnknownComponentError
from crossvis.errors import CrossVISError


def make_registry():
    reg = Registry()
    with reg.providing("crossvis", "crossvis==0.1.0"):
        reg.register("backbone", "resnet", dict)
        reg.register("backbone", "dla34", list)
    return reg


def test_lookup_and_provenance():
    reg = make_registry()
    assert reg.get("backbone", "resnet") is dict
    entry = reg.entry("backbone", "dla34")
    assert (entry.provider, entry.distribution) == ("crossvis", "crossvis==0.1.0")
    assert reg.names("backbone") == ["dla34", "resnet"]


def test_unknown_name_suggests_and_lists():
    reg = make_registry()
    with pytest.raises(UnknownComponentError) as info:
        reg.get("backbone", "resnt", where="model.backbone.type (r.yaml:3)")
    msg = str(info.value)
    assert "unknown backbone 'resnt'" in msg
    assert "did you mean 'resnet'" in msg
    assert "r.yaml:3" in msg
    assert "dla34, resnet" in msg
    assert isinstance(info.value, CrossVISError)


def test_duplicate_names_both_providers():
    reg = make_registry()
    with pytest.raises(DuplicateComponentError) as info:
        reg.register("backbone", "resnet", set, provider="thirdparty", distribution="tp==2.0")
    msg = str(info.value)
    assert "crossvis==0.1.0" in msg and "tp==2.0" in msg and "thirdparty" in msg


def test_unknown_kind_and_non_callable():
    reg = Registry()
    with pytest.raises(CrossVISError, match="unknown component kind"):
        reg.register("bakbone", "x", dict)
    with pytest.raises(CrossVISError, match="not callable"):
        reg.register("backbone", "x", 3)


def test_unregister_provider():
    reg = make_registry()
    reg.register("tracker", "mine", dict, provider="p")
    reg.unregister_provider("p")
    assert ("tracker", "mine") not in reg
    assert ("backbone", "resnet") in reg
