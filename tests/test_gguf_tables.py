"""Reading GGUF files: the fast path's lean tensor-table reader against gguf-py's own reader, and the
conversion's faster reader really being the one the conversion uses."""

from __future__ import annotations

import numpy as np
import pytest

from tokviz_app.engine import bundled
from tokviz_app.engine.quant_weights import read_gguf_blocks, read_gguf_tensors

gguf = pytest.importorskip("gguf")


def assert_same_tables(path):
    mine = read_gguf_tensors(path)
    theirs = gguf.GGUFReader(str(path)).tensors
    assert [t.name for t in mine] == [t.name for t in theirs]
    for lean, reference in zip(mine, theirs):
        assert lean.dims == tuple(int(d) for d in reference.shape), lean.name
        assert lean.kind == reference.tensor_type.name.lower(), lean.name
        assert np.array_equal(lean.data.reshape(-1), np.asarray(reference.data).reshape(-1).view(np.uint8)), lean.name
    return mine


def test_lean_reader_equals_gguf_on_a_file_with_every_kind_of_metadata(tmp_path):
    path = tmp_path / "small.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_custom_alignment(64)  # the data section starts at this alignment, not gguf's default 32
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_array("tokenizer.ggml.tokens", ["a", "<b>", "ü", ""])  # strings of every length, one empty
    writer.add_array("tokenizer.ggml.scores", [0.5, -1.0, 2.0, 0.0])
    writer.add_array("nested", [[1, 2], [3]])
    for add, value in ((writer.add_uint8, 7), (writer.add_int16, -3), (writer.add_uint64, 2**40),
                       (writer.add_float64, 0.25), (writer.add_bool, True), (writer.add_int32, -9)):
        add(f"custom.{add.__name__}", value)
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((6, 64)).astype(np.float32)
    for kind in (gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0):
        writer.add_tensor(f"blk.0.{kind.name}.weight", gguf.quantize(weights, kind), raw_dtype=kind)
    writer.add_tensor("output_norm.weight", rng.standard_normal(64).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tensors = assert_same_tables(path)
    assert [(t.kind, t.data.shape) for t in tensors] == [("q4_1", (6, 40)), ("q8_0", (6, 68)), ("f32", (1, 256))]


def test_lean_reader_equals_gguf_on_the_bundled_model():
    tensors = assert_same_tables(bundled.gguf_path())
    blocks = read_gguf_blocks(bundled.gguf_path())
    assert len(tensors) == 272 and len(blocks) == 30 * 7 + 1  # 7 matrices a layer and the tied head
    assert blocks["lm_head"].shape == (49152, 576) and blocks["model.layers.0.mlp.down_proj"].shape == (576, 1536)


def test_lean_reader_refuses_what_is_not_gguf(tmp_path):
    path = tmp_path / "not.gguf"
    path.write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(ValueError, match="not a little-endian GGUF"):
        read_gguf_tensors(path)


def test_the_conversion_parses_with_the_faster_reader():
    """The reader class is built before the conversion replaces gguf.GGUFReader (a class built after
    would subclass the replacement, fail, and leave gguf's 2-3x slower reader in use)."""
    bundled.plain_reader_class.cache_clear()
    with bundled._gguf_parsed_once(bundled._StagedProgress(None)):
        reader = gguf.GGUFReader(bundled.gguf_path())
        assert isinstance(reader, bundled.plain_reader_class())
        assert gguf.GGUFReader(bundled.gguf_path()) is reader  # parsed once
    assert gguf.GGUFReader.__name__ == "GGUFReader"


def test_the_blocks_are_copies_and_the_file_is_unmapped_once_read():
    """A mapped file's touched pages count in the process's RSS: after reading, the GGUF must be unmapped at
    once, not when the garbage collector next runs (a reference cycle held it: ~90 MB more RSS on the fast path)."""
    import gc

    path = str(bundled.gguf_path().resolve())
    gc.disable()
    try:
        blocks = read_gguf_blocks(bundled.gguf_path())
        with open("/proc/self/maps") as maps:
            assert path not in maps.read()
    finally:
        gc.enable()
    assert blocks["lm_head"].quants.is_contiguous() and blocks["lm_head"].scales.dtype.is_floating_point
