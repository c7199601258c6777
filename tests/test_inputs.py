"""inputs.sampling_notes: every sampling value that is not used as typed gets a sentence saying what is used."""

from __future__ import annotations

import pytest

from tokviz_app.inputs import MAX_TEMPERATURE, sampling_notes


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 0, 1.0), (0, 0, 1.0), (0.7, 40, 0.9), (MAX_TEMPERATURE, 5, 0.01), (2, 3.0, 1)])
def test_values_in_range_need_no_note(temperature, top_k, top_p) -> None:
    assert sampling_notes(temperature, top_k, top_p) == []


@pytest.mark.parametrize("temperature, top_k, top_p, note", [
    (-0.5, 0, 1.0, "Temperature -0.5 is below 0; generating greedily (always the most likely token)."),
    (7, 0, 1.0, "Temperature 7 is above 5; using 5."),
    (None, 0, 1.0, "Temperature is blank; using 1."),
    ("nan", 0, 1.0, "Temperature nan is not a number; using 1."),
    (1.0, -3, 1.0, "Top-k -3 is below 0; using 0 (off)."),
    (1.0, 2.5, 1.0, "Top-k 2.5 is not a whole number; using 2."),
    (1.0, "", 1.0, "Top-k is blank; using 0 (off)."),
    (1.0, 0, 1.5, "Top-p 1.5 is above 1; using 1."),
    (1.0, 0, 0, "Top-p 0 would keep no tokens; using 1 (no cut)."),
    (1.0, 0, -0.2, "Top-p -0.2 is below 0; using 0.000001 (only the most likely token)."),
    (1.0, 0, "inf", "Top-p inf is not a number; using 1 (no cut)."),
])
def test_each_clamped_value_is_said(temperature, top_k, top_p, note) -> None:
    assert sampling_notes(temperature, top_k, top_p) == [note]


def test_notes_come_in_the_order_of_the_boxes() -> None:
    notes = sampling_notes(9, -1, 2)
    assert [n.split()[0] for n in notes] == ["Temperature", "Top-k", "Top-p"]
    assert all(n.endswith(".") and n[0].isupper() for n in notes), "full sentences"
    assert sampling_notes(True, 0, 1) == ["Temperature True is not a number; using 1."]


@pytest.mark.parametrize("min_p, typical_p, penalty, note", [
    (-0.1, 1.0, 1.0, "Min-p -0.1 is below 0; using 0 (off)."),
    (1.5, 1.0, 1.0, "Min-p 1.5 is above 1; using 1 (only the most likely tokens)."),
    (None, 1.0, 1.0, "Min-p is blank; using 0 (off)."),
    (0.0, 0, 1.0, "Typical-p 0 would keep no tokens; using 1 (off)."),
    (0.0, 2, 1.0, "Typical-p 2 is above 1; using 1 (off)."),
    (0.0, "nan", 1.0, "Typical-p nan is not a number; using 1 (off)."),
    (0.0, 1.0, 0, "A repetition penalty of 0 is not allowed (it must be above 0); using 1 (off)."),
    (0.0, 1.0, "", "The repetition penalty is blank; using 1 (off)."),
])
def test_the_new_samplers_clamps_are_said(min_p, typical_p, penalty, note) -> None:
    assert sampling_notes(1.0, 0, 1.0, min_p, typical_p, penalty) == [note]
    assert sampling_notes(1.0, 0, 1.0, 0.05, 0.9, 1.3) == []  # in range


def test_greedy_uses_only_the_penalty() -> None:
    """Greedy takes the most likely token after the repetition penalty: the other values are not used."""
    assert sampling_notes(9, -1, 2, -1, 0, 0, greedy=True) == [
        "A repetition penalty of 0 is not allowed (it must be above 0); using 1 (off)."]
