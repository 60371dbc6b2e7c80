"""Hugging Face image classifiers built from a config (``hf:TYPE``, ``hf:config.json``): never
downloaded, counted by hand, and a config that names code does not run it (skipped without
transformers)."""
from __future__ import annotations

import json
import sys

import pytest

from dnncost.core.errors import ModelNotFoundError
from dnncost.counting.counter import count
from dnncost.models.loading import load_model

transformers = pytest.importorskip("transformers")

# A one-layer ViT on 32x32 inputs, patches of 16: 4 patches + the class token = 5 tokens of 16.
# patch embedding 4 * 16 * (3 * 16 * 16) = 49,152; q, k, v 3 * 5 * 16 * 16 = 3,840; QK^T + AV
# 2 * 5 * 5 * 16 = 800; output projection 5 * 16 * 16 = 1,280; MLP 2 * 5 * 16 * 32 = 5,120;
# the classifier on the class token 16 * 3 = 48 -> 60,240 per sample
VIT = {"model_type": "vit", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
       "intermediate_size": 32, "image_size": 32, "patch_size": 16, "num_labels": 3}
VIT_MACS = 4 * 16 * 3 * 16 * 16 + 3 * 5 * 16 * 16 + 2 * 5 * 5 * 16 + 5 * 16 * 16 + 2 * 5 * 16 * 32 + 16 * 3
assert VIT_MACS == 60_240


def test_a_vit_from_a_local_config_is_counted_by_hand(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(VIT))
    loaded = load_model(f"hf:{path}")
    assert loaded.name == f"hf:{path}"
    assert loaded.input_shape == (3, 32, 32) and loaded.num_classes == 3
    report = count(loaded.build("meta"), input_shape=loaded.input_shape, batch_size=2)
    assert report.total().macs == 2 * VIT_MACS
    assert load_model(f"hf:{tmp_path}").input_shape == (3, 32, 32)  # a folder holding config.json


def test_a_model_type_takes_its_config_classs_defaults_with_imagenet_classes() -> None:
    loaded = load_model("hf:mobilenet_v1")
    assert loaded.input_shape == (3, 224, 224) and loaded.num_classes == 1000
    module = loaded.build("meta")
    assert type(module).__name__ == "MobileNetV1ForImageClassification"
    assert module.classifier.out_features == 1000


@pytest.mark.parametrize(("spec", "words"), [
    ("hf:convnxt", "Did you mean"),
    ("hf:bert", "image-classification model type 'bert'"),
    ("hf:missing/config.json", "does not exist"),
])
def test_bad_hf_specs_are_one_clear_line(spec: str, words: str) -> None:
    with pytest.raises(ModelNotFoundError, match=words) as raised:
        load_model(spec)
    assert "\n" not in str(raised.value)


def test_a_config_without_an_image_head_or_naming_code_is_refused(tmp_path) -> None:
    (tmp_path / "bert.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16}))
    with pytest.raises(ModelNotFoundError, match="no image-classification head"):
        load_model(f"hf:{tmp_path / 'bert.json'}")
    ran = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig"}}))
    with pytest.raises(ModelNotFoundError):
        load_model(f"hf:{tmp_path / 'config.json'}")
    assert not ran.exists()


def test_hf_without_transformers(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ModelNotFoundError, match="pip install transformers"):
        load_model("hf:convnext")
