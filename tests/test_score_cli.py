"""`tokviz score`: the corpus scorer, checked against an independent full forward pass of the same ids."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.server_process import clean_env
from tokviz_app.main import main
from tokviz_app.core.windows import score_by_sessions
from tokviz_app.engine import window_scoring
from tokviz_app.scoring import corpus
from tokviz_app.scoring.align import align, token_pieces

TEXT = "Hello world! Emoji: 🦊 🐶 ✨ café naïve résumé.\r\nNew lines\n\tand tabs.  The quick brown fox 🦊."
OTHER = "A language model predicts the next token from the ones before it. Hallo Welt. ✨"
LONG = ("The quick brown fox jumps over the lazy dog. A language model predicts the next token from the ones "
        "before it. Emoji: 🦊 café. ") * 12  # over the tiny model's 256-token context


def write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def score(capsys, *args: str) -> tuple[int, str, str]:
    """`tokviz score ARGS` in this process (through the same entry as the console script)."""
    code = main(["score", *args, "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line]


def plain_logprobs(folder, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-prob, rank, entropy in bits) of ids[1:] from one fp32 forward of a separately loaded copy."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
    logprobs = torch.log_softmax(logits, -1)
    target = torch.tensor(ids[1:])
    chosen = logprobs[torch.arange(len(target)), target]
    rank = (logits > logits[torch.arange(len(target)), target].unsqueeze(-1)).sum(-1) + 1
    entropy = -(logprobs.exp() * logprobs).sum(-1) / math.log(2)
    return chosen, rank, entropy


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    from tokviz_app.engine import ModelManager

    return ModelManager(device="cpu").load(str(tiny_model_path))


def test_logprobs_equal_a_plain_forward_and_texts_rebuild_the_file(capsys, tmp_path, tiny_model_path, tiny):
    path = write(tmp_path, "a.txt", TEXT)
    code, out, err = score(capsys, path, "--model", str(tiny_model_path))
    assert code == 0 and "scored 1 file" in err
    rows = jsonl(out)
    assert "".join(r["text"] for r in rows) == TEXT  # emoji split over tokens, accents, "\r\n" and tabs
    assert [r["index"] for r in rows] == list(range(len(rows)))
    assert all(TEXT[r["start"]:r["end"]] == r["text"] for r in rows)
    assert any(r["text"] == "" and r["start"] == r["end"] for r in rows)  # a token ending inside 🦊
    ids = [tiny.bos_token_id] + [r["token_id"] for r in rows]  # scored after the beginning-of-text token
    logprob, rank, entropy = plain_logprobs(tiny_model_path, ids)
    assert max(abs(r["logprob"] - float(lp)) for r, lp in zip(rows, logprob)) < 1e-4
    assert [r["rank"] for r in rows] == rank.tolist()
    assert max(abs(r["entropy_bits"] - float(e)) for r, e in zip(rows, entropy)) < 1e-4
    assert all(abs(r["surprisal_bits"] + r["logprob"] / math.log(2)) < 1e-12 for r in rows)
    assert all(r["full_context"] and r["context_tokens"] == r["index"] + 1 and r["note"] == "" for r in rows)


def test_the_session_path_gives_the_batched_numbers(tiny):
    texts = [corpus.text_ids(tiny, t) for t in (TEXT, OTHER, LONG)]
    prefix = corpus.prefix_ids(tiny, None)
    batched = corpus.score(tiny, texts, prefix, 100, batched=True)
    sessions = corpus.score(tiny, texts, prefix, 100, batched=False)  # the contract: start_from_ids per window
    for a, b in zip(batched, sessions):
        assert [(s.rank, s.context_tokens, s.full_context) for s in a] == [
            (s.rank, s.context_tokens, s.full_context) for s in b]
        assert max(abs(x.logprob - y.logprob) for x, y in zip(a, b)) < 1e-4
    # a small budget: windows over it take the session's chunked pass, the rest share small batches
    windows = [w.ids for w in corpus.plan_all(tiny, texts, prefix, 100)]
    assert len(window_scoring.batches([len(w) for w in windows], 64)) > 1 and max(map(len, windows)) > 64
    done: list[int] = []
    mixed = tiny.score_windows(windows, budget=64, done=done.append)
    assert sorted(done) == list(range(len(windows)))
    for window, rows in zip(windows, mixed):
        alone = score_by_sessions(tiny, [window], threads=1)[0]
        assert [r[1] for r in rows] == [r[1] for r in alone] and rows[0] == (None, None, None)
        assert max(abs(x[0] - y[0]) + abs(x[2] - y[2]) for x, y in zip(rows[1:], alone[1:])) < 1e-4


def test_a_model_compared_with_itself_has_zero_delta_and_a_context_moves_it(capsys, tmp_path, tiny_model_path):
    path = write(tmp_path, "a.txt", TEXT)
    code, out, _ = score(capsys, path, "--model", str(tiny_model_path), "--compare", str(tiny_model_path))
    rows = jsonl(out)
    assert code == 0 and rows and all(r["delta"] == 0 and r["rank_b"] == r["rank"] for r in rows)
    assert isinstance(rows[0]["token_id"], int)  # the same tokenizer: one row per token
    context = write(tmp_path, "context.txt", "Tokens are coloured by probability.")
    code, out, _ = score(capsys, path, "--model", str(tiny_model_path), "--context-b", context)
    moved = jsonl(out)
    assert [r["token_id"] for r in moved] == [r["token_id"] for r in rows]
    assert [r["logprob"] for r in moved] == [r["logprob"] for r in rows]
    assert all(abs(r["delta"] - (r["logprob_b"] - r["logprob"])) < 1e-12 for r in moved)
    assert sum(abs(r["delta"]) for r in moved) > 1.0


def test_csv_output_parses_and_resumes_after_an_interruption(capsys, tmp_path, tiny_model_path):
    files = [write(tmp_path, "a.txt", TEXT), write(tmp_path, "b.txt", OTHER)]
    out = tmp_path / "scores.csv"
    code, stdout, err = score(capsys, *files, "--model", str(tiny_model_path), "-o", str(out))
    assert code == 0 and stdout == ""
    complete = out.read_bytes()
    with open(out, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["file", "index", "start", "end", "text", "token_id", "logprob", "surprisal_bits", "rank",
                             "entropy_bits", "context_tokens", "full_context", "note"]
    for name, text in zip(files, (TEXT, OTHER)):
        assert "".join(r["text"] for r in rows if r["file"] == name) == text
    assert all(float(r["logprob"]) < 0 and int(r["rank"]) >= 1 and r["full_context"] == "true" for r in rows)

    code, _, err = score(capsys, *files, "--model", str(tiny_model_path), "-o", str(out))
    assert code == 0 and "2 of 2 files are already complete" in err and "scored" not in err
    assert out.read_bytes() == complete

    out.write_bytes(complete[: len(complete) - 700])  # interrupted while writing the second file's rows
    code, _, err = score(capsys, *files, "--model", str(tiny_model_path), "-o", str(out))
    assert code == 0 and "1 of 2 files are already complete" in err and "scored 1 file" in err
    with open(out, newline="", encoding="utf-8") as stream:
        resumed = list(csv.DictReader(stream))
    assert out.read_bytes().startswith(complete[:complete.index(files[1].encode())])  # the first file's rows kept
    # the same rows; b.txt was batched alone this time, so its last digits may differ
    assert [[v for k, v in r.items() if k not in ("logprob", "surprisal_bits", "entropy_bits")] for r in resumed] == [
        [v for k, v in r.items() if k not in ("logprob", "surprisal_bits", "entropy_bits")] for r in rows]
    assert max(abs(float(a["logprob"]) - float(b["logprob"])) for a, b in zip(resumed, rows)) < 1e-5


def test_jsonl_words_sum_their_tokens(capsys, tmp_path, tiny_model_path):
    path = write(tmp_path, "a.txt", TEXT)
    _, out, _ = score(capsys, path, "--model", str(tiny_model_path))
    tokens = jsonl(out)
    code, out, _ = score(capsys, path, "--model", str(tiny_model_path), "--words", "--format", "jsonl")
    words = jsonl(out)
    assert code == 0 and [w["text"] for w in words] == TEXT.split()
    assert all(TEXT[w["start"]:w["end"]] == w["text"] for w in words)
    assert math.isclose(sum(w["logprob"] for w in words), sum(t["logprob"] for t in tokens), rel_tol=1e-12)
    assert sum(w["tokens"] for w in words) == len(tokens)
    # "world!" = " wor" + "ld" + "!": its first token carries the space before it
    world = next(w for w in words if w["text"] == "world!")
    parts = [t for t in tokens if t["start"] >= world["start"] - 1 and t["end"] <= world["end"]]
    assert [t["text"] for t in parts] == [" wor", "ld", "!"]
    assert math.isclose(world["logprob"], sum(t["logprob"] for t in parts), rel_tol=1e-12)
    assert math.isclose(world["surprisal_bits"], -world["logprob"] / math.log(2), rel_tol=1e-12)


def test_a_sliding_window_scores_a_long_text_and_marks_the_cut_context(capsys, tmp_path, tiny_model_path, tiny):
    path = write(tmp_path, "long.txt", LONG)
    code, out, _ = score(capsys, path, "--model", str(tiny_model_path), "--stride", "100")
    rows = jsonl(out)
    assert code == 0 and len(rows) > 256 and "".join(r["text"] for r in rows) == LONG
    ids = [r["token_id"] for r in rows]
    # window 1 holds BOS + tokens 0..254 with full context; window 2 starts at token 100, scores 255..354
    assert all(r["full_context"] for r in rows[:255]) and not any(r["full_context"] for r in rows[255:])
    assert [r["context_tokens"] for r in rows[255:258]] == [156, 157, 158]
    assert max(r["context_tokens"] for r in rows) <= 255
    logprob, _, _ = plain_logprobs(tiny_model_path, [tiny.bos_token_id] + ids[100:355])
    assert max(abs(r["logprob"] - float(lp)) for r, lp in zip(rows[255:355], logprob[155:])) < 1e-4
    code, _, err = score(capsys, path, "--model", str(tiny_model_path), "--stride", "300")
    assert code == 2 and "stride must be between 1 and 255" in err


def test_without_a_beginning_of_text_token_the_first_token_has_no_score(capsys, tmp_path, tiny_model_path):
    folder = tmp_path / "no-bos"
    shutil.copytree(tiny_model_path, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    for key in ("bos_token", "eos_token", "unk_token"):
        config.pop(key, None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    path = write(tmp_path, "a.txt", OTHER)
    code, out, _ = score(capsys, path, "--model", str(folder))
    rows = jsonl(out)
    assert code == 0 and rows[0]["logprob"] is None and rows[0]["rank"] is None
    assert "no beginning-of-text token" in rows[0]["note"] and all(r["note"] == "" for r in rows[1:])
    logprob, _, _ = plain_logprobs(tiny_model_path, [r["token_id"] for r in rows])
    assert max(abs(r["logprob"] - float(lp)) for r, lp in zip(rows[1:], logprob)) < 1e-4


def test_alignment_conserves_mass_and_cuts_only_at_shared_boundaries(tiny):
    a = ["Hel", "lo", " wor", "ld", "", " 🦊", "!"]
    b = ["H", "ello", " ", "world", " ", "", "🦊!"]
    spans = align(a, b)
    assert [(s.start, s.end) for s in spans] == [(0, 5), (5, 11), (11, 14)]
    assert [list(s.a) for s in spans] == [[0, 1], [2, 3], [4, 5, 6]]
    assert [list(s.b) for s in spans] == [[0, 1], [2, 3], [4, 5, 6]]
    pieces = token_pieces(tiny.decode, corpus.text_ids(tiny, TEXT))
    assert "".join(pieces) == TEXT
    itself = align(pieces, pieces)  # every boundary is shared: a span is one token (after any split-off bytes)
    assert all(s.a == s.b and sum(1 for k in s.a if pieces[k]) == 1 for s in itself)


def test_the_console_script_writes_csv(tmp_path, tiny_model_path):
    path = write(tmp_path, "a.txt", OTHER)
    command = [str(Path(sys.executable).parent / "tokviz"), "score", path, "--model", str(tiny_model_path),
               "--format", "csv", "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, env=clean_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout, newline="")))
    assert "".join(r["text"] for r in rows) == OTHER and "tokviz score: scored 1 file" in done.stderr


def test_mistakes_get_one_sentence_and_exit_code_2(capsys, tmp_path, tiny_model_path):
    path = write(tmp_path, "a.txt", OTHER)
    code, out, err = score(capsys, str(tmp_path / "none.txt"), "--model", str(tiny_model_path))
    assert code == 2 and out == "" and err.strip().endswith("none.txt does not exist.")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    code, _, err = score(capsys, str(tmp_path / "latin1.txt"), "--model", str(tiny_model_path))
    assert code == 2 and "latin1.txt is not UTF-8 text." in err
    code, _, err = score(capsys, path, "--model", str(tmp_path / "no-such-model"))
    assert code == 2 and err.startswith("tokviz score: --model ") and err.count("\n") == 1
    out_file = tmp_path / "other.csv"
    out_file.write_text("a,b\r\n1,2\r\n")
    code, _, err = score(capsys, path, "--model", str(tiny_model_path), "-o", str(out_file))
    assert code == 2 and "was written with other columns" in err and out_file.read_text() == "a,b\n1,2\n"
    with pytest.raises(SystemExit) as exit_info:
        main(["score", path, "--model", str(tiny_model_path), "--compare", "x", "--context-b", path])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_gpt2_and_smollm2_align_and_conserve_each_models_total(capsys, tmp_path, tiny_model_path):
    path = write(tmp_path, "a.txt", TEXT + " " + OTHER)
    totals = {}
    for name in (str(tiny_model_path), "smollm2-135m"):
        code, out, _ = score(capsys, path, "--model", name)
        totals[name] = math.fsum(r["logprob"] for r in jsonl(out))
    code, out, _ = score(capsys, path, "--model", str(tiny_model_path), "--compare", "smollm2-135m")
    spans = jsonl(out)
    assert code == 0 and "".join(s["text"] for s in spans) == TEXT + " " + OTHER
    assert any(len(s["token_id"]) != len(s["token_id_b"]) for s in spans)  # the tokenizers differ
    assert math.isclose(math.fsum(s["logprob"] for s in spans), totals[str(tiny_model_path)], rel_tol=1e-6)
    assert math.isclose(math.fsum(s["logprob_b"] for s in spans), totals["smollm2-135m"], rel_tol=1e-6)
    assert all(abs(s["delta"] - (s["logprob_b"] - s["logprob"])) < 1e-9 for s in spans)
    single = [s for s in spans if len(s["token_id"]) == 1 == len(s["token_id_b"])]
    assert single and all(s["rank"] >= 1 and s["rank_b"] >= 1 for s in single)
