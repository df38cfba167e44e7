"""Pair lists: paths with spaces (tab- or comma-separated), LFW's own header, and clear errors."""

from __future__ import annotations

import pytest

from petal_peft.evaluation.verification import read_pair_list, read_pair_rows


def _write(tmp_path, text, name="pairs.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_tab_separated_paths_with_spaces(tmp_path):
    path = _write(tmp_path, "John Doe/1.jpg\tJohn Doe/2.jpg\t1\nJohn Doe/1.jpg\tJane Roe/1.jpg\t0\n")
    pairs, labels = read_pair_rows(path)
    assert pairs == [("John Doe/1.jpg", "John Doe/2.jpg"), ("John Doe/1.jpg", "Jane Roe/1.jpg")]
    assert labels == [True, False]


def test_comma_separated_paths_with_spaces_and_quotes(tmp_path):
    path = _write(tmp_path, 'John Doe/1.jpg, John Doe/2.jpg, same\n"Doe, John/1.jpg",Jane Roe/1.jpg,diff\n')
    pairs, labels = read_pair_rows(path)
    assert pairs == [("John Doe/1.jpg", "John Doe/2.jpg"), ("Doe, John/1.jpg", "Jane Roe/1.jpg")]
    assert labels == [True, False]


def test_lfw_header_fold_label_img1_img2(tmp_path):
    text = "fold,label,img1,img2\n0,1,Aaron Peirsol/0001.jpg,Aaron Peirsol/0002.jpg\n0,0,A/1.jpg,B/1.jpg\n"
    pairs, labels = read_pair_rows(_write(tmp_path, text, "pairs.csv"))
    assert pairs == [("Aaron Peirsol/0001.jpg", "Aaron Peirsol/0002.jpg"), ("A/1.jpg", "B/1.jpg")]
    assert labels == [True, False]


def test_plain_header_and_unlabelled_lists(tmp_path):
    pairs, labels = read_pair_rows(_write(tmp_path, "image_a,image_b,label\na.jpg,b.jpg,1\n"))
    assert pairs == [("a.jpg", "b.jpg")] and labels == [True]
    pairs, labels = read_pair_rows(_write(tmp_path, "# comment\na.jpg b.jpg\nc.jpg d.jpg\n"))
    assert pairs == [("a.jpg", "b.jpg"), ("c.jpg", "d.jpg")] and labels is None


def test_read_pair_list_finds_images_with_spaces(tmp_path):
    from PIL import Image

    for name in ("John Doe/1.png", "John Doe/2.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    paths, a, b, same = read_pair_list(
        str(_write(tmp_path, "fold,label,img1,img2\n0,1,John Doe/1.png,John Doe/2.png\n"))
    )
    assert [p.endswith(("1.png", "2.png")) for p in paths] == [True, True] and same.tolist() == [True]


@pytest.mark.parametrize(
    "text, message",
    [
        ("John Doe/1.jpg John Doe/2.jpg 1\n", "tab- or comma-separated"),
        ("fold,label,img1,img2\n0,1,a.jpg\n", "header names 4 columns"),
        ("a.jpg b.jpg maybe\n", "not 1/0"),
        ("a.jpg b.jpg 1\nc.jpg d.jpg\n", "on every line or on none"),
    ],
)
def test_bad_lists_are_named(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_pair_rows(_write(tmp_path, text))
