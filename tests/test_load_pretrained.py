"""
How the tools load a model (`modeling_pim.tools.infer.load_pretrained`): a PIM folder with this package's classes,
never with the copy of the model code saved beside it, so that a folder saved by an older version (before `PimModel`)
works in `pim-infer` and `pim-heatmap`.
"""

import csv
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from modeling_pim import PimForImageClassification, PimImageProcessor
from modeling_pim.tools import pim_heatmap, pim_infer
from modeling_pim.tools.infer import load_pretrained


OLD_FOLDER = Path(__file__).parent / "fixtures" / "pim_saved_before_pim_model"
# Stands for the code files an older version saved beside its model (the fixture's own were removed): running them is
# the failure this guards against.
OLD_CODE = 'raise ImportError("the copy of the model code saved with the folder was run")\n'


@pytest.fixture(scope="module")
def old_folder(tmp_path_factory) -> Path:
    """A copy of the folder saved before `PimModel`, with a processor and stand-ins for its code files."""
    folder = tmp_path_factory.mktemp("saved_before_pim_model") / "model"
    shutil.copytree(OLD_FOLDER, folder)
    PimImageProcessor.for_image_size(32).save_pretrained(folder)
    for code_file in ("configuration_pim.py", "modeling_pim.py", "image_processing_pim.py"):
        (folder / code_file).write_text(OLD_CODE)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        PIL.Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / name)
    return folder


def expected_probabilities(folder: Path, image: Path) -> torch.Tensor:
    """The final head's probabilities of this package's model on the image, as the processor saved with it sees it."""
    model = PimForImageClassification.from_pretrained(folder).eval()
    processor = PimImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        return model(**processor(images=PIL.Image.open(image), return_tensors="pt")).logits.softmax(-1)[0]


def test_load_pretrained_uses_this_package_for_a_pim_folder(old_folder):
    model, processor = load_pretrained(str(old_folder))
    assert type(model) is PimForImageClassification and type(processor) is PimImageProcessor
    assert model.pim.backbone is not None


def test_pim_infer_on_a_folder_saved_before_pim_model(old_folder, images, tmp_path):
    assert pim_infer.main([str(old_folder), str(images), "--output_dir", str(tmp_path / "out")]) == 0

    with open(tmp_path / "out" / "predictions.csv", newline="") as file:
        rows = {row["path"]: row for row in csv.DictReader(file)}
    id2label = PimForImageClassification.config_class.from_pretrained(old_folder).id2label
    assert sorted(rows) == ["a.png", "b.png", "c.png"]
    for name, row in rows.items():
        probabilities = expected_probabilities(old_folder, images / name)
        assert row["top1_label"] == id2label[int(probabilities.argmax())]
        assert float(row["top1_probability"]) == pytest.approx(probabilities.max().item(), abs=1e-6)


def test_pim_heatmap_on_a_folder_saved_before_pim_model(old_folder, images, tmp_path, capsys):
    output = tmp_path / "heatmap.png"
    assert pim_heatmap.main([str(old_folder), str(images / "a.png"), "--output", str(output)]) == 0

    probabilities = expected_probabilities(old_folder, images / "a.png")
    label = PimForImageClassification.config_class.from_pretrained(old_folder).id2label[int(probabilities.argmax())]
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"predicted: {label} ({probabilities.max().item():.1%})",
        f"Wrote {output}.",
    ]
    assert output.read_bytes().startswith(b"\x89PNG")
