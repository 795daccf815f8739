"""
Gradio demo of a PIM model, staged as the `app.py` of a Space by `push_to_hub.py --space_id`: an image in, the top-5
classes of the final head and the `pim-heatmap` figure (heatmap of the discriminative regions, selected tokens) out.

The model is `PIM_MODEL` (a Hub id or a local folder) when set, else the first entry of `models:` in the README front
matter next to this file: its weights, configuration and processor come from there, and it is built with the PIM
classes of the `modeling_pim/` folder that `push_to_hub.py` stages beside this file, with the heatmap code written for
them ([`modeling_pim.tools.infer.load_pretrained`]); the images in `examples/` are offered as examples.

Run locally: `PIM_MODEL=<model id or folder> python app.py` (Gradio's `GRADIO_SERVER_PORT` and `GRADIO_SERVER_NAME`
choose where it listens).
"""

import io
import os
from pathlib import Path

import gradio as gr
import PIL.Image
from huggingface_hub import SpaceCard

from modeling_pim.tools.heatmap import render_heatmap
from modeling_pim.tools.infer import load_model_and_processor, resolve_device


HERE = Path(__file__).resolve().parent
NUM_TOP_CLASSES = 5
EXAMPLES_DIR = HERE / "examples"


def configured_model() -> str:
    """`PIM_MODEL`, else the first model listed in the README front matter of the Space."""
    return os.environ.get("PIM_MODEL") or SpaceCard.load(HERE / "README.md").data.models[0]


def build_demo(model_name_or_path: str) -> gr.Interface:
    """The demo of the model `model_name_or_path`: an image in; the class probabilities and the heatmap figure out."""
    model, processor = load_model_and_processor(model_name_or_path, resolve_device("auto"))
    id2label = {int(class_id): name for class_id, name in model.config.id2label.items()}

    def classify(image: PIL.Image.Image | None) -> tuple[dict[str, float], PIL.Image.Image]:
        if image is None:
            raise gr.Error("Upload an image first.")
        figure = io.BytesIO()
        result, _ = render_heatmap(model, processor, image, figure)
        probabilities = {id2label[class_id]: float(value) for class_id, value in enumerate(result.probabilities)}
        return probabilities, PIL.Image.open(figure)

    examples = [[str(path)] for path in sorted(EXAMPLES_DIR.glob("*")) if path.is_file()]
    return gr.Interface(
        classify,
        gr.Image(type="pil", image_mode=None, label="Image"),
        [
            gr.Label(num_top_classes=NUM_TOP_CLASSES, label="Top-5 classes"),
            gr.Image(type="pil", format="png", label="Heatmap of the discriminative regions"),
        ],
        title=f"PIM: {model_name_or_path}",
        description=(
            "Fine-grained classification with PIM (Chou et al., arXiv 2202.03822). Left: the five most likely "
            "classes of the model's final head. Right: the image, the heatmap of the predicted class (its token "
            "logits in every layer, normalised and averaged) and its overlay on the model's input, with the tokens "
            "PIM's selector kept as dots."
        ),
        examples=examples or None,
        flagging_mode="never",
        api_name="predict",
    )


if __name__ == "__main__":
    build_demo(configured_model()).launch()
