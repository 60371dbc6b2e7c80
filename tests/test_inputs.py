"""The input spec: shapes with dtypes, several tensors, factories; tensors made on a device."""
from __future__ import annotations

import textwrap

import pytest
import torch

from dnncost.core.errors import DnncostError, InputSpecError
from dnncost.core.inputs import InputSpec, TensorInput, make_inputs, parse_dtype, parse_input_spec
from dnncost.models.loading import parse_inputs


def test_one_shape_and_the_old_comma_form():
    assert parse_input_spec("3x224x224").tensors == (TensorInput((3, 224, 224)),)
    assert parse_input_spec("3,224,224").tensors == (TensorInput((3, 224, 224)),)  # as it always meant


def test_dtypes_bounds_and_several_tensors():
    spec = parse_input_spec("3x224x224,4")
    assert spec.tensors == (TensorInput((3, 224, 224)), TensorInput((4,)))
    ids = parse_input_spec("16:int64").tensors[0]
    assert ids == TensorInput((16,), torch.int64, 2)
    assert parse_input_spec("16:int64:30522,16:bool").tensors == (
        TensorInput((16,), torch.int64, 30522), TensorInput((16,), torch.bool))
    assert str(parse_input_spec("16:int64:30522").tensors[0]) == "16:int64:30522"


@pytest.mark.parametrize("text, message", [
    ("3x224xabc", "malformed input shape"),
    ("16:int65", "unknown dtype 'int65'"),
    ("16:float32:7", "value bound follows an integer dtype"),
    ("0x3", "malformed input shape"),
    ("", "empty input shape"),
])
def test_malformed_specs_say_what_would_be_right(text, message):
    with pytest.raises(InputSpecError, match=message):
        parse_input_spec(text)


def test_made_tensors_have_the_batch_dtype_device_and_value_range():
    made = make_inputs("8:int64:5,3x4", batch_size=6, device="cpu", dtype=torch.bfloat16)
    ids, x = made.args
    assert ids.shape == (6, 8) and ids.dtype == torch.int64 and int(ids.max()) < 5
    assert x.shape == (6, 3, 4) and x.dtype == torch.bfloat16  # dtype casts floating inputs only
    meta = make_inputs("8:int64", batch_size=2, device="meta")
    assert meta.args[0].device.type == "meta" and meta.args[0].dtype == torch.int64
    assert make_inputs("1x4x4", batch_size=1, channels_last=True).args[0].dim() == 4


def test_a_dict_is_keyword_arguments_and_a_tuple_positional():
    ids = torch.zeros(2, 3, dtype=torch.long)
    kw = make_inputs({"input_ids": ids, "attention_mask": ids}, device="meta")
    assert kw.args == () and list(kw.kwargs) == ["input_ids", "attention_mask"]
    assert kw.describe() == "input_ids=2x3:int64, attention_mask=2x3:int64" and kw.batch_size == 2
    pos = make_inputs((ids, ids), device="cpu")
    assert len(pos.args) == 2 and pos.kwargs == {}
    with pytest.raises(InputSpecError, match="keys must be"):
        make_inputs({1: ids})


def test_a_factory_from_a_file(tmp_path):
    path = tmp_path / "inp.py"
    path.write_text(textwrap.dedent("""
        import torch
        def inputs(batch_size):
            return {"x": torch.ones(batch_size, 2)}
        def wrong(batch_size):
            return 3
        not_callable = 4
    """))
    spec = parse_inputs(f"{path}:inputs")
    assert spec.factory is not None and str(spec) == f"{path}:inputs"
    made = make_inputs(spec, batch_size=3, device="meta")
    assert made.kwargs["x"].shape == (3, 2) and made.kwargs["x"].device.type == "meta"
    with pytest.raises(InputSpecError, match="returned a int"):
        make_inputs(parse_inputs(f"{path}:wrong"))
    with pytest.raises(InputSpecError, match="not a function"):
        parse_inputs(f"{path}:not_callable")
    with pytest.raises(DnncostError, match="has no 'inptus'"):
        parse_inputs(f"{path}:inptus")


def test_parse_dtype_and_an_empty_spec():
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype(torch.float16) is torch.float16
    with pytest.raises(InputSpecError, match="at least one tensor"):
        InputSpec()
