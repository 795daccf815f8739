"""
The Hub model card of a trained PIM model, built from its config and the training outputs (pure functions).

Training outputs read from the model folder, all optional (the card is valid without them):

- `eval_results.json`, `test_results.json`: `Trainer.save_metrics` files of the validation and test splits, keys
  `{eval,test}_accuracy`, `_top5_accuracy`, `_mean_per_class_accuracy` (the final head), `_num_samples`, and the
  per-head diagnostics `_layer{i}_accuracy` (and `_combiner_accuracy`, if present).
- `training_recipe.json`: `{"model_args": {...}, "data_args": {...}, "training_args": {...}}` written by
  `train_pim.py`. The dataset is `data_args["dataset"]` (an official archive of `modeling_pim.data.archives.ARCHIVES`,
  `folders`, `synthetic`, or `hub` with the Hub id or local folder in `data_args["dataset_name"]`); the base model is
  `model_args["model_name_or_path"]` when training started from a PIM checkpoint of the Hub, else the timm weights of
  the backbone.
- `data_report.json`: only its `source` is read, to name the archive's configuration that was loaded (the
  FGVC-Aircraft annotation level, the iNaturalist version found in the folder); no local path is published.
"""

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .. import PimConfig
from ..data.archives import ARCHIVES


logger = logging.getLogger(__name__)


METRICS_FILES = {"test": "test_results.json", "eval": "eval_results.json"}
RECIPE_FILE = "training_recipe.json"
DATA_REPORT_FILE = "data_report.json"
# Final-head metrics: key suffix → (model-index metric type, display name).
FINAL_HEAD_METRICS = {
    "accuracy": ("accuracy", "Top-1 accuracy"),
    "top5_accuracy": ("top_5_accuracy", "Top-5 accuracy"),
    "mean_per_class_accuracy": ("mean_per_class_accuracy", "Mean per-class accuracy"),
}
DIAGNOSTIC_METRIC = re.compile(r"^(layer\d+|combiner)_accuracy$")
SPLIT_NAMES = {"test": "test", "eval": "validation"}
# `--dataset` of train_pim.py other than the official archives (`ARCHIVES`, which name themselves) and `hub` →
# (display name, model-index dataset type).
OTHER_DATASETS = {
    "folders": ("custom image folders", "imagefolder"),
    "synthetic": ("the synthetic fine-grained demo set", "synthetic"),
}
LOCAL_DATASET = ("a local dataset", "local")
UNKNOWN_DATASET = ("an unspecified dataset", "unknown")
TRAINING_ARGS_SHOWN = (
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "optim",
    "optim_args",
    "weight_decay",
    "lr_scheduler_type",
    "warmup_steps",
    "max_grad_norm",
    "label_smoothing_factor",
    "bf16",
    "fp16",
    "seed",
)
# Arguments left out of the card: local paths and secrets mean nothing (or too much) to readers of the Hub.
PRIVATE_ARGUMENT = re.compile(r"(^|_)(token|dir|path|file|cache|weights)(_|$)")
# The papers' BibTeX entries, the one source of the citations: the README's "Citation" section must hold them verbatim
# (tests/test_push_to_hub.py checks). HERBS is cited by its arXiv title and id: its authors' repository
# (chou141253/FGVC-HERBS, readme.md at f3deb47) lists no author names to check an author list against.
CITATION = """@article{chou2022novel,
  title   = {A Novel Plug-in Module for Fine-Grained Visual Classification},
  author  = {Chou, Po-Yung and Lin, Cheng-Hung and Kao, Wen-Chung},
  journal = {arXiv preprint arXiv:2202.03822},
  year    = {2022}
}"""
HERBS_CITATION = """@misc{herbs2023,
  title         = {Fine-grained Visual Classification with High-temperature Refinement and Background Suppression},
  eprint        = {2303.06442},
  archivePrefix = {arXiv},
  primaryClass  = {cs.CV},
  year          = {2023},
  url           = {https://arxiv.org/abs/2303.06442}
}"""


