"""Tests for detkit.data.transforms: config pipeline, box bookkeeping, letterbox, drop counting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detkit.data.transforms import (
    BoxesDroppedWarning,
    build_albumentation,
    build_transforms,
    letterbox,
)


def make_target(boxes, labels=None, **extra):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = len(boxes)
    target = {
        "boxes": boxes,
        "labels": np.asarray(labels if labels is not None else np.arange(1, n + 1), np.int64),
        "weights": np.ones(n, np.float32),
        "area": ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32),
        "iscrowd": np.zeros(n, np.int64),
        "ignore_boxes": np.zeros((0, 4), np.float32),
        "image_id": 7,
        "img_scale": 1.0,
    }
    target.update(extra)
    return target


def test_flip_boxes_hand_computed():
    image = np.zeros((10, 20, 3), np.uint8)  # h=10, w=20
    target = make_target([[2, 3, 8, 7]], ignore_boxes=np.array([[0, 0, 4, 4]], np.float32))
    pipe = build_transforms([{"type": "HorizontalFlip", "p": 1.0}], 20, train=True, to_tensor=False)
    out_img, out = pipe(image, target)
    # flip: x' = W - x, so [2, 3, 8, 7] -> [20 - 8, 3, 20 - 2, 7] = [12, 3, 18, 7];
    # letterbox to 20: scale = min(20/10, 20/20) = 1, nothing moves
    np.testing.assert_allclose(out["boxes"], [[12, 3, 18, 7]], atol=1e-4)
    # ignore box [0, 0, 4, 4] -> [16, 0, 20, 4]
    np.testing.assert_allclose(out["ignore_boxes"], [[16, 0, 20, 4]], atol=1e-4)
    assert out["labels"].tolist() == [1] and out["img_scale"] == 1.0
    assert out_img.shape == (20, 20, 3)
    assert target["boxes"].tolist() == [[2, 3, 8, 7]]  # input untouched


def test_letterbox_landscape_hand_computed():
    image = np.full((480, 640, 3), 200, np.uint8)
    target = make_target([[100, 50, 300, 250]])
    out_img, out = letterbox(image, target, 320)
    # scale = min(320/480, 320/640) = 0.5 -> content 240 x 320, padded to 320 x 320 at the bottom
    np.testing.assert_allclose(out["boxes"], [[50, 25, 150, 125]])
    assert out["img_scale"] == 0.5
    # area 200 * 200 = 40000 -> 40000 * 0.25 = 10000
    np.testing.assert_allclose(out["area"], [10000.0])
    assert out_img.shape == (320, 320, 3)
    assert (out_img[:240] == 200).all() and (out_img[240:] == 0).all()
    # original boxes = boxes / img_scale
    np.testing.assert_allclose(out["boxes"] / out["img_scale"], target["boxes"])


def test_letterbox_portrait_non_integer_scale():
    image = np.full((300, 200, 3), 9, np.uint8)
    target = make_target([[30, 60, 90, 150]])
    out_img, out = letterbox(image, target, 320, pad_value=114)
    # scale = min(320/300, 320/200) = 16/15; content 320 x round(200 * 16/15 = 213.33) = 213 wide
    # box * 16/15 = [32, 64, 96, 160]
    np.testing.assert_allclose(out["boxes"], [[32, 64, 96, 160]], rtol=1e-6)
    assert out["img_scale"] == pytest.approx(16 / 15)
    assert (out_img[:, :213] == 9).all() and (out_img[:, 213:] == 114).all()


def test_letterbox_equals_albumentations_resize_and_pad() -> None:
    """The letterbox is albumentations' LongestMaxSize + PadIfNeeded(top_left) pixel for
    pixel (all 364 BCCD images at 320 and 416 compared: 728 of 728 identical). Boxes differ
    where the resized side is rounded: detkit scales them by the one exact ratio that
    ``img_scale`` maps back with, albumentations by the rounded side's ratio; and on BCCD,
    where 640 x 480 -> 320 x 240 is exact, albumentations' round trip through normalised
    coordinates still moved them by up to 3.1e-6 px, enough to change every trained model.
    So detkit keeps its own step."""
    import albumentations as A
    import cv2

    rng = np.random.default_rng(0)
    results = {}
    for h, w, size in ((480, 640, 320), (333, 500, 416)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        boxes = np.array([[1.5, 2.25, w * 0.5, h * 0.75], [0, 0, w, h]], np.float32)
        ours, target = letterbox(image, {"boxes": boxes}, size)
        aug = A.Compose([A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_LINEAR),
                         A.PadIfNeeded(size, size, position="top_left",
                                       border_mode=cv2.BORDER_CONSTANT, fill=0)],
                        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]))
        theirs = aug(image=image, bboxes=boxes, labels=[1, 2])
        np.testing.assert_array_equal(ours, theirs["image"])
        results[(h, w)] = (target["boxes"], np.asarray(theirs["bboxes"]))
    ours, theirs = results[(480, 640)]
    np.testing.assert_allclose(ours, theirs, atol=1e-4)  # exact scale 0.5: same boxes
    ours, theirs = results[(333, 500)]
    # scale = 416 / 500 = 0.832; height 333 * 0.832 = 277.06 -> 277 rows (ratio 277 / 333);
    # y2 = 333 * 0.75 = 249.75: 249.75 * 0.832 = 207.792 against 249.75 * 277 / 333 = 207.75
    assert ours[0, 3] == pytest.approx(207.792, abs=1e-3)
    assert theirs[0, 3] == pytest.approx(207.75, abs=1e-3)


def test_flip_then_letterbox_maps_back_with_img_scale():
    image = np.zeros((100, 200, 3), np.uint8)
    target = make_target([[10, 20, 50, 60]])
    pipe = build_transforms(
        [{"type": "HorizontalFlip", "p": 1.0}], 100, train=True, to_tensor=False
    )
    _, out = pipe(image, target)
    # flip: [200 - 50, 20, 200 - 10, 60] = [150, 20, 190, 60];
    # letterbox: scale = min(100/100, 100/200) = 0.5 -> [75, 10, 95, 30]
    np.testing.assert_allclose(out["boxes"], [[75, 10, 95, 30]], atol=1e-4)
    np.testing.assert_allclose(out["boxes"] / out["img_scale"], [[150, 20, 190, 60]], atol=1e-3)
    # area 40 * 40 = 1600 -> 1600 * 0.25 = 400
    np.testing.assert_allclose(out["area"], [400.0])


def test_dropped_ignore_regions_are_counted_and_warned():
    image = np.zeros((20, 20, 3), np.uint8)
    target = make_target([[0, 0, 5, 5]], labels=[1])
    # ignore region (15, 15, 19, 19) lies outside the 10x10 crop: dropped, and counted
    target["ignore_boxes"] = np.array([[15, 15, 19, 19], [2, 2, 6, 6]], np.float32)
    cfg = [{"type": "Crop", "x_min": 0, "y_min": 0, "x_max": 10, "y_max": 10, "p": 1.0}]
    pipe = build_transforms(cfg, 10, train=True, to_tensor=False)
    with pytest.warns(BoxesDroppedWarning, match="ignore regions"):
        _, out = pipe(image, target)
    assert pipe.augment.ignore_boxes_dropped == 1 and pipe.boxes_dropped == 0
    np.testing.assert_allclose(out["ignore_boxes"], [[2, 2, 6, 6]], atol=1e-4)


def test_dropped_boxes_are_counted_and_warned():
    image = np.zeros((20, 20, 3), np.uint8)
    # box 0 inside the crop; box 1 keeps 2 of 10 columns (visibility 0.2 < 0.3); box 2 kept
    target = make_target([[0, 0, 5, 5], [8, 0, 18, 10], [1, 1, 9, 9]], labels=[1, 2, 3])
    target["weights"] = np.array([1.0, 0.5, 0.25], np.float32)
    cfg = [{"type": "Crop", "x_min": 0, "y_min": 0, "x_max": 10, "y_max": 10, "p": 1.0}]
    pipe = build_transforms(cfg, 10, train=True, min_visibility=0.3, to_tensor=False)
    with pytest.warns(BoxesDroppedWarning):
        _, out = pipe(image, target)
    assert pipe.boxes_dropped == 1 and pipe.augment.boxes_seen == 3
    np.testing.assert_allclose(out["boxes"], [[0, 0, 5, 5], [1, 1, 9, 9]], atol=1e-4)
    assert out["labels"].tolist() == [1, 3]
    np.testing.assert_allclose(out["weights"], [1.0, 0.25])
    np.testing.assert_allclose(out["area"], [25.0, 64.0])


def test_unknown_type_names_close_matches():
    with pytest.raises(ValueError, match="HorizontalFlip"):
        build_albumentation({"type": "HorizontalFlp", "p": 0.5})
    with pytest.raises(ValueError, match="no 'type'"):
        build_albumentation({"p": 0.5})


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="HorizontalFlip"):
        build_albumentation({"type": "HorizontalFlip", "prob": 0.5})


def test_cutout_from_config():
    image = np.full((20, 20, 3), 255, np.uint8)
    target = make_target([[2, 2, 6, 6]])
    cfg = [
        {
            "type": "CoarseDropout",
            "num_holes_range": [1, 1],
            "hole_height_range": [4, 4],
            "hole_width_range": [4, 4],
            "fill": 0,
            "p": 1.0,
        }
    ]
    pipe = build_transforms(cfg, 20, train=True, to_tensor=False, seed=0)
    out_img, out = pipe(image, target)
    # one 4 x 4 hole -> 16 zero pixels in every channel; boxes unchanged
    assert [(out_img[..., c] == 0).sum() for c in range(3)] == [16, 16, 16]
    np.testing.assert_allclose(out["boxes"], [[2, 2, 6, 6]], atol=1e-4)


def test_random_erasing_from_config():
    image = np.full((40, 40, 3), 255, np.uint8)
    cfg = [{"type": "Erasing", "scale": [0.1, 0.1], "ratio": [1.0, 1.0], "fill": 0, "p": 1.0}]
    out_img, out = build_transforms(cfg, 40, train=True, to_tensor=False, seed=1)(
        image, make_target([[1, 1, 3, 3]])
    )
    # scale 0.1 of 1600 pixels, ratio 1 -> a 13 x 13 (sqrt 160 = 12.6, rounded) square erased
    zeros = int((out_img[..., 0] == 0).sum())
    assert 144 <= zeros <= 169


def test_eval_pipeline_only_letterboxes_and_returns_tensors():
    image = np.full((10, 20, 3), 255, np.uint8)
    target = make_target([[2, 3, 8, 7]])
    pipe = build_transforms([{"type": "HorizontalFlip", "p": 1.0}], 40, train=False)
    out_img, out = pipe(image, target)
    # scale = min(40/10, 40/20) = 2 -> [4, 6, 16, 14]; no flip at evaluation
    assert isinstance(out_img, torch.Tensor) and out_img.shape == (3, 40, 40)
    assert out_img.dtype == torch.float32 and float(out_img.max()) == 1.0
    torch.testing.assert_close(out["boxes"], torch.tensor([[4.0, 6.0, 16.0, 14.0]]))
    assert out["img_scale"] == 2.0


def test_masks_follow_boxes_through_flip():
    image = np.zeros((4, 6, 3), np.uint8)
    masks = np.zeros((1, 4, 6), np.uint8)
    masks[0, 1:3, 0:2] = 1
    target = make_target([[0, 1, 2, 3]], masks=masks)
    pipe = build_transforms([{"type": "HorizontalFlip", "p": 1.0}], 6, train=True, to_tensor=False)
    _, out = pipe(image, target)
    # columns 0..1 flip to 4..5 (x' = 5 - x for pixel centres)
    expected = np.zeros((1, 6, 6), np.uint8)
    expected[0, 1:3, 4:6] = 1
    np.testing.assert_array_equal(out["masks"], expected)
    np.testing.assert_allclose(out["boxes"], [[4, 1, 6, 3]], atol=1e-4)


@pytest.mark.filterwarnings("ignore::detkit.data.transforms.BoxesDroppedWarning")
def test_zero_size_box_is_counted_not_fatal():
    target = make_target([[5, 5, 5, 9], [1, 1, 4, 4]], labels=[1, 2])
    pipe = build_transforms([{"type": "HorizontalFlip", "p": 1.0}], 20, train=True, to_tensor=False)
    _, out = pipe(np.zeros((20, 20, 3), np.uint8), target)
    # the zero-width box is dropped and counted; [1, 1, 4, 4] flips to [16, 1, 19, 4]
    assert pipe.boxes_dropped == 1 and out["labels"].tolist() == [2]
    np.testing.assert_allclose(out["boxes"], [[16, 1, 19, 4]], atol=1e-4)


def test_copy_paste_step_from_config_runs_at_training_resolution():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(100, 200, 3), dtype=np.uint8)
    # raw 40 x 40 = 1600 px^2 is not small, but at input 100 (scale 0.5) it is 20 x 20 = 400
    target = make_target([[0, 0, 40, 40]], labels=[3], orig_size=(100, 200))
    cfg = [{"type": "SmallObjectCopyPaste", "num_copies": 2, "scale_jitter": 0.0, "seed": 0}]
    _, out = build_transforms(cfg, 100, train=True, to_tensor=False)(image, target)
    assert len(out["boxes"]) == 3 and out["labels"].tolist() == [3, 3, 3]
    sizes = out["boxes"][1:, 2:] - out["boxes"][1:, :2]
    np.testing.assert_allclose(sizes, [[20, 20], [20, 20]])
    # pasted inside the 50 x 100 content, not in the padding below row 50
    assert (out["boxes"][:, 3] <= 50).all()
    with pytest.raises(ValueError, match="SmallObjectCopyPaste"):
        build_transforms([{"type": "SmallObjectCopyPaste", "copies": 2}], 100, train=True)
