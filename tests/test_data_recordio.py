"""insightface RecordIO without mxnet: writer, reader, header record, index/record mismatches."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from petal_peft.data import (
    DataValidationError,
    FaceTransform,
    RecordIODataset,
    read_index,
    write_recordio,
)
from petal_peft.data.recordio import pack_record, read_record, unpack_record

MAGIC = 0xCED7230A


def _png(seed: int, size: int = 20) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _samples(n_ids: int = 3, per_id: int = 2):
    # Deliberately not grouped by label: the writer groups them (insightface needs contiguous id ranges).
    return [(_png(10 * j + i), i) for j in range(per_id) for i in range(n_ids)]


def _raw_records(rec: Path) -> list[tuple[int, int, bytes]]:
    """Independent parser for single-part records: (offset, cflag, payload)."""
    data, out, pos = rec.read_bytes(), [], 0
    while pos < len(data):
        magic, lrec = struct.unpack_from("<II", data, pos)
        assert magic == MAGIC
        length = lrec & ((1 << 29) - 1)
        out.append((pos, lrec >> 29, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (-length % 4)
    return out


def test_roundtrip_with_insightface_header(tmp_path):
    samples = _samples()
    rec, idx = write_recordio(tmp_path / "train", samples)
    assert rec.name == "train.rec" and idx.name == "train.idx"
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    ds = RecordIODataset(tmp_path / "train", transform=FaceTransform(20))
    assert len(ds) == 6 and ds.num_classes == 3 and ds.labels == [0, 0, 1, 1, 2, 2] and ds.keys == [1, 2, 3, 4, 5, 6]
    by_label = sorted(samples, key=lambda s: s[1])  # stable grouping the writer promises
    for i, (png, label) in enumerate(by_label):
        item = ds[i]
        assert item["labels"].item() == label
        assert torch.equal(item["pixel_values"], FaceTransform(20)(Image.open(io.BytesIO(png))))

    # The layout insightface's MXFaceDataset expects, checked with an independent parser.
    records = _raw_records(rec)
    index = read_index(idx)
    assert [off for off, _, _ in records] == [index[k] for k in sorted(index)]
    head_flag, _, _, _ = struct.unpack_from("<IfQQ", records[0][2])
    head_label = np.frombuffer(records[0][2][24 : 24 + 8], dtype="<f4")
    assert head_flag == 2 and head_label.tolist() == [7.0, 10.0] and len(records[0][2]) == 32
    id_ranges = [np.frombuffer(r[2][24:32], dtype="<f4").tolist() for r in records[7:]]
    assert id_ranges == [[1.0, 3.0], [3.0, 5.0], [5.0, 7.0]]
    flag, label, _, _ = struct.unpack_from("<IfQQ", records[3][2])
    assert flag == 0 and label == 1.0 and records[3][2][24:] == by_label[2][0]


def test_roundtrip_without_header_and_other_path_forms(tmp_path):
    write_recordio(tmp_path / "data" / "faces", _samples(), insightface_header=False)
    ds = RecordIODataset(tmp_path / "data" / "faces.rec")
    assert ds.keys == list(range(6)) and ds.labels == [0, 1, 2, 0, 1, 2]
    assert RecordIODataset(tmp_path / "data" / "faces.idx").labels == ds.labels
    write_recordio(tmp_path / "dir" / "train", _samples())
    assert len(RecordIODataset(tmp_path / "dir")) == 6
    with pytest.raises(DataValidationError, match=r"missing .*nothere\.rec"):
        RecordIODataset(tmp_path / "nothere")


def test_reads_a_file_written_the_mxnet_way_with_label_arrays(tmp_path):
    """Records packed by hand like mx.recordio.pack with array labels (flag > 0): label[0] is the identity."""
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    # Header: images are keys 1..4, identities 0..3 (their records are not needed for reading).
    payloads = [struct.pack("<IfQQ", 2, 0.0, 0, 0) + np.array([5, 9], "<f4").tobytes()]
    for key, label in zip(range(1, 5), [3, 3, 0, 1], strict=True):
        payloads.append(struct.pack("<IfQQ", 2, 0.0, key, 0) + np.array([label, 0.5], "<f4").tobytes() + _png(key))
    with open(rec, "wb") as r, open(idx, "w") as x:
        for key, payload in enumerate(payloads):
            x.write(f"{key}\t{r.tell()}\n")
            r.write(struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4))
    ds = RecordIODataset(tmp_path)
    assert ds.labels == [3, 3, 0, 1] and ds.num_classes == 4
    assert ds[3]["pixel_values"].shape == (3, 112, 112)


def test_payload_containing_the_magic_word_is_split_and_reassembled(tmp_path):
    magic = struct.pack("<I", MAGIC)
    image = _png(0)
    # Put the magic at 4-byte-aligned payload positions (IRHeader is 24 bytes, so offsets in the image +24).
    tricky = b"ABCD" + magic + b"EFGH" + magic + magic + b"tail!"
    samples = [(tricky, 0), (image, 1), (image, 1)]
    rec, idx = write_recordio(tmp_path / "train", samples, insightface_header=False)
    raw = rec.read_bytes()
    flags = []
    pos = 0
    while pos < len(raw):
        _, lrec = struct.unpack_from("<II", raw, pos)
        length = lrec & ((1 << 29) - 1)
        flags.append(lrec >> 29)
        pos += 8 + length + (-length % 4)
    assert flags[:4] == [1, 2, 2, 3] and flags[4:] == [0, 0]  # dmlc's begin / middle / end parts
    with open(rec, "rb") as fh:
        header, data = unpack_record(read_record(fh, read_index(idx)[0]))
    assert header.label == 0.0 and data == tricky
    ds = RecordIODataset(tmp_path / "train", check_images=False, min_identities=2)
    assert ds.labels == [0, 1, 1]
    with pytest.raises(DataValidationError, match="record 0: not a readable image"):
        ds[0]


def _write(tmp_path: Path, name: str = "train", **kw) -> tuple[Path, Path]:
    return write_recordio(tmp_path / name, _samples(), **kw)


def test_index_that_does_not_match_the_rec_is_refused(tmp_path):
    rec, idx = _write(tmp_path)
    lines = idx.read_text().splitlines()
    # 1) offsets shifted by one record's worth of bytes.
    shifted = [f"{k}\t{int(o) + 4}" for k, o in (line.split("\t") for line in lines)]
    idx.write_text("\n".join(shifted) + "\n")
    with pytest.raises(DataValidationError, match="not match this .rec"):
        RecordIODataset(tmp_path / "train")
    # 2) an offset past the end of the file.
    idx.write_text("\n".join(lines[:-1] + [f"{len(lines) - 1}\t{rec.stat().st_size + 64}"]) + "\n")
    with pytest.raises(DataValidationError, match="past the end"):
        RecordIODataset(tmp_path / "train")
    # 3) the index of another, differently sized .rec.
    _, other_idx = write_recordio(tmp_path / "other", [(_png(99, size=40), i % 3) for i in range(6)])
    idx.write_text(other_idx.read_text())
    with pytest.raises(DataValidationError, match="does not match"):
        RecordIODataset(tmp_path / "train")
    # 4) an index that misses trailing records (the .rec is longer than the indexed records).
    idx.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(DataValidationError, match="last indexed record"):
        RecordIODataset(tmp_path / "train")
    # 5) header says images are keys 1..6, but some are not indexed.
    idx.write_text("\n".join(line for line in lines if not line.startswith("3\t")) + "\n")
    with pytest.raises(DataValidationError, match=r"lacks 1 of them \(e\.g\. \[3\]\)"):
        RecordIODataset(tmp_path / "train")


def test_truncated_rec_and_malformed_idx(tmp_path):
    rec, idx = _write(tmp_path)
    good_idx = idx.read_text()
    data = rec.read_bytes()
    rec.write_bytes(data[:-10])
    with pytest.raises(DataValidationError, match=r"truncated \.rec|does not match"):
        RecordIODataset(tmp_path / "train")
    rec.write_bytes(data)
    idx.write_text("0\t0\nthis is not an index line\n")
    with pytest.raises(DataValidationError, match=r"train\.idx:2: expected '<key>\\t<offset>'"):
        RecordIODataset(tmp_path / "train")
    idx.write_text("0\t0\n0\t0\n")
    with pytest.raises(DataValidationError, match="key 0 appears twice"):
        RecordIODataset(tmp_path / "train")
    idx.write_text("")
    with pytest.raises(DataValidationError, match="is empty"):
        RecordIODataset(tmp_path / "train")
    idx.write_text(good_idx)
    assert len(RecordIODataset(tmp_path / "train")) == 6


def test_bad_labels_and_images_inside_the_rec(tmp_path):
    write_recordio(tmp_path / "single", [(_png(i), 4) for i in range(3)])
    with pytest.raises(DataValidationError, match="has 1 identity"):
        RecordIODataset(tmp_path / "single")
    samples = _samples()
    samples[2] = (samples[2][0][: len(samples[2][0]) // 2], samples[2][1])  # cut PNG, label 2
    write_recordio(tmp_path / "cut", samples)
    with pytest.raises(DataValidationError, match=r"cut\.rec record 5: .*truncated"):
        RecordIODataset(tmp_path / "cut")
    rec, idx = tmp_path / "frac.rec", tmp_path / "frac.idx"
    with open(rec, "wb") as r, open(idx, "w") as x:
        for key, label in enumerate([0.0, 1.5]):
            payload = pack_record(label, _png(key))
            x.write(f"{key}\t{r.tell()}\n")
            r.write(struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4))
    with pytest.raises(DataValidationError, match="record 1 has label 1.5"):
        RecordIODataset(tmp_path / "frac")
    with pytest.raises(ValueError, match="non-negative integers"):
        write_recordio(tmp_path / "neg", [(_png(0), -1)])


@pytest.mark.slow
def test_dataloader_workers_open_their_own_file(tmp_path):
    _write(tmp_path)
    ds = RecordIODataset(tmp_path / "train", transform=FaceTransform(20))
    single = [b for b in DataLoader(ds, batch_size=4)]
    multi = [b for b in DataLoader(ds, batch_size=4, num_workers=2)]
    for a, b in zip(single, multi, strict=True):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])