@dataclass
class TrainingOutputs:
    """What a training run left next to the model; every part may be empty."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    recipe: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_source: str | None = None  # the `source` of data_report.json, e.g. "iNaturalist 2021 at /data/inat"


def read_training_outputs(model_dir: str | os.PathLike) -> TrainingOutputs:
    """
    Reads `test_results.json`, `eval_results.json`, `training_recipe.json` and the `source` of `data_report.json` of
    `model_dir` when present.
    """
    model_dir = Path(model_dir)
    outputs = TrainingOutputs()
    for split, filename in METRICS_FILES.items():
        path = model_dir / filename
        if path.is_file():
            outputs.metrics[split] = json.loads(path.read_text(encoding="utf-8"))
    if (model_dir / RECIPE_FILE).is_file():
        outputs.recipe = json.loads((model_dir / RECIPE_FILE).read_text(encoding="utf-8"))
    if (model_dir / DATA_REPORT_FILE).is_file():
        outputs.data_source = json.loads((model_dir / DATA_REPORT_FILE).read_text(encoding="utf-8")).get("source")
    return outputs


@dataclass(frozen=True)
class TrainingDataset:
    """
    The training data as the model card names it: never a local path.

    Attributes:
        name (`str`): shown in the card and as the model-index dataset name (e.g. `"FGVC-Aircraft (family)"`).
        type (`str`): the model-index dataset type: the Hub id when the data is on the Hub, else an identifier
            (the `--dataset` of an archive, `imagefolder`, `synthetic`, `local`, `unknown`).
        hub_id (`str`, *optional*): the Hub dataset, listed in the card's `datasets` metadata.
        config (`str`, *optional*): the configuration trained on (annotation level, version, Hub config).
        homepage (`str`, *optional*): the official page of an archive.
        reference (`str`, *optional*): the publication that describes an archive.
    """

    name: str
    type: str
    hub_id: str | None = None
    config: str | None = None
    homepage: str | None = None
    reference: str | None = None

    @property
    def linked_name(self) -> str:
        """The name as Markdown, linked to the official page of an archive, else to the Hub dataset, if any."""
        if self.homepage is not None:
            return f"[{self.name}]({self.homepage})"
        if self.hub_id is not None:
            return f"[`{self.name}`](https://huggingface.co/datasets/{self.hub_id})"
        return self.name


def is_hub_dataset_id(name: str) -> bool:
    """Whether `--dataset_name` `name` is a Hub id (`user/name` or `name`), not a folder of this machine."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not os.path.exists(name)


def _archive_configuration(dataset: str, data_args: dict[str, Any], data_source: str | None) -> str | None:
    """The configuration of archive `dataset` the run loaded: as given, else the one the data report names."""
    archive = ARCHIVES[dataset]
    configuration = data_args.get("dataset_config_name")
    if configuration is None and data_source is not None:
        configuration = next(
            (name for name in archive.configurations if data_source.startswith(f"{archive.display_name(name)} at ")),
            None,
        )
    return configuration


def describe_dataset(recipe: dict[str, dict[str, Any]], data_source: str | None = None) -> TrainingDataset:
    """
    The training data named by the recipe's `data_args`: an official archive by its name, page and reference (with the
    configuration given, else the one `data_source`, the data report's, names); a Hub dataset by its id; a local
    folder given as `--dataset_name` as "a local dataset" (logged: its path is not published).
    """
    data_args = recipe.get("data_args") or {}
    dataset = data_args.get("dataset")
    if dataset in ARCHIVES:
        archive = ARCHIVES[dataset]
        configuration = _archive_configuration(dataset, data_args, data_source)
        return TrainingDataset(
            archive.display_name(configuration),
            archive.hub_dataset or dataset,
            hub_id=archive.hub_dataset,
            config=configuration,
            homepage=archive.homepage,
            reference=archive.reference,
        )
    dataset_name = data_args.get("dataset_name")
    if dataset == "hub" and dataset_name:
        if is_hub_dataset_id(dataset_name):
            configuration = data_args.get("dataset_config_name")
            return TrainingDataset(dataset_name, dataset_name, hub_id=dataset_name, config=configuration)
        logger.warning(
            "The model was trained on a local dataset (--dataset_name is a folder of this machine): the card says "
            f"\"{LOCAL_DATASET[0]}\" and does not publish its path; upload the data to the Hub and train from its id "
            "to link it."
        )
        return TrainingDataset(*LOCAL_DATASET)
    return TrainingDataset(*OTHER_DATASETS.get(dataset, UNKNOWN_DATASET))


