"""insightface ``train.rec`` / ``train.idx`` (MXNet indexed RecordIO), read and written without mxnet.

Format (dmlc-core ``recordio``): each record is ``uint32 magic 0xCED7230A``, ``uint32 lrec`` (upper 3 bits:
continuation flag, lower 29: length), the payload, zero padding to 4 bytes. A payload that contains the magic
word at a 4-byte-aligned position is split there into parts (flags 1 = first, 2 = middle, 3 = last) and the
magic is dropped; the reader puts it back. The ``.idx`` is text, ``key<TAB>byte offset`` per line.

Payload (``mx.recordio.pack``): an ``IRHeader`` struct ``<IfQQ`` (flag, label, id, id2; 24 bytes), then
``flag`` float32 labels when ``flag > 0``, then the encoded image. insightface stores a header at key 0 with
label ``[n + 1, n + 1 + num_ids]`` and empty image: images are keys ``1..n``, followed by one record per
identity whose label ``[start, end)`` is its image-key range.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from petal_peft.data.base import FaceDataset, open_rgb
from petal_peft.data.errors import DataValidationError
from petal_peft.data.transforms import FaceTransform, LowResolutionDegradation
from petal_peft.data.validation import validate_face_dataset
from petal_peft.files import write_file_atomic
from petal_peft.images import to_rgb8

__all__ = [
    "IRHeader",
    "RecordIODataset",
    "pack_record",
    "read_index",
    "read_record",
    "resolve_recordio_paths",
    "unpack_record",
    "write_recordio",
]

RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24
_LENGTH_MASK = (1 << 29) - 1


@dataclass
class IRHeader:
    """MXNet's image-record header. ``label`` is a float, or a float32 array when ``flag > 0``."""

    flag: int
    label: float | np.ndarray
    id: int = 0
    id2: int = 0


def pack_record(label: float | Iterable[float], image: bytes = b"", id: int = 0, id2: int = 0) -> bytes:
    """Payload for one record: IRHeader (+ label array) + encoded image, as ``mx.recordio.pack`` makes it."""
    if isinstance(label, int | float | np.integer | np.floating):
        return struct.pack(_IR_FORMAT, 0, float(label), id, id2) + image
    arr = np.asarray(list(label), dtype="<f4")
    return struct.pack(_IR_FORMAT, arr.size, 0.0, id, id2) + arr.tobytes() + image


def unpack_record(payload: bytes, name: str = "record") -> tuple[IRHeader, bytes]:
    """Split a payload into its IRHeader and the encoded image bytes."""
    if len(payload) < _IR_SIZE:
        raise DataValidationError(f"{name}: {len(payload)} bytes, too short for a {_IR_SIZE}-byte IRHeader.")
    flag, label, id_, id2 = struct.unpack_from(_IR_FORMAT, payload)
    rest = payload[_IR_SIZE:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise DataValidationError(f"{name}: header announces {flag} labels but the record is too short.")
        return IRHeader(flag, np.frombuffer(rest[: 4 * flag], dtype="<f4").copy(), id_, id2), rest[4 * flag :]
    return IRHeader(flag, label, id_, id2), rest


def _write_record(fh: BinaryIO, payload: bytes) -> None:
    """Write one record, splitting at aligned magic words exactly like dmlc's RecordIOWriter."""
    if len(payload) >= 1 << 29:
        raise ValueError(f"record of {len(payload)} bytes exceeds RecordIO's 512 MiB limit.")
    start = 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i : i + 4] == _MAGIC_BYTES:
            fh.write(_MAGIC_BYTES + struct.pack("<I", ((1 if start == 0 else 2) << 29) | (i - start)))
            fh.write(payload[start:i])
            start = i + 4
    rest = len(payload) - start
    fh.write(_MAGIC_BYTES + struct.pack("<I", ((3 if start else 0) << 29) | rest))
    fh.write(payload[start:])
    fh.write(b"\0" * (-rest % 4))


