#!/usr/bin/env python
"""
How well the fine-grained embedding of a trained PIM model (`PimModel`'s `pooler_output`, the combiner's pooled
representation) retrieves images of the same class, on the test split of the synthetic demo set, against the same
architecture untrained (random weights, seed 0).

For every test image the embedding is L2-normalised; the table gives the mean cosine similarity between images of the
same class and between images of different classes, and recall@1: the fraction of images whose most similar other
image is of their class (leave-one-out nearest neighbour).

    make demo                                               # trains outputs/demo_cpu (configuration/demo_cpu.yaml)
    python benchmarks/embedding_retrieval.py --model outputs/demo_cpu

The test split is that of the data the model was trained on, read from its `training_recipe.json` (written by
`train_pim.py`): a synthetic demo set is found in its cache folder, or generated again identically.
"""

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_pim  # noqa: E402
from modeling_pim import PimModel  # noqa: E402
from modeling_pim.tools.infer import load_pretrained  # noqa: E402
from modeling_pim.training.metrics import embedding_retrieval_metrics  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default=str(REPO / "outputs" / "demo_cpu"), help="A PIM model folder written by train_pim.py."
    )
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument(
        "--output", default=str(REPO / "benchmarks" / "results" / "embedding_retrieval.json"), help="JSON results file."
    )
    return parser.parse_args(argv)


@torch.no_grad()
def embeddings(model: PimModel, processor, images: list, batch_size: int) -> torch.Tensor:
    """The `pooler_output` of every image, `(N, D)`."""
    chunks = []
    for start in range(0, len(images), batch_size):
        pixel_values = processor(images=images[start : start + batch_size], return_tensors="pt")["pixel_values"]
        chunks.append(model(pixel_values).pooler_output)
    return torch.cat(chunks)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    recipe = json.loads((Path(args.model) / "training_recipe.json").read_text())
    known = {field.name for field in dataclasses.fields(train_pim.DataTrainingArguments)}
    data_args = train_pim.DataTrainingArguments(**{k: v for k, v in recipe["data_args"].items() if k in known})
    test = train_pim.load_data(data_args, seed=recipe["training_args"]["seed"])["test"]
    images, labels = list(test["image"]), torch.tensor(test["label"])

    classifier, processor = load_pretrained(args.model)
    trained = classifier.pim.eval()
    torch.manual_seed(0)
    untrained = PimModel(trained.config).eval()
    rows = {}
    for name, model in ((f"trained ({Path(args.model).name})", trained), ("untrained (same architecture)", untrained)):
        rows[name] = embedding_retrieval_metrics(embeddings(model, processor, images, args.batch_size), labels)

    table = (
        f"Test split of {data_args.dataset} ({len(labels)} images, {len(set(labels.tolist()))} classes), embedding "
        f"`pooler_output` "
        f"({trained.embedding_size} dims), {time.strftime('%Y-%m-%d')}, torch {torch.__version__}:\n\n"
        "| model | same-class cosine | other-class cosine | recall@1 |\n|---|---:|---:|---:|\n"
    )
    for name, row in rows.items():
        table += (
            f"| {name} | {row['same_class_cosine']:.3f} | {row['other_class_cosine']:.3f} | "
            f"{row['recall_at_1']:.3f} |\n"
        )
    print(table)
    report = {
        "settings": vars(args),
        "environment": {"torch": torch.__version__, "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "results": rows,
        "markdown": table,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"Wrote {output}")
    return rows


if __name__ == "__main__":
    main()
