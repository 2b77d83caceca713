"""build_model: dispatch on type, keyword pass-through, helpful errors."""

import pytest
import torch

from detkit.models import build_model as lazy_build_model
from detkit.models import dense_detector as lazy_dense_detector
from detkit.models.build import MODEL_TYPES, build_model
from detkit.models.detectors.dense import DenseDetector, dense_detector


def test_builds_dense_detector_with_arguments():
    model = build_model(
        {
            "type": "dense_detector",
            "num_classes": 4,
            "backbone": "snet49",
            "neck_channels": 32,
            "head_convs": 1,
            "anchors": "faceboxes",
            "densify": True,
            "nms": "diou_nms",
        }
    )
    assert isinstance(model, DenseDetector)
    # faceboxes sizes (d, 2d, 4d) with densities (4, 2, 1): 16 + 4 + 1 anchors per cell
    assert model.anchor_generator.num_anchors_per_location == [21] * 5
    assert model.head.num_classes == 4 and model.postprocess_config.nms == "diou_nms"


def test_builds_thundernet_lite():
    model = build_model({"type": "thundernet_lite", "num_classes": 3})
    assert isinstance(model, torch.nn.Module)
    assert type(model).__module__ == "detkit.models.detectors.thundernet"


def test_unknown_key_names_nearest_and_valid_keys():
    with pytest.raises(ValueError, match=r"unknown key 'box_los'.*did you mean 'box_loss'") as err:
        build_model({"type": "dense_detector", "num_classes": 3, "box_los": "giou"})
    assert "valid keys:" in str(err.value) and "scale_compensation" in str(err.value)


def test_unknown_type_and_missing_keys():
    with pytest.raises(ValueError, match=r"did you mean 'dense_detector'.*thundernet_lite"):
        build_model({"type": "dense_detectr"})
    with pytest.raises(ValueError, match="'type'"):
        build_model({"num_classes": 3})
    with pytest.raises(ValueError, match="needs the key"):
        build_model({"type": "dense_detector"})
    with pytest.raises(ValueError, match="mapping"):
        build_model(["dense_detector"])


def test_package_exports():
    assert lazy_build_model is build_model and lazy_dense_detector is dense_detector
    assert sorted(MODEL_TYPES) == ["dense_detector", "thundernet_lite"]
    import detkit.models as models

    assert callable(models.thundernet_lite)
    with pytest.raises(AttributeError):
        models.no_such_builder  # noqa: B018
