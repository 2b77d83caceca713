"""build_model: dispatch on type, keyword pass-through, helpful errors."""

import pytest
import torch

from detkit.models import build_model as lazy_build_model
from detkit.models import dense_detector as lazy_dense_detector
from detkit.models.build import MODEL_TYPES, TORCHVISION_DETECTORS, build_model
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
    assert sorted(MODEL_TYPES) == ["dense_detector", "thundernet_lite", "torchvision"]
    import detkit.models as models

    assert callable(models.thundernet_lite)
    with pytest.raises(AttributeError):
        models.no_such_builder  # noqa: B018


def _no_download(*args, **kwargs):
    raise AssertionError("a torchvision peer must not download weights")


@pytest.mark.parametrize("name", TORCHVISION_DETECTORS)
def test_torchvision_peer_counts_background_and_downloads_nothing(name, monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_download)
    model = build_model({"type": "torchvision", "name": name, "num_classes": 3})
    # detkit's K = 3 classes; torchvision counts the background: 3 + 1 = 4 outputs per box
    if name.startswith("ssdlite"):
        last = model.head.classification_head.module_list[0][-1]
        # ssdlite: 6 default boxes per cell (ratios 2, 3 -> 2 + 2 * 2) x 4 classes = 24 channels
        assert last.out_channels == 6 * 4 and model.head.classification_head.num_columns == 4
    else:
        assert model.roi_heads.box_predictor.cls_score.out_features == 4
        assert model.roi_heads.box_predictor.bbox_pred.out_features == 4 * 4


def test_torchvision_peer_options_and_errors():
    model = build_model({"type": "torchvision", "name": "fasterrcnn_mobilenet_v3_large_320_fpn",
                         "num_classes": 2, "options": {"box_score_thresh": 0.2}})
    assert model.roi_heads.score_thresh == 0.2
    with pytest.raises(ValueError, match=r"did you mean 'ssdlite320_mobilenet_v3_large'.*valid"):
        build_model({"type": "torchvision", "name": "ssdlite320_mobilenet", "num_classes": 2})
    with pytest.raises(ValueError, match="unknown key 'weights'"):
        build_model({"type": "torchvision", "name": "ssdlite320_mobilenet_v3_large",
                     "num_classes": 2, "weights": "DEFAULT"})


def test_trainer_steps_a_torchvision_peer_unchanged(tmp_path):
    """One Trainer.train_step on ssdlite with contract batches: the loss is the model's own sum."""
    import copy

    from detkit.engine.schedules import IterationScheduler, ScheduleSpec
    from detkit.engine.trainer import Trainer, TrainerOptions

    torch.manual_seed(0)
    model = build_model({"type": "torchvision", "name": "ssdlite320_mobilenet_v3_large",
                         "num_classes": 3})
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1]),
                "image_id": 1, "weights": torch.ones(1), "ignore_boxes": torch.zeros(0, 4),
                "img_scale": 1.0},
               {"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0], [0.0, 0.0, 8.0, 9.0]]),
                "labels": torch.tensor([3, 2]), "image_id": 2, "weights": torch.ones(2),
                "ignore_boxes": torch.zeros(0, 4), "img_scale": 1.0}]
    reference = copy.deepcopy(model).train()
    # SSD's loss has no random sampling: the same weights give the same loss.
    expected = float(sum(reference(images, targets).values()).detach())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = Trainer(model, optimizer, IterationScheduler(optimizer, ScheduleSpec(max_iters=1)),
                      loader=None, options=TrainerOptions(max_iters=1, iters_per_epoch=1),
                      work_dir=tmp_path)
    before = [p.detach().clone() for p in model.parameters()]
    out = trainer.train_step(images, targets)
    assert set(out) >= {"bbox_regression", "classification", "loss", "grad_norm"}
    assert out["loss"] == pytest.approx(expected, rel=1e-5)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    model.eval()
    with torch.no_grad():
        det = model(images)
    assert len(det) == 2 and set(det[0]) == {"boxes", "scores", "labels"}
    assert det[0]["labels"].numel() == 0 or int(det[0]["labels"].min()) >= 1


def test_name_tables_refuse_duplicates_and_name_the_choices() -> None:
    from torch import nn

    from detkit.models.build import build_named, name_table

    table = name_table("widget", [("a", nn.Identity), ("b", nn.ReLU)])
    assert isinstance(build_named("widget", table, "b"), nn.ReLU)
    with pytest.raises(RuntimeError, match="duplicate widget name 'a'"):
        name_table("widget", [("a", nn.Identity), ("a", nn.ReLU)])
    with pytest.raises(ValueError, match=r"unknown widget 'c'; valid: \['a', 'b'\]"):
        build_named("widget", table, "c")


def test_torchvision_peer_with_one_class():
    from detkit.models.build import torchvision_detector

    # K = 1 is valid: torchvision adds the background, so the classifier has 2 outputs
    model = torchvision_detector(1, "fasterrcnn_mobilenet_v3_large_320_fpn")
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        torchvision_detector(0, "fasterrcnn_mobilenet_v3_large_320_fpn")