def base_model_id(config: PimConfig, recipe: dict[str, dict[str, Any]]) -> str | None:
    """
    What training started from: the Hub PIM checkpoint of `model_args["model_name_or_path"]`, else the Hub repository
    of the backbone's timm weights (`timm/<name>.<tag>`) when `backbone_pretrained`; `None` for a local checkpoint or
    a backbone trained from scratch.
    """
    start = (recipe.get("model_args") or {}).get("model_name_or_path")
    if start:
        return None if os.path.exists(start) else start
    if not config.backbone_pretrained:
        return None
    pretrained_cfg = timm.models.get_pretrained_cfg(config.backbone)
    return getattr(pretrained_cfg, "hf_hub_id", None) or None


def split_metrics(metrics: dict[str, float], prefix: str) -> tuple[dict[str, float], dict[str, float]]:
    """`(final-head metrics, per-head diagnostics)` of one `save_metrics` file, keys without the `prefix_`."""
    final, diagnostics = {}, {}
    for key, value in metrics.items():
        name = key.removeprefix(f"{prefix}_")
        if name in FINAL_HEAD_METRICS:
            final[name] = float(value)
        elif DIAGNOSTIC_METRIC.match(name):
            diagnostics[name] = float(value)
    return final, diagnostics


def eval_results(outputs: TrainingOutputs, dataset: TrainingDataset) -> list[EvalResult]:
    """
    The model-index entries: the final head's metrics on the test split. Validation metrics stay out: the validation
    split chose the checkpoint, so they are not a result (the card's body shows them, labelled).
    """
    results = []
    if "test" in outputs.metrics:
        final, _ = split_metrics(outputs.metrics["test"], "test")
        for name, value in final.items():
            metric_type, display_name = FINAL_HEAD_METRICS[name]
            results.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Fine-grained image classification",
                    dataset_type=dataset.type,
                    dataset_name=dataset.name,
                    dataset_config=dataset.config,
                    dataset_split=SPLIT_NAMES["test"],
                    metric_type=metric_type,
                    metric_name=display_name,
                    metric_value=round(value, 6),
                )
            )
    return results


