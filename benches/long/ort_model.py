#!/usr/bin/env python3
"""The ONNX Runtime peer's model: MODEL_DIR as ONNX, f32 and dynamically quantised to int8.

    ort_model.py MODEL_DIR

Writes MODEL_DIR/onnx/model.onnx (weights in model.onnx.data) with `torch.onnx.export` (the
dynamo exporter; the sequence length dynamic; eager attention, since the exporter does not
convert SDPA with grouped-query heads), then MODEL_DIR/onnx/model.int8.onnx with
`onnxruntime.quantization.quantize_dynamic` (int8 weights per tensor, activations quantised per
call: ORT's documented recipe for transformers on the CPU). Checks that ONNX Runtime's f32
model gives transformers' reward on a short input. Skips what exists.
"""
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import transformers
from onnxruntime.quantization import QuantType, quantize_dynamic


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).logits


def main():
    model_dir = Path(sys.argv[1])
    out = model_dir / "onnx"
    out.mkdir(exist_ok=True)
    f32, int8 = out / "model.onnx", out / "model.int8.onnx"
    ids = torch.arange(1, 41).reshape(1, 40)
    if not f32.exists():
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            want = model(input_ids=ids).logits.numpy()
            program = torch.onnx.export(Logits(model), (ids,), dynamic_shapes=({1: torch.export.Dim("seq")},),
                                        input_names=["input_ids"], output_names=["logits"], dynamo=True)
        program.save(str(f32), external_data=True)
        got = onnxruntime.InferenceSession(str(f32), providers=["CPUExecutionProvider"]).run(
            None, {"input_ids": ids.numpy()})[0]
        assert np.allclose(got, want, atol=1e-3), (got, want)
        print(f"{f32}: reward {got[0, 0]:.5f}, transformers {want[0, 0]:.5f}", file=sys.stderr)
    if not int8.exists():
        quantize_dynamic(f32, int8, weight_type=QuantType.QInt8, use_external_data_format=True)


if __name__ == "__main__":
    main()
