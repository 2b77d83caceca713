"""Tests of detkit.evaluation.results: model outputs -> COCO results, saving, DDP gathering."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detkit.evaluation import (
    all_gather_results,
    detections_to_coco_results,
    evaluate_detections,
    label_to_category_from_coco,
    merge_rank_results,
    save_results_json,
)


def _output(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_undoes_img_scale_and_maps_category_ids() -> None:
    out = _output([[10.0, 20.0, 50.0, 60.0]], [0.75], [2])
    target = {"image_id": torch.tensor(42), "img_scale": 0.5, "orig_size": (480, 640)}
    results = detections_to_coco_results([out], [target], {1: 3, 2: 7})
    # Original = transformed / 0.5: (20, 40, 100, 120) -> xywh (20, 40, 80, 80); label 2 -> id 7.
    assert results == [{"image_id": 42, "category_id": 7, "bbox": [20.0, 40.0, 80.0, 80.0],
                        "score": 0.75}]
    assert isinstance(results[0]["image_id"], int)
    json.dumps(results)  # plain Python types only


def test_clips_to_original_size_and_filters_scores() -> None:
    # Letterboxed 320x320 input of a 100 (h) x 200 (w) image at scale 1.6: the box reaches into
    # the bottom padding (y2 = 300 / 1.6 = 187.5 > 100) and is clipped to y2 = 100.
    out = _output([[16.0, 16.0, 160.0, 300.0], [0.0, 0.0, 8.0, 8.0]], [0.9, 0.05], [1, 1])
    target = {"image_id": 1, "img_scale": torch.tensor(1.6), "orig_size": torch.tensor([100, 200])}
    results = detections_to_coco_results([out], [target], [5], score_threshold=0.1)
    assert len(results) == 1
    # x: 16/1.6 = 10, 160/1.6 = 100 -> w 90; y: 10 .. min(187.5, 100) -> h 90.
    np.testing.assert_allclose(results[0]["bbox"], [10.0, 10.0, 90.0, 90.0], rtol=1e-6)
    assert results[0]["category_id"] == 5


def test_bad_outputs_raise() -> None:
    out = _output([[0.0, 0.0, 1.0, 1.0]], [0.5], [3])
    with pytest.raises(ValueError, match=r"labels \[3\] have no category id"):
        detections_to_coco_results([out], [{"image_id": 1}], {1: 1, 2: 2})
    with pytest.raises(ValueError, match="1 outputs but 2 targets"):
        detections_to_coco_results([out], [{"image_id": 1}, {"image_id": 2}], [1, 2, 3])
    with pytest.raises(ValueError, match="img_scale"):
        detections_to_coco_results([out], [{"image_id": 1, "img_scale": 0.0}], [1, 2, 3])


def test_label_map_follows_sorted_category_ids() -> None:
    gt = {"categories": [{"id": 17, "name": "b"}, {"id": 4, "name": "a"}, {"id": 9, "name": "c"}]}
    assert label_to_category_from_coco(gt) == {1: 4, 2: 9, 3: 17}


def test_round_trip_perfect_outputs_score_ap_one(tmp_path) -> None:
    gt = {
        "images": [{"id": i, "width": 640, "height": 480} for i in (11, 12)],
        "categories": [{"id": 4, "name": "a"}, {"id": 9, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 9, "bbox": [100, 50, 60, 40],
             "area": 2400, "iscrowd": 0},
            {"id": 2, "image_id": 12, "category_id": 4, "bbox": [10, 10, 200, 150],
             "area": 30000, "iscrowd": 0},
        ],
    }
    scale = 0.5  # model sees 320x240 images
    outputs = [_output([[50.0, 25.0, 80.0, 45.0]], [0.9], [2]),
               _output([[5.0, 5.0, 105.0, 80.0]], [0.8], [1])]
    targets = [{"image_id": 11, "img_scale": scale}, {"image_id": 12, "img_scale": scale}]
    results = detections_to_coco_results(outputs, targets, label_to_category_from_coco(gt))
    path = save_results_json(results, tmp_path / "out" / "detections.json")
    # Exact boxes back in original pixels with the right ids: AP 1 (to pycocotools' eps).
    assert evaluate_detections(gt, json.loads(path.read_text())).metrics["AP"] == pytest.approx(1.0)


def test_merge_keeps_each_image_from_one_rank() -> None:
    rank0 = [{"image_id": 1, "score": 0.9}, {"image_id": 2, "score": 0.8}]
    rank1 = [{"image_id": 3, "score": 0.7}, {"image_id": 1, "score": 0.9}]  # 1 padded again
    merged = merge_rank_results([rank0, rank1])
    assert merged == [{"image_id": 1, "score": 0.9}, {"image_id": 2, "score": 0.8},
                      {"image_id": 3, "score": 0.7}]


def test_all_gather_without_distributed_is_identity() -> None:
    results = [{"image_id": 1, "score": 0.5}]
    gathered = all_gather_results(results)
    assert gathered == results and gathered[0] is not results[0]


def _gather_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    mine = [{"image_id": 10 + rank, "score": 0.5}, {"image_id": 99, "score": float(rank)}]
    gathered = all_gather_results(mine)
    with open(f"{out_dir}/rank{rank}.pkl", "wb") as handle:
        pickle.dump(gathered, handle)
    dist.destroy_process_group()


@pytest.mark.skipif(
    "fork" not in mp.get_all_start_methods() or not dist.is_available(),
    reason="needs torch.distributed and the fork start method",
)
def test_all_gather_across_two_gloo_ranks(tmp_path) -> None:
    mp.start_processes(_gather_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="fork")
    # Image 99 was seen by both ranks (sampler padding): rank 0's copy is kept.
    expected = [{"image_id": 10, "score": 0.5}, {"image_id": 99, "score": 0.0},
                {"image_id": 11, "score": 0.5}]
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.pkl", "rb") as handle:
            assert pickle.load(handle) == expected


def test_no_scale_negative_corners_and_the_threshold_itself() -> None:
    # no img_scale: boxes stay as they are (scale 1); orig_size clips the negative corner to 0
    # and x2 = 70 to the width 64; a score equal to the threshold is kept, a lower one is not
    out = _output([[-5.0, -2.0, 70.0, 30.0], [1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 4.0, 4.0]],
                  [0.5, 0.25, 0.5], [1, 1, 1])
    target = {"image_id": 3, "orig_size": (48, 64)}
    results = detections_to_coco_results([out], [target], [1], score_threshold=0.5)
    assert [r["bbox"] for r in results] == [[0.0, 0.0, 64.0, 30.0], [2.0, 2.0, 2.0, 2.0]]
    # without orig_size nothing is clipped
    raw = detections_to_coco_results([out], [{"image_id": 3}], [1])
    assert raw[0]["bbox"] == [-5.0, -2.0, 75.0, 32.0]


def test_label_map_from_a_coco_object() -> None:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": [], "annotations": [],
                    "categories": [{"id": 8, "name": "b"}, {"id": 3, "name": "a"}]}
    coco.createIndex()
    assert label_to_category_from_coco(coco) == {1: 3, 2: 8}


def test_save_results_json_creates_folders_and_overwrites(tmp_path) -> None:
    results = [{"image_id": 1, "category_id": 2, "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.5}]
    path = save_results_json(results, tmp_path / "a" / "b" / "detections.json")
    assert path == tmp_path / "a" / "b" / "detections.json"
    # a second write into the existing folder replaces the file
    save_results_json(results * 2, path)
    assert json.loads(path.read_text()) == results * 2


def test_length_mismatch_inside_one_output_is_named() -> None:
    out = {"boxes": torch.zeros((2, 4)), "scores": torch.zeros(1), "labels": torch.ones(1)}
    with pytest.raises(ValueError, match="^boxes/scores/labels lengths differ: 2, 1, 1$"):
        detections_to_coco_results([out], [{"image_id": 1}], [1])


def test_load_results_json_messages(tmp_path) -> None:
    from detkit.evaluation import load_results_json

    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ValueError, match="broken.json is not valid JSON: "):
        load_results_json(broken)
    # a dict without "annotations" is simply not a list
    other = tmp_path / "other.json"
    other.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="a COCO results file is a JSON list of detections, "
                                         "got dict$"):
        load_results_json(other)
    ok = tmp_path / "ok.json"
    ok.write_text('[{"image_id": 1}]')
    assert load_results_json(ok) == [{"image_id": 1}]
