"""detkit.engine.evaluate: the one evaluation path of the trainer and tools/test.py."""

from __future__ import annotations

import torch

from detkit.config import defaults, merge
from detkit.data.transforms import build_transforms
from detkit.engine.evaluate import collect_coco_results, evaluation_loader, predict_dataset


class _FiveImages(torch.utils.data.Dataset):
    """Five 10x20 'letterboxed' images; targets say they were scaled by 2 from 5x10."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int):
        return torch.zeros(3, 10, 20), {"image_id": 100 + i, "img_scale": 2.0,
                                        "orig_size": (5, 10)}


def _one_box_each(images):
    # one detection per image at xyxy (2, 2, 8, 6) in letterboxed pixels, label 1
    return [{"boxes": torch.tensor([[2.0, 2.0, 8.0, 6.0]]), "scores": torch.tensor([0.5]),
             "labels": torch.tensor([1])} for _ in images]


def test_results_in_original_pixels_and_every_image_once_across_shards() -> None:
    data = _FiveImages()
    single = collect_coco_results(evaluation_loader(data, 2), _one_box_each, [7])
    # (2, 2, 8, 6) / img_scale 2 = (1, 1, 4, 3); clipped to the 5x10 original it stays;
    # xywh = (1, 1, 3, 2); label 1 -> category 7 (item 0 of the lookup)
    assert [r["image_id"] for r in single] == [100, 101, 102, 103, 104]
    assert all(r["bbox"] == [1.0, 1.0, 3.0, 2.0] and r["category_id"] == 7 for r in single)
    # Two ranks: rank 0 predicts indices 0, 2, 4 and rank 1 indices 1, 3 -- together each
    # image exactly once (gathering is the identity without torch.distributed).
    shards = [collect_coco_results(evaluation_loader(data, 2, rank=r, world_size=2),
                                   _one_box_each, [7]) for r in (0, 1)]
    assert [r["image_id"] for r in shards[0]] == [100, 102, 104]
    assert [r["image_id"] for r in shards[1]] == [101, 103]


def test_evaluator_undoes_img_scale_oracle_gets_ap_one(tmp_path) -> None:
    from detkit.data import generate_synthetic_coco
    from detkit.data.coco import CocoDetection
    from detkit.engine.distributed import DistInfo
    from detkit.engine.evaluate import make_evaluator

    paths = generate_synthetic_coco(tmp_path, num_images=10, image_size=64, seed=1)
    # letterbox 64 -> 96: img_scale 1.5, so boxes must be divided by 1.5 for COCO results
    val = CocoDetection(paths["val"], tmp_path, build_transforms(None, 96, train=False))
    expected = [val[i][1] for i in range(len(val))]
    assert expected[0]["img_scale"] == 1.5

    class Oracle(torch.nn.Module):
        """Returns each val image's ground truth (loader order) with score 1."""

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, images):
            out = []
            for _ in images:
                t = expected[self.calls]
                self.calls += 1
                out.append({"boxes": t["boxes"], "labels": t["labels"],
                            "scores": torch.ones(len(t["labels"]))})
            return out

    cfg = merge(defaults(), {"eval": {"batch_size": 2}, "data": {"num_workers": 0}})
    evaluate = make_evaluator(val, cfg, DistInfo(0, 1, 0, torch.device("cpu")))
    oracle = Oracle().train()
    metrics = evaluate(oracle)
    assert abs(metrics["AP"] - 1.0) < 1e-9  # perfect detections -> COCO AP 1
    assert oracle.training  # the model's mode is restored after evaluation


def test_trainer_evaluation_and_test_tool_path_agree(tmp_path) -> None:
    """The trainer's evaluator (val transforms + forward) and tools/test.py's path (raw
    images + Predictor) give the same results on the same model at the same size."""
    from detkit.data.coco import CocoDetection
    from detkit.data.synthetic import generate_synthetic_coco
    from detkit.engine.distributed import DistInfo
    from detkit.engine.evaluate import make_evaluator
    from detkit.engine.inference import Predictor, keep_raw
    from detkit.evaluation import evaluate_detections
    from detkit.models.build import build_model

    paths = generate_synthetic_coco(tmp_path, num_images=8, image_size=80, seed=3,
                                    split_fractions={"train": 0.5, "val": 0.5})
    torch.manual_seed(0)
    model = build_model({"type": "dense_detector", "backbone": "snet49", "neck": "fpn",
                         "neck_channels": 16, "head_convs": 1, "head_norm": "none",
                         "num_classes": 6, "score_threshold": 0.3}).eval()
    with torch.no_grad():
        model.head.cls_logits.bias.zero_()  # scores near 0.5: plenty of detections
    cfg = merge(defaults(), {"eval": {"batch_size": 2}, "data": {"num_workers": 0}})
    val = CocoDetection(paths["val"], tmp_path, build_transforms(None, 64, train=False))
    trainer_metrics = make_evaluator(val, cfg, DistInfo(0, 1, 0, torch.device("cpu")))(model)
    raw = CocoDetection(paths["val"], tmp_path, transforms=keep_raw)
    results = predict_dataset(Predictor(model, [64]), raw, batch_size=2)
    assert len(results) > 0
    test_metrics = evaluate_detections(raw.coco.dataset, results).metrics
    assert trainer_metrics["AP"] > 0
    for key in ("AP", "AP50", "APs", "AR100"):
        assert abs(trainer_metrics[key] - float(test_metrics[key])) < 1e-9, key
