"""The peer's and dmoerm's models of benches/browser, all from all-MiniLM-L6-v2 (the default
model's backbone, from the PyPI wheel).

    python export.py MINILM_DIR WORK_DIR

Writes:
- WORK_DIR/minilm: MiniLM as ONNX in the layout transformers.js reads from a local directory:
  config.json, onnx/model.onnx (fp32: the last hidden state, what a reward model's backbone
  gives its heads) and onnx/model_quantized.onnx (transformers.js `dtype: "q8"`: ONNX
  Runtime's dynamic quantization, int8 weights); exits non-zero when the fp32 graph differs
  from PyTorch by more than 1e-4;
- WORK_DIR/minilm-rm: a plain reward model on the same weights as transformers'
  `save_pretrained` writes it (`BertForSequenceClassification`, one label, a seeded random
  classifier), which dmoerm loads as it is: one score is one pass of one sequence;
- WORK_DIR/default-f32: the default model (models/default/model.dmoerm) unpacked to f32
  (benches/compare/bundles.py), for dmoerm's fp32 rows.
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import BertForSequenceClassification, BertModel, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "compare"))
from bundles import unpack  # noqa: E402

TOLERANCE = 1e-4


class Backbone(torch.nn.Module):
    """BertModel called with its three inputs by name (its positional order is not theirs)."""

    def __init__(self, model: BertModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state


def main() -> None:
    src, work = Path(sys.argv[1]), Path(sys.argv[2])
    root = Path(__file__).resolve().parent.parent.parent
    unpack(root / "models/default/model.dmoerm", work / "default-f32", 128)
    plain_rm(src, work / "minilm-rm")
    export_onnx(src, work / "minilm")


def load(src: Path) -> BertModel:
    """MiniLM with eager attention: a graph traced from it applies the mask it is given (SDPA's
    path may be traced with a shortcut for the example's mask)."""
    return BertModel.from_pretrained(src, add_pooling_layer=False, attn_implementation="eager").eval()


def plain_rm(src: Path, out: Path) -> None:
    """MiniLM with a one-label classifier, as a Hugging Face reward model directory."""
    if (out / "config.json").exists():
        return
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(src, num_labels=1)
    model.save_pretrained(out, safe_serialization=True)
    special = {t: f"[{t.split('_')[0].upper()}]" for t in ["cls_token", "sep_token", "pad_token", "unk_token", "mask_token"]}
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(src / "tokenizer.json"), model_max_length=512, **special)
    tokenizer.save_pretrained(out)


def export_onnx(src: Path, out: Path) -> None:
    """MiniLM as ONNX for transformers.js, checked against PyTorch."""
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", out / "config.json")
    fp32, q8 = out / "onnx" / "model.onnx", out / "onnx" / "model_quantized.onnx"
    names = ["input_ids", "attention_mask", "token_type_ids"]
    if not fp32.exists():
        ids = torch.randint(1000, 20000, (2, 16))
        mask = torch.ones_like(ids)
        mask[1, 10:] = 0  # a padded row, so that masking is part of the graph
        example = (ids, mask, torch.zeros_like(ids))
        axes = {n: {0: "batch", 1: "sequence"} for n in names}
        axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
        torch.onnx.export(Backbone(load(src)), example, str(fp32), input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    if not q8.exists():
        quantize_dynamic(str(fp32), str(q8), weight_type=QuantType.QInt8)

    # the check: random ids, padded rows, against PyTorch (a fresh copy of the model: exporting
    # changes the state of the one it traced, which then computes other numbers)
    model = load(src)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (3, 75), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0
    types = torch.zeros_like(ids)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state.numpy()
    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip(names, (ids.numpy(), mask.numpy(), types.numpy()))))[0]
    real = mask.numpy().astype(bool)
    diff = float(np.abs(got - want)[real].max())
    print(f"ONNX fp32 vs PyTorch: max |difference| {diff:.2e} (tolerance {TOLERANCE:g})", file=sys.stderr)
    if not diff <= TOLERANCE:
        sys.exit(f"the exported graph does not match PyTorch: {diff}")


if __name__ == "__main__":
    main()
