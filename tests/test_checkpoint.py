import pytest
import torch
from safetensors.torch import save_file

from pdediff.data.checkpoint import load_checkpoint, read_metadata, save_checkpoint


def test_round_trip_is_bitwise(tmp_path):
    t = {"model.w": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), "rng.x": torch.arange(5, dtype=torch.uint8)}
    path = save_checkpoint(tmp_path / "c.safetensors", t, {"step": 3, "config": {"a": 1}})
    tensors, meta = load_checkpoint(path)
    assert meta["step"] == 3 and meta["config"] == {"a": 1}
    for k in t:
        assert torch.equal(tensors[k], t[k])
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_checkpoints_are_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_metadata(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="too short"):
        read_metadata(junk)
    junk.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(ValueError, match="not a safetensors file|corrupt"):
        read_metadata(junk)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a pdediff checkpoint"):
        read_metadata(foreign)
    good = save_checkpoint(tmp_path / "good.safetensors", {"model.w": torch.zeros(1000)}, {"step": 1})
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        load_checkpoint(cut)


def test_malformed_headers_and_metadata_get_value_errors(tmp_path):
    import json
    import struct

    def raw(header) -> bytes:
        text = json.dumps(header).encode()
        return struct.pack("<Q", len(text)) + text

    cases = {
        "list": [1, 2],
        "meta_not_json": {"__metadata__": {"pdediff": "{not json"}},
        "meta_list": {"__metadata__": {"pdediff": "[1]"}},
        "bad_version": {"__metadata__": {"pdediff": json.dumps({"format": "pdediff-checkpoint", "format_version": "x"})}},
        "future": {"__metadata__": {"pdediff": json.dumps({"format": "pdediff-checkpoint", "format_version": 99})}},
    }
    for name, header in cases.items():
        f = tmp_path / f"{name}.safetensors"
        f.write_bytes(raw(header))
        with pytest.raises(ValueError, match=name + r"\.safetensors"):
            read_metadata(f)
