"""Grid validation, padding and cropping (jaxrepr.data.grids)."""

import numpy as np
import pytest

from jaxrepr.data import grids


def test_validate_accepts_lists_and_arrays():
  g = grids.validate_grid([[0, 1], [9, 2]])
  assert g.dtype == np.int32 and g.tolist() == [[0, 1], [9, 2]]
  assert grids.validate_grid(np.ones((30, 1), np.int64)).shape == (30, 1)


@pytest.mark.parametrize(
  "bad, message",
  [
    ([[0, 1], [2]], "not rectangular"),
    ([[0, 10]], "colour 10"),
    ([[0, -1]], "colour -1"),
    ([[0, 1.5]], "not an integer"),
    ([[True]], "not an integer"),
    ([], "empty"),
    ([[]], "0"),
    ("01", "list of rows"),
    ([[0] * 31], "1..30"),
    ([[0]] * 31, "1..30"),
    (np.zeros((2, 2), np.float32), "integers"),
    (np.zeros((2, 2, 2), np.int32), "2-D"),
  ],
)
def test_validate_rejects_bad_grids_naming_the_place(bad, message):
  with pytest.raises(ValueError, match=message) as e:
    grids.validate_grid(bad, "tasks/abc.json: task abc train pair 0 input")
  assert "tasks/abc.json" in str(e.value)


def test_pad_and_crop_round_trip():
  rng = np.random.default_rng(0)
  inp, out = rng.integers(0, 10, (3, 5)), rng.integers(0, 10, (7, 2))
  g, s = grids.pad_pair(inp, out, 8, 6)
  assert g.shape == (8, 6, 2) and g.dtype == np.int32
  assert s.tolist() == [[3, 7], [5, 2]]
  # padding is zero outside the true shapes
  assert not g[3:, :, 0].any() and not g[:, 5:, 0].any() and not g[:, 2:, 1].any()
  back_in, back_out = grids.unpad_pair(g, s)
  np.testing.assert_array_equal(back_in, inp)
  np.testing.assert_array_equal(back_out, out)
  batch = grids.pad_pairs([(inp, out), (out, inp)], 8, 8)
  assert batch["grids"].shape == (2, 8, 8, 2) and batch["shapes"].shape == (2, 2, 2)
  for (i, o), (bi, bo) in zip(
    [(inp, out), (out, inp)], grids.unpad_pairs(batch["grids"], batch["shapes"])
  ):
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_array_equal(o, bo)


def test_oversize_is_an_error_never_truncated():
  with pytest.raises(grids.OversizeGridError, match="task x pair 0 output: grid is 5x3"):
    grids.pad_pairs([(np.zeros((2, 2), np.int32), np.zeros((5, 3), np.int32))], 4, 4, "task x")
  with pytest.raises(ValueError, match="cannot crop"):
    grids.crop(np.zeros((4, 4)), 5, 1)


def test_pad_task_fills_missing_rows_with_masked_empty_pairs():
  pairs = [(np.full((2, 3), 4, np.int32), np.full((1, 2), 5, np.int32))] * 2
  out = grids.pad_task(pairs, 4, 3, 3)
  np.testing.assert_array_equal(out["pair_mask"], [True, True, False, False])
  assert out["grids"].shape == (4, 3, 3, 2) and not out["grids"][2:].any()
  assert (out["shapes"][2:] == 1).all()
  assert grids.unpad_pairs(out["grids"][:2], out["shapes"][:2])[1][1].tolist() == [[5, 5]]
  with pytest.raises(ValueError, match="expected 1..4"):
    grids.pad_task(pairs * 3, 4, 3, 3)
