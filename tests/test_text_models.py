"""Text and sequence models end to end: token ids in, embedding + encoder layer + LSTM counted by
hand on meta and on CPU (where torch takes its fused kernels), keyword inputs, HF models from a
config (no download; skipped without transformers)."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

from dnncost.cli import main
from dnncost.core.errors import InputSpecError
from dnncost.counting.counter import count

B, S, E, HEADS, FF, HID, VOCAB, CLASSES = 2, 5, 16, 2, 32, 8, 100, 3
# encoder layer, N = B*S = 10 tokens: in-projection 3*N*E*E = 7,680; QK^T + AV 2*B*S*S*E = 1,600;
# out-projection N*E*E = 2,560; feed-forward 2*N*E*FF = 10,240 -> 22,080
ENCODER_MACS = 3 * 10 * 16 * 16 + 2 * 2 * 5 * 5 * 16 + 10 * 16 * 16 + 2 * 10 * 16 * 32
assert ENCODER_MACS == 22_080
# LSTM, 4 gates of HID units per step from the E-dim input and the HID-dim state: B*S*4*HID*(E+HID)
# = 10 * 32 * 24 = 7,680; head: B * HID * CLASSES = 48
LSTM_MACS = 10 * 4 * 8 * (16 + 8)
assert LSTM_MACS == 7_680
HEAD_MACS = 2 * 8 * 3
# Non-MAC FLOPs per LSTM step and batch item: bias adds 2*4*HID = 64 + the cell's 24*HID = 192
# (gate sum 4H, three sigmoids 12H, tanh(g) 2H, c update 3H, tanh(c) 2H, h 1H) -> 256; 10 steps
LSTM_FLOPS = 2 * LSTM_MACS + 10 * (2 * 4 * 8 + 24 * 8)
assert LSTM_FLOPS == 17_920
# encoder non-MAC FLOPs: biases N*(5E+FF) = 1,120; q/k scaling 2*N*E = 320; softmax 5*B*H*S*S = 500;
# two layer norms 2*8*N*E = 2,560; ReLU N*FF = 320; residual adds 2*N*E = 320 -> 5,140
ENCODER_FLOPS = 2 * ENCODER_MACS + 1_120 + 320 + 500 + 2_560 + 320 + 320
assert ENCODER_FLOPS == 49_300


class TinyText(nn.Module):
    """Embedding -> one TransformerEncoderLayer -> LSTM -> linear head on the last step."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, E)
        layer = nn.TransformerEncoderLayer(E, HEADS, FF, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.lstm = nn.LSTM(E, HID, batch_first=True)
        self.head = nn.Linear(HID, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        pad = None if attention_mask is None else attention_mask == 0
        hidden, _ = self.lstm(self.enc(self.emb(input_ids), src_key_padding_mask=pad))  # (B, S, HID)
        return self.head(hidden[:, -1])  # (B, CLASSES)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_tiny_text_model_by_hand(device):
    ids = torch.randint(0, VOCAB, (B, S))
    r = count(TinyText(), (ids,), device=device)
    assert r.unsupported() == {} and not r.incomplete
    assert r.total().macs == ENCODER_MACS + LSTM_MACS + HEAD_MACS  # 22,080 + 7,680 + 48 = 29,808
    assert r.by_module(1)["enc"].macs == ENCODER_MACS
    assert r.by_module(1)["lstm"].macs == LSTM_MACS and r.by_module(1)["lstm"].flops == LSTM_FLOPS
    assert r.by_module(1)["enc"].flops == ENCODER_FLOPS
    if device == "cpu":  # torch's fused kernels ran and were counted, not listed as unsupported
        ops = r.by_operator()
        assert "aten._transformer_encoder_layer_fwd" in ops and "aten.mkldnn_rnn_layer" in ops


def test_meta_and_cpu_agree_on_the_text_model():
    ids = torch.randint(0, VOCAB, (B, S))
    meta, cpu = count(TinyText(), (ids,)), count(TinyText(), (ids,), device="cpu")
    assert meta.total().macs == cpu.total().macs and meta.total().flops == cpu.total().flops


def test_training_step_counts_rnn_backward():
    ids = torch.randint(0, VOCAB, (B, S))
    cpu = count(TinyText(), (ids,), device="cpu", mode="train")
    assert not cpu.incomplete  # mkldnn_rnn_layer_backward has a formula
    # oneDNN's LSTM backward: grads of input, state and both weights = 2 x forward = 15,360 MACs
    assert cpu.by_operator("backward")["aten.mkldnn_rnn_layer_backward"].macs == 2 * LSTM_MACS
    meta = count(TinyText(), (ids,), mode="train")
    # the decomposed cell skips the gradient of the zero initial state: B*4H*H = 2*32*8 = 512 fewer
    assert meta.by_module(1, "backward")["lstm"].macs == 2 * LSTM_MACS - 512


def test_keyword_inputs_from_a_dict_and_the_spec():
    ids, mask = torch.randint(0, VOCAB, (B, S)), torch.ones(B, S, dtype=torch.long)
    r = count(TinyText(), {"input_ids": ids, "attention_mask": mask}, device="cpu")
    assert r.total().macs == 29_808 and "attention_mask=2x5:int64" in r.inputs
    spec = count(TinyText(), f"{S}:int64:{VOCAB}", batch_size=B)
    assert spec.total().macs == 29_808 and spec.batch_size == B


def test_meta_failure_suggests_cpu():
    class ReadsValues(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) * x.sum().item()  # a value: impossible on meta

    with pytest.raises(InputSpecError, match=r"meta device.*device 'cpu'"):
        count(ReadsValues(), input_shape=(4,))
    assert count(ReadsValues(), input_shape=(4,), device="cpu").total().macs == 16  # 4 * 4


@pytest.mark.parametrize("rnn, macs", [
    (nn.GRU(16, 8, batch_first=True), 10 * 3 * 8 * (16 + 8)),  # B*S * 3 gates * H * (I + H) = 5,760
    (nn.LSTM(16, 8, batch_first=True), 10 * 4 * 8 * (16 + 8)),  # 7,680
    (nn.RNN(16, 8, batch_first=True), 10 * 1 * 8 * (16 + 8)),  # 1,920
])
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_recurrent_layers_have_no_unsupported_views(rnn, macs, device):
    r = count(rnn, (torch.randn(B, S, 16),), device=device)
    assert r.unsupported() == {}  # unsafe_split / transpose_ are views
    assert r.total().macs == macs


def test_text_model_from_the_cli(tmp_path, capsys):
    path = tmp_path / "text.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(100, 16)
                self.lstm = nn.LSTM(16, 8, batch_first=True)

            def forward(self, input_ids, attention_mask=None):
                out, _ = self.lstm(self.emb(input_ids))
                return out[:, -1] * (1 if attention_mask is None else attention_mask[:, :1])

        def inputs(batch_size):
            return {"input_ids": torch.randint(0, 100, (batch_size, 5)),
                    "attention_mask": torch.ones(batch_size, 5, dtype=torch.long)}
    """))
    assert main(["count", f"{path}:Net", "--input", "5:int64:100", "--batch-size", "2",
                 "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["macs"] == 7_680 and summary["incomplete"] is False  # the LSTM above
    assert main(["count", f"{path}:Net", "--input", f"{path}:inputs", "--batch-size", "2",
                 "--format", "json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["inputs"] == \
        "input_ids=2x5:int64, attention_mask=2x5:int64"
    assert main(["time", f"{path}:Net", "--input", f"{path}:inputs", "--batch-size", "2", "--mode",
                 "both", "--repeats", "2", "--warmup", "0", "--format", "json"]) == 0
    timings = json.loads(capsys.readouterr().out)["timings"]
    assert [t["mode"] for t in timings] == ["train", "eval"] and timings[0]["flops"] > 0


def _tiny_bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=64, num_labels=3)
    return transformers.BertForSequenceClassification(config).eval()


def test_hf_bert_from_a_config():
    bert = _tiny_bert()
    ids, mask = torch.randint(0, 100, (2, 16)), torch.ones(2, 16, dtype=torch.long)
    # per layer, N = 32 tokens, E = 32, F = 64: QKV 3*N*E*E = 98,304; QK^T + AV 2*B*S*S*E = 32,768;
    # out N*E*E = 32,768; FFN 2*N*E*F = 131,072 -> 294,912; x2 layers = 589,824;
    # pooler B*E*E = 2,048; classifier B*E*3 = 192 -> 592,064
    expected = 2 * (3 * 32 * 32 * 32 + 2 * 2 * 16 * 16 * 32 + 32 * 32 * 32 + 2 * 32 * 32 * 64) \
        + 2 * 32 * 32 + 2 * 32 * 3
    assert expected == 592_064
    assert count(bert, (ids,)).total().macs == expected
    with pytest.raises(InputSpecError, match="device 'cpu'"):  # the mask path reads values
        count(bert, {"input_ids": ids, "attention_mask": mask})
    cpu = count(bert, {"input_ids": ids, "attention_mask": mask}, device="cpu")
    assert cpu.total().macs == expected and not cpu.incomplete
    train = count(bert, {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1])},
                  device="cpu", mode="train", optimizer="adam")
    assert train.total("backward").macs > 0 and not train.incomplete


def test_hf_bert_is_timed_with_keyword_inputs():
    from dnncost.core.inputs import InputSpec
    from dnncost.measuring.timing import time_model

    bert = _tiny_bert()
    spec = InputSpec(factory=lambda batch: {"input_ids": torch.randint(0, 100, (batch, 16)),
                                            "attention_mask": torch.ones(batch, 16, dtype=torch.long)})
    # counting on meta fails on the mask's .item(), so time_model counts the step on the CPU
    timing = time_model(bert, spec, batch_size=2, mode="eval", warmup=0, steps=2, probe=False)
    assert timing.cost is not None and timing.cost.total().macs == 592_064  # the hand count above
    assert timing.measurement.n == 2


def test_text_model_is_predicted_from_token_ids(tmp_path, monkeypatch, capsys):
    from datetime import datetime, timezone

    from dnncost.prediction.storage import save_operator_model
    from test_predict import tiny_model

    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    path = save_operator_model(tiny_model(fingerprint="elsewhere", threads=torch.get_num_threads(),
                                          torch_version=str(torch.__version__),
                                          created=datetime.now(timezone.utc).isoformat()))
    net = tmp_path / "text.py"
    net.write_text(textwrap.dedent("""
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(100, 16)
                self.gru = nn.GRU(16, 8, batch_first=True)
                self.head = nn.Linear(8, 3)

            def forward(self, ids):
                out, _ = self.gru(self.emb(ids))
                return self.head(out[:, -1])
    """))
    # a GRU's unsafe_split / transpose_ are views now, so predict does not refuse the network
    assert main(["predict", f"{net}:Net", "--input", "5:int64:100", "--batch-size", "2",
                 "--calibration", path, "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert all(p["predicted_step_ms"] > 0 for p in payload["predictions"])
