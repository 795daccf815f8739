"""
Once trained, PIM's fine-grained embedding (`PimModel`'s `pooler_output`) puts images of the same class nearer to each
other than to other classes: on unseen test images of the synthetic demo set, the model of
`tests/fixtures/pim_trained_on_synthetic` (trained on the set's training split by its `make_fixture.py`) gives a clear
margin between same-class and other-class cosine similarity and a nearest neighbour of the same class well above
chance, through `AutoModel` and through `pipeline("image-feature-extraction", trust_remote_code=True)` in a process
where this package cannot be imported; the same architecture untrained does neither.
"""

import json
import textwrap
from pathlib import Path

import PIL.Image
import pytest
import torch
from transformers import AutoModel

from tiny_models import run_as_remote_code

from modeling_pim import PimForImageClassification, PimImageProcessor, PimModel
from modeling_pim.data.synthetic import class_names, generate_fine_grained_dataset
from modeling_pim.training.metrics import embedding_retrieval_metrics


FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pim_trained_on_synthetic"
IMAGES_PER_CLASS = 5
# Chance for the leave-one-out nearest neighbour of 8 classes x 5 images: 4 / 39 ≈ 0.10.
MIN_RECALL_AT_1 = 0.6
MIN_COSINE_MARGIN = 0.3  # mean same-class cosine minus mean other-class cosine

# What the subprocess prints: the embedding of every image it is given, as JSON on its last line.
REMOTE_CODE_EMBEDDINGS = textwrap.dedent(
    """
    import json, sys
    sys.modules["modeling_pim"] = None  # this repository's package must not be importable
    from transformers import pipeline

    extractor = pipeline("image-feature-extraction", model=sys.argv[1], trust_remote_code=True)
    print(json.dumps([embedding[0] for embedding in extractor(sys.argv[2:], batch_size=len(sys.argv) - 2)]))
    """
)


@pytest.fixture(scope="module")
def test_images(tmp_path_factory) -> tuple[list[Path], list[str]]:
    """
    The first `IMAGES_PER_CLASS` images of every class of the demo set's test split (`train_pim.py --dataset
    synthetic`: 8 classes, 64 px, seed 0; never seen in training) and their class names.
    """
    root = generate_fine_grained_dataset(
        tmp_path_factory.mktemp("synthetic"),
        train_per_class=0,
        validation_per_class=0,
        test_per_class=IMAGES_PER_CLASS,
        seed=0,
    )
    names = [name for name in class_names() for _ in range(IMAGES_PER_CLASS)]
    paths = [root / "test" / name / f"{index:04d}.png" for name in class_names() for index in range(IMAGES_PER_CLASS)]
    return paths, names


@torch.no_grad()
def embed(model: PimModel, paths: list[Path]) -> torch.Tensor:
    """`pooler_output` of the images, `(N, D)`, through the fixture's image processor."""
    images = [PIL.Image.open(path) for path in paths]
    pixel_values = PimImageProcessor.from_pretrained(FIXTURE)(images, return_tensors="pt")["pixel_values"]
    return model.eval()(pixel_values).pooler_output


def margin_and_recall(embeddings: torch.Tensor, names: list[str], label2id: dict[str, int]) -> tuple[float, float]:
    """Mean same-class minus mean other-class cosine similarity, and leave-one-out recall@1, of the embeddings."""
    metrics = embedding_retrieval_metrics(embeddings, torch.tensor([label2id[name] for name in names]))
    return metrics["same_class_cosine"] - metrics["other_class_cosine"], metrics["recall_at_1"]


@pytest.fixture(scope="module")
def trained_model() -> PimModel:
    model = AutoModel.from_pretrained(FIXTURE)
    assert type(model) is PimModel  # this package's class, registered for AutoModel
    return model


def test_trained_embedding_groups_unseen_images_by_class_and_untrained_does_not(trained_model, test_images):
    paths, names = test_images
    label2id = trained_model.config.label2id
    margin, recall = margin_and_recall(embed(trained_model, paths), names, label2id)
    assert margin >= MIN_COSINE_MARGIN and recall >= MIN_RECALL_AT_1, (margin, recall)

    torch.manual_seed(0)
    margin, recall = margin_and_recall(embed(PimModel(trained_model.config), paths), names, label2id)
    assert margin < MIN_COSINE_MARGIN and recall < MIN_RECALL_AT_1, (margin, recall)


def test_remote_code_feature_extraction_pipeline_gives_the_same_embeddings(trained_model, test_images, tmp_path):
    paths, names = test_images
    PimForImageClassification.from_pretrained(FIXTURE).save_pretrained(tmp_path)  # with today's remote-code files
    PimImageProcessor.from_pretrained(FIXTURE).save_pretrained(tmp_path)
    stdout = run_as_remote_code(REMOTE_CODE_EMBEDDINGS, tmp_path, *map(str, paths))
    embeddings = torch.tensor(json.loads(stdout.strip().splitlines()[-1]))

    torch.testing.assert_close(embeddings, embed(trained_model, paths), rtol=0, atol=1e-5)
    margin, recall = margin_and_recall(embeddings, names, trained_model.config.label2id)
    assert margin >= MIN_COSINE_MARGIN and recall >= MIN_RECALL_AT_1, (margin, recall)
