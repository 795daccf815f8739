"""pim-export: ONNX and torch.export programs of tiny PIM models, checked against eager PyTorch."""

import json
import shutil
import zipfile
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch

from modeling_pim import PimImageProcessor
from modeling_pim.tools import export, pim_export
from test_modeling_pim import tiny_model


MODELS = {
    "cnn": ("test_resnet", {}),
    "vit": ("test_vit", {}),
    "swin-paper-taps": ("swin", {"feature_taps": "paper"}),
}


def saved_model(folder, family: str = "test_resnet", **overrides):
    model = tiny_model(family, **overrides).eval()
    model.save_pretrained(folder)
    PimImageProcessor.for_image_size(64).save_pretrained(folder)
    return model


@pytest.mark.parametrize("kind", MODELS)
def test_onnx_export_takes_any_batch_and_gives_the_pytorch_logits(tmp_path, capsys, kind):
    family, overrides = MODELS[kind]
    model = saved_model(tmp_path / "model", family, **overrides)
    output = tmp_path / "deploy" / "model.onnx"
    assert pim_export.main([str(tmp_path / "model"), "--output", str(output)]) == 0
    assert "ONNX opset 18" in capsys.readouterr().out
    assert [path.name for path in output.parent.iterdir()] == ["model.onnx"]  # no staging folder left

    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("pixel_values", ["batch", 3, 64, 64])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("logits", ["batch", 5])]
    pixel_values = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(pixel_values).logits
    logits = torch.from_numpy(session.run(["logits"], {"pixel_values": pixel_values.numpy()})[0])
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)
    metadata = {prop.key: prop.value for prop in onnx.load(str(output)).metadata_props}
    assert json.loads(metadata["id2label"]) == {str(i): label for i, label in model.config.id2label.items()}
    assert onnx.load(str(output)).opset_import[0].version == 18


def test_pt2_export_loads_with_torch_export_and_gives_the_pytorch_logits(tmp_path):
    model = saved_model(tmp_path / "model")
    output = tmp_path / "model.pt2"
    assert pim_export.main([str(tmp_path / "model"), "--output", str(output)]) == 0
    program = torch.export.load(output).module()
    pixel_values = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(program(pixel_values), model(pixel_values).logits, rtol=0, atol=1e-4)
    with zipfile.ZipFile(output) as archive:
        id2label = next(name for name in archive.namelist() if name.endswith("id2label.json"))
        assert json.loads(archive.read(id2label))["0"] == model.config.id2label[0]


def test_an_opset_the_exporter_cannot_convert_to_is_refused_and_leaves_no_file(tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(Path(__file__).parent / "fixtures" / "pim_saved_before_pim_model", model_dir)  # a tiny model
    output = tmp_path / "deploy" / "model.onnx"
    assert pim_export.main([str(model_dir), "--output", str(output), "--opset", "17"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        "pim-export: error: --opset 17: the ONNX exporter could not convert the model to opset 17 (it produced opset "
        "18): nothing was written; use --opset 18 or higher."
    )
    assert list(output.parent.iterdir()) == []


def test_an_export_that_differs_from_pytorch_is_refused_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    saved_model(tmp_path / "model")
    monkeypatch.setattr(export, "_write_pt2", lambda model, example, path, id2label: path.write_bytes(b"program"))
    monkeypatch.setattr(export, "_run_pt2", lambda path: lambda pixel_values: torch.full((len(pixel_values), 5), 0.5))
    output = tmp_path / "deploy" / "model.pt2"
    assert pim_export.main([str(tmp_path / "model"), "--output", str(output)]) == 2
    stderr = capsys.readouterr().err
    error = stderr.strip().splitlines()[-1]  # after transformers' loading progress bar
    assert "Traceback" not in stderr and error.startswith(f"pim-export: error: --output '{output}': the exported program's logits (torch.export)")
    assert "more than --tolerance 0.0001: nothing was written" in error
    assert list(output.parent.iterdir()) == []


def test_bad_flags_are_one_error_line(tmp_path, capsys):
    assert pim_export.main([str(tmp_path), "--output", str(tmp_path / "model.txt")]) == 2
    assert "'.txt' is not a supported format; use one of .onnx, .pt2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        pim_export.main([str(tmp_path), "--output", "model.onnx", "--tolerance", "0"])
    assert exit_info.value.code == 2 and "--tolerance must be positive" in capsys.readouterr().err
