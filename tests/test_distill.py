"""Distillation: the decision rule, the configuration's checks, and the loop against a real
LLM teacher (llama.cpp's OpenAI-compatible server on loopback) with a real MiniLM student."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from duolabel import Project
from duolabel.config import parse_config
from duolabel.core.distillation import decide_distillation
from duolabel.errors import ConfigError
from duolabel.store import Item, Prediction, Run

BOOKS = [
    "A gripping novel, I read it in one night.",
    "The author's prose is lovely and the chapters fly by.",
    "This paperback fell apart but the story was good.",
    "The plot twists kept me reading until dawn.",
    "A cookbook with clear recipes and lovely photos.",
    "Poems I return to often; the collection is wonderful.",
    "The biography of the composer is thorough and well written.",
    "A children's picture book my daughter asks for every night.",
    "The mystery novel's ending surprised me.",
    "This history book explains the war clearly.",
    "The sequel is weaker than the first novel in the series.",
    "A fantasy saga with great characters and a slow middle part.",
    "The textbook has many exercises with worked solutions.",
    "I loved the short stories in this anthology.",
    "The memoir is honest and funny.",
    "A science fiction novel with a clever premise.",
    "The hardcover edition of this novel is beautiful.",
    "The author's second book is even better than her first.",
    "A travel guide book with good maps of the city.",
    "This thriller novel kept me guessing.",
    "The essays in this book changed how I think.",
    "A romance novel with a predictable plot.",
    "The graphic novel's art is stunning.",
    "This self-help book repeats itself a lot.",
]
OTHERS = [
    "The blender is loud but crushes ice.",
    "These headphones broke after a week.",
    "Nice warm socks for winter.",
    "The toaster burns one side of the bread.",
    "The kettle leaks from the bottom.",
    "A sturdy garden hose that does not kink.",
    "The phone case cracked when I dropped it.",
    "This vacuum cleaner has strong suction.",
    "The running shoes are comfortable from day one.",
    "The coffee maker brews quickly and quietly.",
    "My dog loves this chew toy.",
    "The frying pan is non-stick and easy to clean.",
    "The desk lamp is bright but the switch feels cheap.",
    "This backpack has many pockets and a laptop sleeve.",
    "The electric toothbrush battery lasts two weeks.",
    "A soft pillow that keeps its shape.",
    "The wireless mouse stopped working after a month.",
    "The winter jacket is warm and waterproof.",
    "This shampoo smells nice and does not dry my hair.",
    "The drill came with a case and two batteries.",
    "The yoga mat is thick and does not slip.",
    "The kitchen scale is accurate to the gram.",
    "These sunglasses feel flimsy.",
    "The bicycle lock is heavy but secure.",
]


# -- the decision (pure) -------------------------------------------------------


def test_a_student_at_least_as_accurate_and_cheaper_wins() -> None:
    student = np.array([1, 1, 1, 1, 0, 1, 1, 0], bool)
    teacher = np.array([1, 0, 1, 1, 0, 1, 0, 1], bool)
    d = decide_distillation(student, teacher, student_cost_per_item=1e-5, teacher_cost_per_item=1e-3)
    assert d.winner == "student" and d.student_accuracy == 0.75 and d.teacher_accuracy == 0.625
    low, high = d.student_interval
    assert low < 0.75 < high and d.teacher_interval[0] < 0.625 < d.teacher_interval[1]
    assert "student labels" in d.reason and "0.750" in d.reason


def test_a_tie_goes_to_the_cheaper_student() -> None:
    same = np.array([1, 0, 1], bool)
    assert decide_distillation(same, same, student_cost_per_item=0.0, teacher_cost_per_item=0.1).winner == "student"


@pytest.mark.parametrize(
    ("student", "teacher", "student_cost", "why"),
    [
        ([1, 0, 0, 1], [1, 1, 0, 1], 0.0, "less accurate"),
        ([1, 1, 1, 1], [1, 1, 1, 1], 0.5, "dearer"),
    ],
)
def test_the_teacher_keeps_labeling(student, teacher, student_cost, why) -> None:
    d = decide_distillation(
        np.array(student, bool), np.array(teacher, bool), student_cost_per_item=student_cost, teacher_cost_per_item=0.1
    )
    assert d.winner == "teacher" and why in d.reason


def test_the_comparison_needs_the_same_golden_items() -> None:
    with pytest.raises(ValueError, match="one answer per golden item"):
        decide_distillation(np.ones(3, bool), np.ones(4, bool), student_cost_per_item=0, teacher_cost_per_item=0)
    with pytest.raises(ValueError, match="no golden item"):
        decide_distillation(np.ones(0, bool), np.ones(0, bool), student_cost_per_item=0, teacher_cost_per_item=0)


# -- the configuration ---------------------------------------------------------

TASK = {"labels": [{"name": "book"}, {"name": "not_book"}]}
LLM = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}


def test_the_teacher_defaults_to_the_only_llm_labeler_and_the_student_to_embedding() -> None:
    config = parse_config({"task": TASK, "labeler": [LLM], "distill": {"enabled": True}})
    assert config.distill.teacher == "openai"
    assert config.distill.student.backend == "embedding" and config.distill.student.label_name == "distilled"


@pytest.mark.parametrize(
    ("labeler", "distill", "message"),
    [
        ([LLM], {"teacher": "gpt"}, "key 'distill.teacher': 'gpt' is not a labeler of this project"),
        ([{"backend": "embedding"}], {"enabled": True}, "key 'distill.teacher': name the LLM labeler"),
        ([LLM, {"backend": "embedding"}], {"teacher": "embedding"}, "'embedding' is not an LLM labeler"),
        ([LLM], {"enabled": True, "student": LLM}, "key 'distill.student.backend': 'openai' does not train"),
        ([LLM], {"enabled": True, "student": {"name": "openai"}}, "key 'distill.student.name': 'openai' is taken"),
        ([LLM], {"student": {"regularisation": 2}}, "unknown key 'distill.student.regularisation'; allowed here: name"),
    ],
)
def test_distill_names_are_checked(labeler, distill, message) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"task": TASK, "labeler": labeler, "distill": distill})
    assert message in str(error.value) and "\n" not in str(error.value)