def read_record(fh: BinaryIO, offset: int, name: str = "record") -> bytes:
    """Read the (possibly multi-part) record starting at byte ``offset``."""
    fh.seek(offset)
    parts: list[bytes] = []
    while True:
        head = fh.read(8)
        if len(head) < 8:
            raise DataValidationError(f"{name} at offset {offset}: file ends inside a record header.")
        magic, lrec = struct.unpack("<II", head)
        if magic != RECORDIO_MAGIC:
            raise DataValidationError(
                f"{name} at offset {offset}: no RecordIO magic (found 0x{magic:08x}); the .idx offsets do "
                "not match this .rec."
            )
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        data = fh.read(length + (-length % 4))
        if len(data) < length:
            raise DataValidationError(f"{name} at offset {offset}: file ends inside the record (truncated .rec).")
        parts.append(data[:length])
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts)
        if cflag not in (1, 2):
            raise DataValidationError(f"{name} at offset {offset}: invalid continuation flag {cflag}.")


def read_index(idx_path: str | os.PathLike) -> dict[int, int]:
    """Parse an ``.idx`` file into ``{key: offset}``."""
    index: dict[int, int] = {}
    with open(idx_path, encoding="ascii", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                key, offset = int(fields[0]), int(fields[1])
                if len(fields) != 2 or offset < 0:
                    raise ValueError
            except (ValueError, IndexError):
                raise DataValidationError(
                    f"{idx_path}:{lineno}: expected '<key>\\t<offset>', got {line.strip()[:60]!r}."
                ) from None
            if key in index:
                raise DataValidationError(f"{idx_path}:{lineno}: key {key} appears twice.")
            index[key] = offset
    if not index:
        raise DataValidationError(f"{idx_path} is empty: no records indexed.")
    return index


def resolve_recordio_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """Accept a prefix (``/data/train``), a ``.rec`` or ``.idx`` path, or a folder holding train.rec/.idx."""
    p = Path(path)
    if p.is_dir():
        p = p / "train"
    elif p.suffix in (".rec", ".idx"):
        p = p.with_suffix("")
    rec, idx = p.with_name(p.name + ".rec"), p.with_name(p.name + ".idx")
    missing = [str(f) for f in (rec, idx) if not f.is_file()]
    if missing:
        raise DataValidationError(f"RecordIO dataset {path}: missing {', '.join(missing)}.")
    return rec, idx


def _encode_image(image: Any, jpeg_quality: int) -> bytes:
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        return Path(image).read_bytes()
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        to_rgb8(image).save(buf, format="JPEG", quality=jpeg_quality)
        return buf.getvalue()
    raise TypeError(f"image must be encoded bytes, a file path or a PIL image, got {type(image).__name__}.")


def write_recordio(
    path_prefix: str | os.PathLike,
    samples: Iterable[tuple[Any, int]],
    *,
    insightface_header: bool = True,
    jpeg_quality: int = 95,
) -> tuple[Path, Path]:
    """Write ``<prefix>.rec`` and ``<prefix>.idx`` from ``(image, label)`` pairs; returns both paths.

    ``image`` is encoded bytes (written as is), a file path (its bytes) or a PIL image (JPEG-encoded).
    With ``insightface_header`` (default) the layout is insightface's: header at key 0, images at keys
    1..n grouped by label (stable order within a label), then one identity record per label 0..max. Both files
    are written to temporary names and renamed, so a crash never leaves a half-written pair.
    """
    items = [(_encode_image(img, jpeg_quality), label) for img, label in samples]
    for _, label in items:
        if int(label) != label or label < 0:
            raise ValueError(f"labels must be non-negative integers, got {label!r}.")
    prefix = Path(path_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    rec_path, idx_path = prefix.with_name(prefix.name + ".rec"), prefix.with_name(prefix.name + ".idx")
    records: list[tuple[int, bytes]] = []
    if insightface_header:
        items.sort(key=lambda it: int(it[1]))
        n = len(items)
        # One identity record per label 0..max (an absent label gets an empty range), as insightface has.
        num_ids = max((int(label) for _, label in items), default=-1) + 1
        ranges: dict[int, list[int]] = {}
        for key, (_, label) in enumerate(items, start=1):
            ranges.setdefault(int(label), [key, key + 1])[1] = key + 1
        records.append((0, pack_record([n + 1, n + 1 + num_ids])))
        records += [(key, pack_record(int(label), data)) for key, (data, label) in enumerate(items, start=1)]
        for label in range(num_ids):
            start = ranges.get(label, [None])[0]
            if start is None:  # empty range at the position where this label would start
                start = next((r[0] for lab, r in sorted(ranges.items()) if lab > label), n + 1)
            records.append((n + 1 + label, pack_record(ranges.get(label, [start, start]))))
    else:
        records = [(key, pack_record(int(label), data)) for key, (data, label) in enumerate(items)]

    offsets: list[tuple[int, int]] = []

    def write_records(tmp: str) -> None:
        offsets.clear()
        with open(tmp, "wb") as rec:
            for key, payload in records:
                offsets.append((key, rec.tell()))
                _write_record(rec, payload)

    # the .rec first, then its index: an index never points into a file that is not there yet
    write_file_atomic(rec_path, write_records)
    index = "".join(f"{key}\t{offset}\n" for key, offset in offsets)
    write_file_atomic(idx_path, lambda tmp: Path(tmp).write_text(index, encoding="ascii"))
    return rec_path, idx_path


class RecordIODataset(FaceDataset):
    """An insightface-style ``train.rec``/``train.idx`` pair as a FaceDataset (no mxnet needed).

    Construction reads every record's header once (labels, and a check that each .idx offset points at a
    record inside the .rec). A key-0 header record (insightface) selects keys ``1..n`` as images; without
    one, every indexed record is an image. Image labels: the header float, or the first label of an array.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        transform: FaceTransform | None = None,
        degradation: LowResolutionDegradation | None = None,
        seed: int = 0,
        *,
        check_images: bool = True,
        decode_limit: int | None = 256,
        min_identities: int = 2,
    ) -> None:
        super().__init__(transform, degradation, seed)
        self.rec_path, self.idx_path = resolve_recordio_paths(path)
        self.description = f"RecordIO dataset {self.rec_path}"
        self._fh: BinaryIO | None = None
        self._fh_pid = -1
        index = read_index(self.idx_path)
        self._rec_size = rec_size = self.rec_path.stat().st_size
        for key, offset in index.items():
            if offset + 8 > rec_size:
                raise DataValidationError(
                    f"{self.idx_path}: key {key} points at offset {offset}, past the end of {self.rec_path} "
                    f"({rec_size} bytes); the index does not match this .rec."
                )
        misaligned = [(k, o) for k, o in index.items() if o % 4]
        if misaligned:
            raise DataValidationError(
                f"{self.idx_path}: offsets {misaligned[:5]} are not multiples of 4 (RecordIO records are "
                "4-byte aligned); the index does not match this .rec."
            )
        last_key = max(index, key=index.__getitem__)
        last_end = self._record_end(index[last_key], last_key)
        if last_end != rec_size:
            raise DataValidationError(
                f"{self.rec_path} has {rec_size} bytes but its last indexed record (key {last_key}) ends at "
                f"byte {last_end}; the index does not match this .rec (another file's index, or a "
                "truncated or appended .rec)."
            )
        keys = sorted(index)
        header_range: tuple[int, int] | None = None
        if 0 in index:
            head, image_size = self._peek_header(index[0], 0)
            if head.flag >= 2 and image_size == 0:
                first, end = int(head.label[0]), int(head.label[1])
                if first < 1:
                    raise DataValidationError(f"{self.rec_path}: header record 0 has invalid label {head.label}.")
                header_range = (first, end)
                keys = list(range(1, first))
                missing = [k for k in keys if k not in index]
                if missing:
                    raise DataValidationError(
                        f"{self.rec_path}: header says images are keys 1..{first - 1}, but the .idx lacks "
                        f"{len(missing)} of them (e.g. {missing[:5]}); the index does not match this .rec."
                    )
        self.keys = keys
        self.offsets = [index[k] for k in keys]
        labels: list[int] = []
        for key, offset in tqdm(
            zip(keys, self.offsets), total=len(keys), desc="reading RecordIO headers",
            disable=len(keys) < 20000, leave=False,
        ):  # fmt: skip
            head, _ = self._peek_header(offset, key)
            value = float(head.label[0] if head.flag > 0 else head.label)
            if value != int(value) or value < 0:
                raise DataValidationError(
                    f"{self.rec_path}: record {key} has label {value}, not a non-negative integer."
                )
            labels.append(int(value))
        self.labels = labels
        self.num_classes = max(labels) + 1 if labels else 0
        if header_range is not None and header_range[1] > header_range[0]:
            n_ids = header_range[1] - header_range[0]
            if self.num_classes > n_ids:
                raise DataValidationError(
                    f"{self.rec_path}: header declares {n_ids} identities but image labels go up to "
                    f"{self.num_classes - 1}."
                )
            self.num_classes = n_ids
        self._close()
        validate_face_dataset(self, check_images=check_images, decode_limit=decode_limit, min_identities=min_identities)

    def _file(self) -> BinaryIO:
        # One handle per process: DataLoader workers fork/spawn copies of the dataset.
        if self._fh is None or self._fh_pid != os.getpid():
            self._fh = open(self.rec_path, "rb")  # noqa: SIM115
            self._fh_pid = os.getpid()
        return self._fh

    def _close(self) -> None:
        if self._fh is not None and self._fh_pid == os.getpid():
            self._fh.close()
        self._fh = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fh"], state["_fh_pid"] = None, -1
        return state

    def __del__(self) -> None:
        try:
            self._close()
        except Exception:
            pass

    def _record_end(self, offset: int, key: int) -> int:
        """Byte position just past the record (all parts, padding included) that starts at ``offset``."""
        fh = self._file()
        read_record(fh, offset, name=f"{self.rec_path} record {key}")
        return fh.tell()

    def _read_header(self, offset: int, key: int) -> tuple[IRHeader, bytes]:
        payload = read_record(self._file(), offset, name=f"{self.rec_path} record {key}")
        return unpack_record(payload, name=f"{self.rec_path} record {key}")

    def _peek_header(self, offset: int, key: int) -> tuple[IRHeader, int]:
        """IRHeader and image size of a record, reading only its first bytes when it is single-part."""
        fh = self._file()
        fh.seek(offset)
        head = fh.read(8 + _IR_SIZE + 64)
        if len(head) >= 8:
            magic, lrec = struct.unpack_from("<II", head)
            cflag, length = lrec >> 29, lrec & _LENGTH_MASK
            if magic == RECORDIO_MAGIC and cflag == 0 and len(head) >= 8 + _IR_SIZE and length >= _IR_SIZE:
                flag = struct.unpack_from("<I", head, 8)[0]
                if 8 + _IR_SIZE + 4 * flag <= len(head) and _IR_SIZE + 4 * flag <= length:
                    header, _ = unpack_record(head[8 : 8 + _IR_SIZE + 4 * flag])
                    if offset + 8 + length > self._rec_size:
                        raise DataValidationError(
                            f"{self.rec_path} record {key} at offset {offset}: file ends inside the record "
                            "(truncated .rec)."
                        )
                    return header, length - _IR_SIZE - 4 * flag
        header, image = self._read_header(offset, key)  # multi-part, odd or broken: take the careful path
        return header, len(image)

    def image_source(self, index: int) -> tuple[str, str | bytes]:
        key = self.keys[index]
        _, image = self._read_header(self.offsets[index], key)
        return f"{self.rec_path} record {key}", image

    def load_image(self, index: int) -> Image.Image:
        name, data = self.image_source(index)
        if not data:
            raise DataValidationError(f"{name}: record holds no image bytes.")
        return open_rgb(data, name)
