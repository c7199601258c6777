"""The layer lens on the page (issue 16), on the fake backend (`tests/fake_layers.py`: 4 synthetic layers whose
last one is the token's own distribution): the details' Layers section, the "Decided at layer" colour mode."""

from __future__ import annotations

from nicegui.testing import User

from tests.fake_backend import FakeModel
from tests.ui_helpers import (
    chips,
    generate,
    idle,
    open_ready,
    prompt_chips,
    text_of,
    wait_until,
)
from tokviz_app.core.contract import Capabilities
from tokviz_app.present.scales import DECIDED, decided_value, value_class
from tokviz_app.present.text import percent

SERVER_NOTE = "This model runs on a server: its layers are not visible."


async def test_selecting_a_token_shows_one_row_per_layer(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    await generate(user, c, 8)
    user.find(marker="token-3").click()
    await user.should_see(marker="layers-table")
    step, rows = c.state.tokens[3], c.state.handle.session.layer_lens(3)
    assert [row.layer for row in rows] == [0, 1, 2, 3, 4]
    assert text_of(user, "layer-0") == "embeddings" and text_of(user, "layer-4") == "block 4 · output"
    for row in rows:
        assert text_of(user, f"layer-rank-{row.layer}") == f"#{row.token_rank:,} · {percent(row.token_prob)}"
        for alt in row.top:
            await user.should_see(content=percent(alt.prob))
    assert (rows[-1].token_rank, rows[-1].token_prob) == (step.rank, step.prob)  # the last row is the token
    decided = c.state.handle.session.decided_layers()[3]
    assert text_of(user, "layers-decided") == (
        f"Never the top-1: rank {step.rank:,} at the output." if decided is None
        else "Decided only at the output (block 4): no earlier layer ranks it first." if decided == 4
        else f"Decided at {'the embeddings' if decided == 0 else f'block {decided}'} of 4: the top-1 from there on.")
    spark = user.find(marker="layers-spark").elements.pop()
    assert spark.props["aria-label"] == "rank by layer: " + ", ".join(f"{row.token_rank:,}" for row in rows)
    # a prompt token has layers too; the first one has no prediction
    c.explore.select(c.state.prompt_tokens[2])  # what a click on the prompt's third chip does
    await user.should_see(marker="layers-table")
    assert text_of(user, "layer-rank-4").startswith(f"#{c.state.prompt_tokens[2].rank:,} ")
    c.explore.select(c.state.prompt_tokens[0])
    await user.should_see(content="The first token has no prediction, so it has no layers to show.")


async def test_layers_wait_for_the_end_of_streaming(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, step_delay=0.05)
    user.find(marker="max-tokens").elements.pop().value = 30
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 3, 10, "a few tokens")
    c.explore.select(c.state.tokens[1])
    await user.should_see(marker="layers-note", content="The layers are available when generation stops.")
    assert not _present(user, "layers-table")
    await idle(c, 20)
    await user.should_see(marker="layers-table")  # the details are shown again when the generation ends
    assert c.state.selected.position == 1


def _present(user: User, marker: str) -> bool:
    try:
        return bool(user.find(marker=marker).elements)
    except AssertionError:
        return False


async def test_a_model_without_layers_says_why(user: User, tokviz_page, monkeypatch) -> None:
    monkeypatch.setattr(FakeModel, "capabilities", property(lambda self: Capabilities(layer_note=SERVER_NOTE)))
    _, c = await open_ready(user, tokviz_page)
    await generate(user, c, 4)
    user.find(marker="token-1").click()
    await user.should_see(marker="layers-note", content=SERVER_NOTE)
    assert not _present(user, "layers-table")
    user.find(marker="color-mode").elements.pop().value = DECIDED  # the heatmap says so too
    await wait_until(lambda: SERVER_NOTE in c.views.controls.status.text, 5, "the note in the status line")
    assert all("tv-d-none" in chip.classes for chip in chips(user))


async def test_decided_at_layer_colours_every_chip(user: User, tokviz_page, downloads) -> None:
    _, c = await open_ready(user, tokviz_page)
    await generate(user, c, 30)
    container = user.find(marker="tokens").elements.pop()
    assert all("tv-d-none" in chip.classes for chip in chips(user)), "nothing computed before the mode is chosen"
    user.find(marker="color-mode").elements.pop().value = DECIDED
    assert "tv-mode-decided" in container.classes
    await user.should_see(marker="legend-mode-decided")
    assert text_of(user, "legend-title") == "Decided at layer:"
    await user.should_see(content="never: not the model's top-1")
    session = c.state.handle.session

    def classes_match() -> bool:
        want = [value_class(decided_value(k, 4), DECIDED) for k in session.decided_layers()]
        want_prompt = [value_class(decided_value(k, 4), DECIDED) if i else "tv-d-none"
                       for i, k in enumerate(session.decided_layers(prompt=True))]
        return ([w in chip.classes for chip, w in zip(chips(user), want)] == [True] * len(want)
                and all(w in chip.classes for chip, w in zip(prompt_chips(user), want_prompt)))

    await wait_until(classes_match, 10, "the chips coloured by their decided layer")
    seen = {next(k for k in chip.classes if k.startswith("tv-d-")) for chip in chips(user)}
    assert "tv-d-red" in seen and len(seen) >= 3, seen  # tokens decided at several depths, some never
    # tokens generated while the mode is on are coloured when the generation ends
    await generate(user, c, 10)
    assert len(chips(user)) == 40
    await wait_until(classes_match, 10, "the new chips coloured too")
    assert not any("tv-d-none" in chip.classes for chip in chips(user))
    # clicking still opens the layer view
    user.find(marker="token-35").click()
    await user.should_see(marker="layers-table")
    # the HTML export has only the snapshot: it colours by probability
    user.find(marker="export-html").click()
    await wait_until(lambda: downloads, 10, "the HTML download")
    assert "colour: Probability" in downloads[-1][0].decode()


def test_decided_text_in_words() -> None:
    from tokviz_app.core.types import LayerRow
    from tokviz_app.ui.details import decided_text, layer_name

    def rows(*ranks):
        return [LayerRow(k, (), rank, 0.5, 1.0) for k, rank in enumerate(ranks)]

    assert decided_text(rows(1, 1, 1)) == "Decided at the embeddings of 2: the top-1 from there on."
    assert decided_text(rows(1, 3, 1, 1)) == "Decided at block 2 of 3: the top-1 from there on."
    assert decided_text(rows(1, 2, 1, 7)) == "Never the top-1: rank 7 at the output."
    assert decided_text(rows(5, 1, 2, 1)) == "Decided only at the output (block 3): no earlier layer ranks it first."
    assert [layer_name(k, 2) for k in range(3)] == ["embeddings", "block 1", "block 2 · output"]