def _shown_arguments(arguments: dict[str, Any], keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The arguments worth showing: set (not `None`, not a `-1` "unused" marker), not local paths or secrets."""
    return {
        key: value
        for key, value in arguments.items()
        if (keys is None or key in keys)
        and value is not None
        and value != -1
        and not PRIVATE_ARGUMENT.search(key)
        and not (isinstance(value, str) and os.path.isabs(value))
    }


def recipe_section(recipe: dict[str, dict[str, Any]]) -> str:
    """The training recipe as YAML: the recipe's model and data arguments and the main training arguments."""
    if not recipe:
        return (
            "No `training_recipe.json` was found next to the model; the architecture is fully described by "
            "`config.json`."
        )
    data_args = dict(recipe.get("data_args") or {})
    if data_args.get("dataset_name") and not is_hub_dataset_id(data_args["dataset_name"]):
        del data_args["dataset_name"]  # a folder of the training machine (see `describe_dataset`)
    shown = {
        "model_args": _shown_arguments(recipe.get("model_args") or {}),
        "data_args": _shown_arguments(data_args),
        "training_args": _shown_arguments(recipe.get("training_args") or {}, TRAINING_ARGS_SHOWN),
    }
    shown = {key: value for key, value in shown.items() if value}
    text = yaml.safe_dump(shown, sort_keys=False, allow_unicode=True, default_flow_style=None)
    return (
        f"Arguments of `train_pim.py` that were set (local paths and tokens left out):\n\n```yaml\n{text}```"
    )


def metrics_section(outputs: TrainingOutputs) -> str:
    """The final head's metrics per split, then the per-head numbers labelled as diagnostics."""
    rows, diagnostic_rows = [], []
    for prefix, metrics in outputs.metrics.items():
        final, diagnostics = split_metrics(metrics, prefix)
        split = SPLIT_NAMES[prefix]
        if f"{prefix}_num_samples" in metrics:
            split += f" ({int(metrics[f'{prefix}_num_samples'])} images)"
        for name, value in final.items():
            rows.append(f"| {split} | {FINAL_HEAD_METRICS[name][1]} | {value:.2%} |")
        for name, value in sorted(diagnostics.items()):
            diagnostic_rows.append(f"| {split} | `{name}` | {value:.2%} |")
    if not rows:
        return "No evaluation results were found next to the model (`eval_results.json`, `test_results.json`)."
    text = (
        "Accuracy of the model's prediction, the final head (`logits`), on each split:\n\n"
        "| split | metric | value |\n|---|---|---|\n" + "\n".join(rows)
    )
    if "eval" in outputs.metrics and (outputs.recipe.get("training_args") or {}).get("load_best_model_at_end"):
        text += (
            "\n\nThe validation split chose the checkpoint (`load_best_model_at_end`), so its numbers are "
            "optimistic; `train_pim.py` evaluates the test split once, after training."
        )
    if diagnostic_rows:
        text += (
            "\n\n*Diagnostics*, not results: the accuracy of each intermediate head alone. The original code reported "
            "the best of these heads chosen on the test set, an oracle; this card does not.\n\n"
            "| split | head | accuracy |\n|---|---|---|\n" + "\n".join(diagnostic_rows)
        )
    return text


def usage_section(repo_id: str, space_id: str | None = None, has_example: bool = False) -> str:
    """How to use the model: the hosted widget's limit, the demo Space, `pipeline`, the Auto classes, Endpoints."""
    example = (
        " The example on this page shows the model's own answer for an image of the repository, computed when this "
        "card was built."
        if has_example
        else ""
    )
    space = (
        f"Try it on your own images in the demo Space [`{space_id}`](https://huggingface.co/spaces/{space_id}), "
        "which also shows the heatmap of the regions that drove each prediction, or run it yourself:"
        if space_id
        else "Run it yourself:"
    )
    return f"""The Hub's hosted inference widget does not run models whose code lives in their repository (custom code,
`trust_remote_code=True`), so this page cannot classify an image you upload.{example} {space}

```bash
pip install transformers timm torch torchvision
```

```python
from transformers import pipeline

classifier = pipeline("image-classification", model="{repo_id}", trust_remote_code=True)
classifier("bird.jpg", top_k=5)
```

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
model = AutoModelForImageClassification.from_pretrained("{repo_id}", trust_remote_code=True).eval()
inputs = processor(images=Image.open("bird.jpg"), return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits  # the final head: the model's prediction
print(model.config.id2label[logits.argmax(-1).item()])
```

### Inference Endpoints

The repository's `handler.py` serves the model on [Inference Endpoints](https://huggingface.co/docs/inference-endpoints)
(its `requirements.txt` installs the transformers and timm versions the model's code needs). Send the image itself
(`Content-Type: image/jpeg`), or JSON with the image file base64-encoded; the answer is the classes, best first:

```bash
curl ENDPOINT_URL -H "Authorization: Bearer $HF_TOKEN" -H "Content-Type: application/json" \\
  -d "{{\\"inputs\\": \\"$(base64 -w0 bird.jpg)\\", \\"parameters\\": {{\\"top_k\\": 5}}}}"
# [{{"label": "...", "score": 0.93}}, ...]
```"""


def details_section(config: PimConfig, num_parameters: int | None) -> str:
    """The architecture in a table, from the config."""
    rows = [
        ("Backbone (timm)", f"`{config.backbone}`"),
        ("Feature taps", f"`{config.feature_taps}`"),
        ("Input size", f"{config.image_size}×{config.image_size}"),
        ("Classes", str(config.num_labels)),
        ("Feature pyramid", f"{config.fpn_size} channels" if config.use_fpn else "off"),
        ("Selected tokens per layer", ", ".join(map(str, config.num_selects)) if config.use_selection else "off"),
        ("Graph combiner", "on" if config.use_combiner else "off"),
    ]
    if config.use_bottom_up_fpn:
        rows += [
            ("Bottom-up pyramid (HERBS)", "on"),
            ("Token selection rule", f"`{config.selection_rule}`"),
            (
                "Refinement (HERBS)",
                f"lambda_b0 {config.lambda_b0}, temperature {config.refinement_temperature} halved every "
                f"{config.refinement_temperature_halving_epochs} epochs",
            ),
        ]
    if num_parameters is not None:
        rows.append(("Parameters", f"{num_parameters / 1e6:.1f} M"))
    return "| | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


def herbs_note(config: PimConfig) -> str:
    """The sentence a HERBS model's card adds to PIM's description (empty for PIM)."""
    if not config.use_bottom_up_fpn:
        return ""
    return (
        "\nThis model is HERBS (Chou et al., \"Fine-grained Visual Classification with High-temperature Refinement "
        "and Background Suppression\", [arXiv 2303.06442](https://arxiv.org/abs/2303.06442)): a bottom-up pyramid "
        "after the top-down one, tokens selected by their probability of the predicted class, and the top-down "
        "layers refined towards the bottom-up ones at a temperature halved during training."
    )


def citation_section(config: PimConfig, dataset: TrainingDataset) -> str:
    """The BibTeX of the method (PIM, and HERBS for a HERBS model), then the publication of an archive trained on."""
    entries = [CITATION, HERBS_CITATION] if config.use_bottom_up_fpn else [CITATION]
    text = "```bibtex\n" + "\n\n".join(entries) + "\n```"
    if dataset.reference is not None:
        text += f"\n\nThe training data, {dataset.linked_name}: {dataset.reference}."
    return text


def build_model_card(
    config: PimConfig,
    repo_id: str,
    outputs: TrainingOutputs | None = None,
    num_parameters: int | None = None,
    license_id: str | None = None,
    widget: dict[str, Any] | None = None,
    space_id: str | None = None,
) -> ModelCard:
    """
    The model card of a PIM model: Hub metadata (library, pipeline tag, tags, base model, dataset, metrics,
    model-index, widget) and a body with the architecture, usage, final-head results, training recipe and citation.

    Args:
        config ([`PimConfig`]): the model's config.
        repo_id (`str`): the Hub repository the card is for (used in the usage code).
        outputs ([`TrainingOutputs`], *optional*): metrics and recipe of the training run.
        num_parameters (`int`, *optional*): shown in the architecture table.
        license_id (`str`, *optional*): a Hub license id (e.g. `"mit"`); omitted from the metadata when not given.
        widget (`dict`, *optional*): the example of the model page, `{"src": <file of the repository>, "output":
            [{"label": str, "score": float}, ...]}` ([`modeling_pim.hub.widget`]); no `widget:` when not given.
        space_id (`str`, *optional*): the demo Space, linked under "How to use".
    """
    outputs = outputs or TrainingOutputs()
    dataset = describe_dataset(outputs.recipe, outputs.data_source)
    base_model = base_model_id(config, outputs.recipe)
    model_name = repo_id.split("/")[-1]
    results = eval_results(outputs, dataset)
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=[
            *(["pim", "herbs"] if config.use_bottom_up_fpn else ["pim"]),
            "fine-grained-visual-classification",
            "timm",
            "image-classification",
            config.backbone,
        ],
        base_model=base_model,
        datasets=[dataset.hub_id] if dataset.hub_id else None,
        metrics=["accuracy"],
        license=license_id,
        eval_results=results or None,
        widget=[{"example_title": "Example image", **widget}] if widget else None,
    )
    trained_on = f"{dataset.linked_name} ({config.num_labels} classes)"
    base = f", starting from [`{base_model}`](https://huggingface.co/{base_model})" if base_model else ""
    body = f"""
# {model_name}

PIM, the plug-in module for fine-grained visual classification of Chou et al.
([arXiv 2202.03822](https://arxiv.org/abs/2202.03822)), on a timm `{config.backbone}` backbone{base}, trained on
{trained_on} at {config.image_size}×{config.image_size} pixels.
A feature pyramid over the backbone's layers classifies every token, a weakly supervised selector keeps the most
discriminative tokens of each layer and a graph convolution combines them into the final prediction.{herbs_note(config)}

## Model details

{details_section(config, num_parameters)}

## How to use

{usage_section(repo_id, space_id, has_example=widget is not None)}

## Evaluation

{metrics_section(outputs)}

## Training recipe

{recipe_section(outputs.recipe)}

## Citation

{citation_section(config, dataset)}
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


__all__ = [
    "CITATION",
    "HERBS_CITATION",
    "TrainingDataset",
    "TrainingOutputs",
    "base_model_id",
    "build_model_card",
    "citation_section",
    "describe_dataset",
    "eval_results",
    "is_hub_dataset_id",
    "metrics_section",
    "read_training_outputs",
    "recipe_section",
    "split_metrics",
]
