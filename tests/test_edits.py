"""Input-string / expected-string cases for scientist.edits.

Each model quirk the parser or applier tolerates has one regression case named after it.
"""

from __future__ import annotations

import difflib
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scientist.editblocks import FORMAT_REMINDER, Edit, parse_edits, render_edit
from scientist.edits import apply_edits, unified_diff, write_files
from scientist.errors import EditError, FormatError

TRAIN = """\
import torch


def train(model, data):
    lr = 3e-4
    for step in range(100):
        loss = model(data)
        loss.backward()
    return loss


# scientist: frozen-begin evaluation
def evaluate(model):
    return model.score()
# scientist: frozen-end
"""

MODEL = """\
class Model:
    def __init__(self):
        self.width = 64
"""

FILES = {"train.py": TRAIN, "model.py": MODEL, "evaluate.py": "def fitness(x):\n    return x\n"}
EDITABLE = ("train.py", "model.py", "notes.md")
PROTECTED = ("evaluate.py",)

BLOCK = "train.py\n<<<<<<< SEARCH\n    lr = 3e-4\n=======\n    lr = 1e-3\n>>>>>>> REPLACE\n"
BODY = BLOCK.split("\n", 1)[1]  # BLOCK without its filename line
LR_EDIT = Edit("train.py", "    lr = 3e-4\n", "    lr = 1e-3\n")
WIDTH_EDIT = Edit("model.py", "        self.width = 64\n", "        self.width = 128\n")


def block(path: str, search: str, replace: str) -> str:
    """A well-formed block, for cases about applying rather than parsing."""
    return f"{path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def apply(reply: str, files: dict[str, str]) -> dict[str, str]:
    return apply_edits(files, parse_edits(reply), editable=EDITABLE, protected=PROTECTED)


# --- parsing -------------------------------------------------------------------------

PARSE_CASES = [
    pytest.param(BLOCK, [LR_EDIT], id="plain_block"),
    pytest.param(f"```python\n{BLOCK}```\n", [LR_EDIT], id="fenced_with_python_tag"),
    pytest.param(f"train.py\n```python\n{BODY}```\n", [LR_EDIT], id="filename_above_python_fence"),
    pytest.param(f"train.py\n```\n{BODY}```\n", [LR_EDIT], id="fenced_without_tag"),
    pytest.param(f"`train.py`\n{BODY}", [LR_EDIT], id="filename_in_backticks"),
    pytest.param(f"**train.py**\n{BODY}", [LR_EDIT], id="filename_in_bold"),
    pytest.param(f"train.py:\n{BODY}", [LR_EDIT], id="filename_with_trailing_colon"),
    pytest.param(f"**`train.py`:**\n{BODY}", [LR_EDIT], id="filename_bold_backticks_colon"),
    pytest.param(f"### train.py\n{BODY}", [LR_EDIT], id="filename_as_markdown_heading"),
    pytest.param(f"```python\n# train.py\n{BODY}```\n", [LR_EDIT], id="filename_as_comment_in_fence"),
    pytest.param(f"```python train.py\n{BODY}```\n", [LR_EDIT], id="filename_in_fence_info_string"),
    pytest.param(f"train.py\n\n{BODY}", [LR_EDIT], id="blank_line_after_filename"),
    pytest.param(BLOCK.replace("\n", "\r\n"), [LR_EDIT], id="crlf_line_endings"),
    pytest.param(
        "train.py\n<<<<<<<< SEARCH\n    lr = 3e-4\n========\n    lr = 1e-3\n>>>>>>>> REPLACE\n",
        [LR_EDIT],
        id="eight_char_markers",
    ),
    pytest.param(
        "train.py\n<<<<< SEARCH\n    lr = 3e-4\n=====\n    lr = 1e-3\n>>>>> REPLACE\n",
        [LR_EDIT],
        id="five_char_markers",
    ),
    pytest.param(
        f"I will raise the learning rate.\n\n{BLOCK}\nAnd widen the model:\n\n"
        f"{render_edit(WIDTH_EDIT)}\nThat should help.\n",
        [LR_EDIT, WIDTH_EDIT],
        id="prose_around_blocks",
    ),
    pytest.param(
        f"{BLOCK}<<<<<<< SEARCH\n    return loss\n=======\n    return loss.item()\n>>>>>>> REPLACE\n",
        [LR_EDIT, Edit("train.py", "    return loss\n", "    return loss.item()\n")],
        id="second_block_omits_repeated_filename",
    ),
    pytest.param(
        "notes.md\n<<<<<<< SEARCH\n=======\n# Notes\n>>>>>>> REPLACE\n",
        [Edit("notes.md", "", "# Notes\n")],
        id="empty_search_creates_file",
    ),
    pytest.param(
        "train.py\n<<<<<<< SEARCH\n    lr = 3e-4\n=======\n>>>>>>> REPLACE\n",
        [Edit("train.py", "    lr = 3e-4\n", "")],
        id="empty_replace_deletes_lines",
    ),
    pytest.param(BLOCK.rstrip("\n"), [LR_EDIT], id="no_newline_after_replace_marker"),
    pytest.param(BLOCK.replace("\n", "\r"), [LR_EDIT], id="old_mac_cr_line_endings"),
    pytest.param(f"train.py\n\n\n\n\n{BODY}", [LR_EDIT], id="four_blank_lines_after_filename"),
    pytest.param(f"Here:\n\ntrain.py\n\n{BODY}", [LR_EDIT], id="prose_blank_filename_blank"),
    pytest.param(f"```python hl_lines=2 train.py\n{BODY}```\n", [LR_EDIT], id="fence_info_with_options"),
    pytest.param(f"### 'train.py':\n{BODY}", [LR_EDIT], id="filename_quoted_in_heading"),
    pytest.param(BLOCK.replace("train.py", "Xception.py"), [Edit("Xception.py", "    lr = 3e-4\n", "    lr = 1e-3\n")],
                 id="filename_starting_with_capital_x"),
    pytest.param(BLOCK.replace("train.py", "docs/APPENDIX"),
                 [Edit("docs/APPENDIX", "    lr = 3e-4\n", "    lr = 1e-3\n")], id="filename_ending_with_capital_x"),
    pytest.param(BLOCK.replace("train.py", "a=b.py"), [Edit("a=b.py", "    lr = 3e-4\n", "    lr = 1e-3\n")],
                 id="marker_character_inside_filename"),
]


@pytest.mark.parametrize(("reply", "expected"), PARSE_CASES)
def test_parse(reply: str, expected: list[Edit]) -> None:
    assert parse_edits(reply) == expected


FORMAT_ERROR_CASES = [
    pytest.param(
        "train.py\n<<<<<<< SEARCH\n    lr = 3e-4\n=======\n    lr = 1e-3\n",
        [r"Block 1 \(train\.py\), starting at reply line 2", "looks truncated"],
        id="truncated_reply_missing_replace",
    ),
    pytest.param(
        "train.py\n<<<<<<< SEARCH\n    lr = 3e-4\n",
        ["has no `=======` line after it", "cut off"],
        id="truncated_inside_search",
    ),
    pytest.param(
        "train.py\n<<<<<<< SEARCH\n    lr = 3e-4\n>>>>>>> REPLACE\n",
        ["found `>>>>>>> REPLACE` at reply line 4 before the `=======`"],
        id="search_without_divider",
    ),
    pytest.param(
        "train.py\n<<<<<<< SEARCH\n    lr = 3e-4\n=======\n    lr = 1e-3\n=======\n>>>>>>> REPLACE\n",
        ["found `=======` at reply line 6 before the `>>>>>>> REPLACE`"],
        id="second_divider_in_block",
    ),
    pytest.param(
        "Sure! I would raise the learning rate to 1e-3.\n",
        ["no SEARCH/REPLACE blocks", "<<<<<<< SEARCH"],
        id="no_blocks_at_all",
    ),
    pytest.param(BODY, [r"Block 1 \(reply line 1\) has no file path"], id="no_filename_at_start"),
    pytest.param(
        f"Change the rate:\n{BODY}",
        ["has no file path", "found 'Change the rate:'"],
        id="prose_line_instead_of_filename",
    ),
    pytest.param(
        "train.py\n    lr = 3e-4\n>>>>>>> REPLACE\n",
        ["Reply line 3: `>>>>>>> REPLACE` without an opening"],
        id="replace_marker_without_search",
    ),
]


NO_PATH = "has no file path: put the path alone on the line right before `<<<<<<< SEARCH`"
EXACT_FORMAT_ERRORS = [
    pytest.param("Sure! I would raise the learning rate to 1e-3.\n",
                 "The reply contains no SEARCH/REPLACE blocks, so nothing can be changed.\n\n" + FORMAT_REMINDER,
                 id="no_blocks_at_all"),
    pytest.param("train.py\n<<<<<<< SEARCH\n    lr = 3e-4\n",
                 "Block 1 (train.py), starting at reply line 2: the SEARCH section has no `=======` line after it; "
                 "the reply looks cut off. Send the complete block again.", id="truncated_inside_search"),
    pytest.param("train.py\n<<<<<<< SEARCH\n    lr = 3e-4\n=======\n    lr = 1e-3\n",
                 "Block 1 (train.py), starting at reply line 2: the block never reaches its `>>>>>>> REPLACE` line; "
                 "the reply looks truncated. Send the complete block again.", id="truncated_reply_missing_replace"),
    pytest.param("train.py\n<<<<<<< SEARCH\n    lr = 3e-4\n>>>>>>> REPLACE\n",
                 "Block 1 (train.py), starting at reply line 2: found `>>>>>>> REPLACE` at reply line 4 before the "
                 "`=======` line that ends the SEARCH section.\n\n" + FORMAT_REMINDER, id="search_without_divider"),
    pytest.param(f"{BODY}Thanks.", f"Block 1 (reply line 1) {NO_PATH}.\n\n" + FORMAT_REMINDER,
                 id="no_filename_and_a_last_line_that_looks_like_one"),
    pytest.param(f"{BODY}```python train.py\n",
                 f"Block 1 (reply line 1) {NO_PATH}.\n\n" + FORMAT_REMINDER, id="a_trailing_fence_names_no_block"),
    pytest.param(f"{BODY}```python train.py",  # the reply's very last line, right above line 1 if read backwards
                 f"Block 1 (reply line 1) {NO_PATH}.\n\n" + FORMAT_REMINDER,
                 id="a_trailing_fence_without_a_newline_names_no_block"),
    pytest.param(f"train.py\n\n\n\n\n\n{BODY}", f"Block 1 (reply line 7) {NO_PATH} (found '' there).\n\n"
                 + FORMAT_REMINDER, id="five_blank_lines_after_filename"),
    pytest.param(f"<train.py>\n{BODY}", f"Block 1 (reply line 2) {NO_PATH} (found '<train.py>' there).\n\n"
                 + FORMAT_REMINDER, id="filename_in_angle_brackets"),
]


@pytest.mark.parametrize(("reply", "message"), EXACT_FORMAT_ERRORS)
def test_parse_error_messages(reply: str, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        parse_edits(reply)
    assert str(caught.value) == message


@pytest.mark.parametrize(("reply", "patterns"), FORMAT_ERROR_CASES)
def test_parse_rejects(reply: str, patterns: list[str]) -> None:
    with pytest.raises(FormatError) as caught:
        parse_edits(reply)
    for pattern in patterns:
        assert re.search(pattern, str(caught.value)), str(caught.value)


# --- applying ------------------------------------------------------------------------

LOOP = "for step in range(100):\n    loss = model(data)\n"
LOOP_WITH_PRINT = (
    "for step in range(100):\n    if step % 10 == 0:\n        print(step)\n    loss = model(data)\n"
)
RETURN_AND_FROZEN = "    return loss\n\n\n# scientist: frozen-begin evaluation\n"

APPLY_CASES = [
    pytest.param(BLOCK, {}, {"train.py": TRAIN.replace("3e-4", "1e-3")}, id="exact_match"),
    pytest.param(
        block("train.py", "lr = 3e-4\n", "lr = 1e-3\nwarmup = 10\n"),
        {},
        {"train.py": TRAIN.replace("    lr = 3e-4\n", "    lr = 1e-3\n    warmup = 10\n")},
        id="search_indent_dropped_by_model",
    ),
    pytest.param(
        block(
            "train.py",
            "        lr = 3e-4\n        for step in range(100):\n",
            "        lr = 1e-3\n        for step in range(200):\n",
        ),
        {},
        {"train.py": TRAIN.replace("3e-4", "1e-3").replace("range(100)", "range(200)")},
        id="search_indent_added_by_model",
    ),
    pytest.param(
        block("train.py", LOOP, LOOP_WITH_PRINT),
        {},
        {
            "train.py": TRAIN.replace(
                "    for step in range(100):\n        loss",
                "    for step in range(100):\n        if step % 10 == 0:\n"
                "            print(step)\n        loss",
            )
        },
        id="replacement_reindented_keeping_nesting",
    ),
    pytest.param(
        block("model.py", "class Model:\n\n    def __init__(self):\n", "class Model:\n"),
        {"model.py": "class Model:\n    \n    def __init__(self):\n        pass\n"},
        {"model.py": "class Model:\n        pass\n"},
        id="blank_line_whitespace_stripped_by_model",
    ),
    pytest.param(
        BLOCK + block("train.py", "    lr = 1e-3\n", "    lr = 2e-3\n"),
        {},
        {"train.py": TRAIN.replace("3e-4", "2e-3")},
        id="sequential_blocks_same_file",
    ),
    pytest.param(
        BLOCK + render_edit(WIDTH_EDIT),
        {},
        {"train.py": TRAIN.replace("3e-4", "1e-3"), "model.py": MODEL.replace("64", "128")},
        id="blocks_across_files",
    ),
    pytest.param(
        block("notes.md", "", "# Notes\nlr 1e-3\n"),
        {},
        {"notes.md": "# Notes\nlr 1e-3\n"},
        id="new_file_creation",
    ),
    pytest.param(
        block("notes.md", "", "# Notes\n"),
        {"notes.md": ""},
        {"notes.md": "# Notes\n"},
        id="empty_existing_file_filled",
    ),
    pytest.param(
        block("train.py", "import torch\n\n\n", ""),
        {},
        {"train.py": TRAIN.replace("import torch\n\n\n", "")},
        id="delete_lines",
    ),
    pytest.param(
        BLOCK,
        {"train.py": TRAIN.replace("\n", "\r\n")},
        {"train.py": TRAIN.replace("3e-4", "1e-3").replace("\n", "\r\n")},
        id="crlf_file_keeps_crlf",
    ),
    pytest.param(
        render_edit(WIDTH_EDIT),
        {"model.py": MODEL.rstrip("\n")},
        {"model.py": MODEL.replace("64", "128").rstrip("\n")},
        id="file_without_final_newline",
    ),
    pytest.param(
        f"./train.py\n{BODY}",
        {},
        {"train.py": TRAIN.replace("3e-4", "1e-3")},
        id="dot_slash_path_normalised",
    ),
    pytest.param(
        block("train.py", RETURN_AND_FROZEN, RETURN_AND_FROZEN.replace("loss", "loss.detach()")),
        {},
        {"train.py": TRAIN.replace("return loss\n", "return loss.detach()\n")},
        id="frozen_region_untouched_neighbour_edited",
    ),
]


@pytest.mark.parametrize(("reply", "files", "expected"), APPLY_CASES)
def test_apply(reply: str, files: dict[str, str], expected: dict[str, str]) -> None:
    assert apply(reply, {**FILES, **files}) == expected


TWICE = {"model.py": "def a():\n    x = 1\n\n\ndef b():\n    x = 1\n"}

APPLY_ERROR_CASES = [
    pytest.param(
        block("model.py", "    x = 1\n", "    x = 2\n"),
        TWICE,
        [r"Block 1 \(model\.py\) failed: SEARCH matches 2 times in model\.py; include more"],
        id="search_matches_twice",
    ),
    pytest.param(
        block("model.py", "x = 1\n", "x = 2\n"),
        TWICE,
        [r"matches 2 times in model\.py \(ignoring a shift of indentation\); include more"],
        id="shifted_search_matches_twice",
    ),
    pytest.param(
        block("model.py", "x = 0\nx = 0\n", "x = 1\n"),
        {"model.py": "x = 0\nx = 0\nx = 0\n"},
        [r"SEARCH matches 2 times in model\.py; include"],
        id="search_matches_overlapping_windows",
    ),
    pytest.param(
        block("train.py", "    lr = 3e-3\n    for step in range(1000):\n", "    lr = 1e-3\n"),
        {},
        [
            r"SEARCH does not match any lines in train\.py",
            r"closest lines in train\.py \(lines 5-6\) are:\n```\n"
            r"    lr = 3e-4\n    for step in range\(100\):\n```",
        ],
        id="search_matches_nothing_shows_closest_lines",
    ),
    pytest.param(
        block("model.py", "import numpy as np\n", "import jax\n"),
        {},
        [r"does not match any lines in model\.py\.\nNothing in model\.py resembles"],
        id="search_resembles_nothing",
    ),
    pytest.param(
        block("train.py", "    lr=3e-4\n", "    lr=1e-3\n"),
        {},
        ["does not match any lines", r"lines 5-5\) are:\n```\n    lr = 3e-4\n```"],
        id="no_fuzzy_match_on_changed_spacing",
    ),
    pytest.param(
        block("train.py", "for step in range(100):\n  loss = model(data)\n", "pass\n"),
        {},
        ["does not match any lines"],
        id="no_match_for_uneven_indent_shift",
    ),
    pytest.param(
        block("train.py", "    lr = 5e-4\n", "    lr = 3e-4\n"),
        {},
        ["REPLACE lines are already in the file"],
        id="block_already_applied",
    ),
    pytest.param(
        block("train.py", WIDTH_EDIT.search, WIDTH_EDIT.replace),
        {},
        [r"SEARCH lines do appear in model\.py"],
        id="search_names_wrong_file",
    ),
    pytest.param(
        block("evaluate.py", "    return x\n", "    return 2 * x\n"),
        {},
        [r"evaluate\.py is protected"],
        id="protected_file",
    ),
    pytest.param(
        block("data.py", "", "X = 1\n"),
        {},
        [r"data\.py is not an editable file\. The editable files are: model\.py, notes\.md, train"],
        id="unknown_file",
    ),
    pytest.param(
        f"../train.py\n{BODY}",
        {},
        [r"'\.\./train\.py' points outside the project"],
        id="path_traversal",
    ),
    pytest.param(
        f"/work/main/train.py\n{BODY}",
        {},
        [r"'/work/main/train\.py' is an absolute path"],
        id="absolute_path",
    ),
    pytest.param(
        block("train.py", "    return model.score()\n", "    return 1.0\n"),
        {},
        [r"frozen region that starts at line 12 \(`# scientist: frozen-begin evaluation`\)"],
        id="frozen_region_modified",
    ),
    pytest.param(
        block(
            "train.py",
            "    return model.score()\n# scientist: frozen-end\n",
            "    return model.score()\n",
        ),
        {},
        ["changes or removes the frozen region that starts at line 12"],
        id="frozen_end_marker_removed",
    ),
    pytest.param(
        block("model.py", "", "X = 1\n"),
        {},
        [r"SEARCH section is empty but model\.py already exists"],
        id="empty_search_for_existing_file",
    ),
    pytest.param(
        block("notes.md", "# Notes\n", "# N\n"),
        {},
        [r"notes\.md does not exist\. To create it, leave the SEARCH section empty"],
        id="search_in_missing_file",
    ),
    pytest.param(
        BLOCK + block("model.py", "        self.depth = 4\n", "        self.depth = 8\n"),
        {},
        [
            "^1 of 2 SEARCH/REPLACE blocks failed, so no file was changed",
            r"Block 2 \(model\.py\) failed: SEARCH does not match",
            r"Block 1 \(train\.py\) applied fine\.",
            "send them again unchanged",
        ],
        id="all_or_nothing_second_block_fails",
    ),
]


@pytest.mark.parametrize(("reply", "files", "patterns"), APPLY_ERROR_CASES)
def test_apply_rejects(reply: str, files: dict[str, str], patterns: list[str]) -> None:
    files = {**FILES, **files}
    before = dict(files)
    with pytest.raises(EditError) as caught:
        apply(reply, files)
    for pattern in patterns:
        assert re.search(pattern, str(caught.value)), str(caught.value)
    assert files == before  # the caller's mapping is untouched


def test_failed_block_does_not_hide_later_failures() -> None:
    edits = [Edit("train.py", "nope\n", "x\n"), LR_EDIT, Edit("secret.py", "", "x\n")]
    with pytest.raises(EditError) as caught:
        apply_edits(FILES, edits, editable=EDITABLE, protected=PROTECTED)
    message = str(caught.value)
    assert message.startswith("2 of 3 SEARCH/REPLACE blocks failed")
    assert "Block 1 (train.py) failed: SEARCH does not match" in message
    assert "Block 3 (secret.py) failed: secret.py is not an editable file" in message
    assert "Block 2 (train.py) applied fine." in message


def test_glob_patterns_in_editable_and_protected() -> None:
    edits = [Edit("seeds/a/new.py", "", "A = 1\n"), Edit("seeds/a/eval.py", "", "B = 1\n")]
    with pytest.raises(EditError, match=r"seeds/a/eval\.py is protected"):
        apply_edits({}, edits, editable=["seeds/*.py"], protected=["seeds/*/eval.py"])
    assert apply_edits({}, edits[:1], editable=["seeds/*.py"], protected=[]) == {"seeds/a/new.py": "A = 1\n"}


# --- rendering, diff, writing --------------------------------------------------------

ROUND_TRIP_CASES = [
    pytest.param(LR_EDIT, id="one_line"),
    pytest.param(Edit("pkg/new_mod.py", "", "X = 1\n\nY = 2\n"), id="new_file"),
    pytest.param(Edit("train.py", "import torch\n\n", ""), id="deletion"),
    pytest.param(Edit("notes.md", "```python\nx = 1\n```\n", "```\ny\n```\n"), id="fences_inside"),
]


@pytest.mark.parametrize("edit", ROUND_TRIP_CASES)
def test_render_parse_round_trip(edit: Edit) -> None:
    assert parse_edits(render_edit(edit)) == [edit]
    twice = f"Two changes:\n{render_edit(edit)}\n{render_edit(edit)}"
    assert parse_edits(twice) == [edit, edit]


def test_render_text() -> None:
    assert render_edit(LR_EDIT) == BLOCK
    assert render_edit(Edit("a.py", "x = 1", "x = 2")) == block("a.py", "x = 1\n", "x = 2\n")


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        pytest.param(
            Edit("notes.rst", "Title\n=======\n", "T\n"),
            r"SEARCH text for notes\.rst contains",
            id="marker_line_in_content",
        ),
        pytest.param(Edit("my file.py", "x\n", "y\n"), "cannot stand alone", id="space_in_path"),
    ],
)
def test_render_refuses_what_would_not_parse_back(edit: Edit, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        render_edit(edit)


def test_render_says_which_section_holds_a_marker() -> None:
    with pytest.raises(ValueError) as e:
        render_edit(Edit("a.py", "x\n", "y\n=======\n"))
    assert str(e.value) == "REPLACE text for a.py contains marker line '======='"
    with pytest.raises(ValueError) as e:
        render_edit(Edit("a.py", ">>>>>>> REPLACE\n", "y\n"))
    assert str(e.value) == "SEARCH text for a.py contains marker line '>>>>>>> REPLACE'"


DIFF_CASES = [
    pytest.param(
        {"a.py": "x = 1\ny = 2\n"},
        {"a.py": "x = 1\ny = 3\n"},
        "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1,2 +1,2 @@\n x = 1\n-y = 2\n+y = 3\n",
        id="modified",
    ),
    pytest.param(
        {},
        {"b.py": "z = 0\n"},
        "diff --git a/b.py b/b.py\nnew file mode 100644\n--- /dev/null\n+++ b/b.py\n@@ -0,0 +1 @@\n+z = 0\n",
        id="new_file",
    ),
    pytest.param(
        {"a.py": "x = 1"},
        {"a.py": "x = 2"},
        "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n"
        "-x = 1\n\\ No newline at end of file\n+x = 2\n\\ No newline at end of file\n",
        id="no_newline_at_end",
    ),
    pytest.param(
        {"a.py": "x\n", "c.py": "c\n"},
        {"a.py": "x\n"},
        "",
        id="unchanged_and_missing_paths_skipped",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), DIFF_CASES)
def test_unified_diff(old: dict[str, str], new: dict[str, str], expected: str) -> None:
    assert unified_diff(old, new) == expected


def test_write_files(tmp_path) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    result = apply(BLOCK + block("notes.md", "", "hi\n"), {"train.py": TRAIN})
    written = write_files(tmp_path, result)
    assert sorted(p.name for p in written) == ["notes.md", "train.py"]
    assert (tmp_path / "train.py").read_text() == TRAIN.replace("3e-4", "1e-3")
    assert (tmp_path / "notes.md").read_bytes() == b"hi\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md", "train.py"]  # no temp files


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("../escape.py", id="dotdot"),
        pytest.param("/tmp/abs.py", id="absolute"),
        pytest.param("link/x.py", id="symlink_out_of_root"),
    ],
)
def test_write_files_refuses_paths_outside_root(tmp_path, path: str) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(EditError):
        write_files(root, {"ok.py": "fine\n", path: "bad\n"})
    assert list(outside.iterdir()) == []
    assert not (root / "ok.py").exists()  # nothing is written when any path is refused


# --- what the model is shown when SEARCH matches nothing: the closest lines ----------------

def no_match_message(files: dict[str, str], edit: Edit) -> str:
    with pytest.raises(EditError) as caught:
        apply_edits(files, [edit], editable=["*.py"], protected=[])
    return str(caught.value)


def closest(text: str, search: str) -> str | None:
    """The lines the model is shown as closest to SEARCH, or None."""
    msg = no_match_message({"a.py": text}, Edit("a.py", search, "replacement = 1\n"))
    if "Nothing in a.py resembles the SEARCH text." in msg:
        return None
    return msg.split("are:\n```\n", 1)[1].split("```", 1)[0]


def test_the_whole_message_for_a_search_that_matches_nothing():
    files = {"a.py": "x = 1\nQQQQQ\n", "b.py": "ZZZZZ\n", "c.py": "ZZZZZ\n"}
    msg = no_match_message(files, Edit("a.py", "ZZZZZ\n", "x = 1\n"))
    assert msg == (
        "1 of 1 SEARCH/REPLACE blocks failed, so no file was changed.\n\n"
        "Block 1 (a.py) failed: SEARCH does not match any lines in a.py.\n"
        "Its REPLACE lines are already in the file: drop this block if it was applied.\n"
        "Nothing in a.py resembles the SEARCH text.\n"
        "The SEARCH lines do appear in b.py, c.py; is that the file?\n"
        "SEARCH must repeat existing lines exactly, with their comments and blank lines; only a uniform "
        "change of indentation is tolerated.\n\n"
        "Fix the failed blocks and send them again.")


def test_closest_lines_far_down_a_long_file():
    lines = [f"value_{i:02d} = compute({i}, scale={i * 3})" for i in range(40)]
    assert closest("\n".join(lines) + "\n", "value_31 = compute(31, scale=94)\n") == lines[31] + "\n"


def test_closest_lines_are_ranked_by_their_real_similarity():
    # an anagram of SEARCH has the best cheap bound (quick_ratio 1.0) but is not close
    assert closest("hgfedcba\nabcdefgX\nzzzzzzzz\n", "abcdefgh\n") == "abcdefgX\n"


def test_closest_lines_at_the_end_of_a_file_without_a_final_newline():
    assert closest("x = 1\ny = 2\nlearning_rate = 0.001", "learning_rate = 0.002\n") == "learning_rate = 0.001\n"
    assert closest("a = 1\nb = 2\nlast = 3\n", "last = 3\nnew = 4\n") == "a = 1\nb = 2\n"  # whole windows only


def test_nothing_resembles_below_a_similarity_of_three_tenths():
    assert closest("abXXXXXX\n", "abcdefghij\n") == "abXXXXXX\n"  # exactly 0.3: shown
    assert closest("abXXXXXXXX\n", "abcdefghij\n") is None  # 0.27


SEARCH3 = ["alpha = 1", "beta = 2", "delta = something else entirely"]


def decoys(n: int, seed: int = 0) -> list[str]:
    """Lines made of SEARCH3's characters, shuffled: the best cheap bounds, but not close."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        c = list(SEARCH3[i % 3])
        rng.shuffle(c)
        out.append("".join(c).strip() or "x")
    return out


REAL = ["alpha = 1", "beta = 2", "gamma = 3"]


@pytest.mark.parametrize("where", ["top", "bottom"])
def test_closest_lines_found_by_their_unchanged_lines(where):
    # 30-odd windows rank above the real one by the cheap bound: only the lines it shares
    # with SEARCH (alpha, beta) bring it among the candidates
    lines = REAL + decoys(36) if where == "top" else decoys(36) + REAL + ["alpha = 1", "end"]
    search = "\n".join(SEARCH3) + "\n"
    assert closest("\n".join(lines) + "\n", search) == "alpha = 1\nbeta = 2\ngamma = 3\n"


def test_closest_lines_anchored_by_later_lines_of_search():
    search = "delta = something else entirely\nalpha = 1\nbeta = 2\n"
    lines = decoys(36) + ["epsilon = 4"] + REAL[:2]
    assert closest("\n".join(lines) + "\n", search) == "epsilon = 4\nalpha = 1\nbeta = 2\n"


def test_the_window_sharing_most_lines_wins_among_many_anchored_ones():
    # twelve windows share one line with SEARCH; the real one shares two
    lines = []
    for d in decoys(12, seed=1):
        lines += ["alpha = 1", d, d[::-1]]
    lines += decoys(20, seed=2) + REAL
    search = "\n".join(SEARCH3) + "\n"
    assert closest("\n".join(lines) + "\n", search) == "alpha = 1\nbeta = 2\ngamma = 3\n"



def test_the_exact_similarity_is_computed_for_twenty_windows_at_most(monkeypatch):
    # difflib's exact ratio is quadratic: on a long file it is computed only for the 10 windows
    # with the best cheap bound and the 10 sharing the most lines with SEARCH (and once more
    # for the winner), not for every window; here 60 windows share a line with SEARCH
    calls = []
    ratio = difflib.SequenceMatcher.ratio
    monkeypatch.setattr(difflib.SequenceMatcher, "ratio", lambda self: calls.append(1) or ratio(self))
    lines = []
    for d in decoys(60, seed=3):
        lines += ["alpha = 1", d]
    search = "\n".join(SEARCH3) + "\n"
    assert closest("\n".join(lines + REAL) + "\n", search) == "alpha = 1\nbeta = 2\ngamma = 3\n"
    assert 0 < len(calls) <= 2 * 10 + 1

# --- indentation shifts at their edges ------------------------------------------------------


def test_a_dedent_keeps_replace_lines_indented_less_than_the_shift():
    files = {"a.py": "def f():\n    x = 1\n    return x\n"}
    edit = Edit("a.py", "        x = 1\n        return x\n", "        x = 2\n  # note\n        return x\n")
    out = apply_edits(files, [edit], editable=["a.py"], protected=[])
    assert out["a.py"] == "def f():\n    x = 2\n# note\n    return x\n"


def test_a_shifted_search_must_match_whole_windows():
    files = {"a.py": "a = 0\n    b = 1\n"}
    with pytest.raises(EditError, match="SEARCH does not match any lines"):
        apply_edits(files, [Edit("a.py", "  b = 1\n  c = 2\n", "x\n")], editable=["a.py"], protected=[])


def test_a_blank_line_in_a_shifted_search_does_not_end_the_comparison():
    files = {"a.py": "if x:\n    a = 1\n\n    b = 2\n"}
    with pytest.raises(EditError, match="SEARCH does not match any lines"):
        apply_edits(files, [Edit("a.py", "a = 1\n\nc = 3\n", "z\n")], editable=["a.py"], protected=[])
    out = apply_edits(files, [Edit("a.py", "a = 1\n\nb = 2\n", "a = 1\n\nb = 3\n")], editable=["a.py"],
                      protected=[])
    assert out["a.py"] == "if x:\n    a = 1\n\n    b = 3\n"


# --- writing files (not used by the loop, which commits through git) -----------------------


def test_write_files_makes_folders_and_keeps_line_endings_and_letters(tmp_path) -> None:
    written = write_files(tmp_path, {"deep/er/x.py": "a\r\nb\r\n", "u.txt": "naïve – ü\n"})
    assert written == [tmp_path / "deep" / "er" / "x.py", tmp_path / "u.txt"]
    assert (tmp_path / "deep" / "er" / "x.py").read_bytes() == b"a\r\nb\r\n"
    assert (tmp_path / "u.txt").read_bytes() == "naïve – ü\n".encode()



def test_write_files_writes_utf8_whatever_the_locale(tmp_path) -> None:
    # a machine whose locale is plain C, without Python's UTF-8 coercion: the files are still
    # UTF-8, as the model wrote them and as the seed's Python reads them
    code = "import sys; from scientist.edits import write_files; write_files(sys.argv[1], {'a.py': 'x = \\u00e9\\n'})"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.py").read_bytes() == "x = \u00e9\n".encode()

def test_write_files_says_why_it_refuses(tmp_path) -> None:
    with pytest.raises(EditError) as e:
        write_files(tmp_path, {"../x.py": "x"})
    assert str(e.value) == "'../x.py' points outside the project; use a path inside it."
    (tmp_path / "link").symlink_to("/tmp")
    with pytest.raises(EditError) as e:
        write_files(tmp_path, {"link/x.py": "x"})
    assert str(e.value) == f"'link/x.py' resolves outside {tmp_path.resolve()}; refusing to write it."


def test_a_long_search_of_few_characters_still_gets_its_closest_lines():
    # an initialiser table: every character is frequent, which difflib's autojunk would
    # treat as noise (and call nothing similar)
    row = "    0, 0, 0, 0, 0, 0, 0, 0,\n"
    assert closest("W = [\n" + row * 12 + "]\n", row.replace("0,\n", "1,\n") * 10) == row * 10


def test_the_report_lists_the_blocks_that_applied():
    reply = (block("train.py", "    lr = 3e-4\n", "    lr = 1e-3\n") + block("model.py", "        self.width = 64\n",
             "        self.width = 128\n") + block("train.py", "    nothing here\n", "x\n"))
    with pytest.raises(EditError) as caught:
        apply(reply, FILES)
    report = str(caught.value)
    assert report.startswith("1 of 3 SEARCH/REPLACE blocks failed, so no file was changed.\n\n"
                             "Block 3 (train.py) failed: SEARCH does not match any lines in train.py.")
    assert report.endswith("\n\nBlock 1 (train.py) applied fine.\nBlock 2 (model.py) applied fine.\n"
                           "Those were not written either, because a proposal applies as a whole: send them "
                           "again unchanged together with the fixed blocks.")


# --- frozen regions: duplicates, what follows them, the whole message -----------------------

FROZEN = "# scientist: frozen-begin scoring\nscore = 1\n# scientist: frozen-end\n"


def frozen_edit(text: str, search: str, replace: str) -> dict[str, str]:
    return apply_edits({"a.py": text}, [Edit("a.py", search, replace)], editable=["*.py"], protected=[])


def test_two_identical_frozen_regions_must_both_stay():
    text = FROZEN + "x = 1\n" + FROZEN
    with pytest.raises(EditError) as caught:
        frozen_edit(text, "x = 1\n" + FROZEN, "x = 2\n")
    assert str(caught.value) == (
        "1 of 1 SEARCH/REPLACE blocks failed, so no file was changed.\n\n"
        "Block 1 (a.py) failed: it changes or removes the frozen region that starts at line 5 "
        "(`# scientist: frozen-begin scoring`). Lines from `# scientist: frozen-begin` to "
        "`# scientist: frozen-end` must stay exactly as they are; edit only outside them.\n\n"
        "Fix the failed blocks and send them again.")


def test_lines_after_a_closed_frozen_region_are_editable():
    assert frozen_edit(FROZEN + "x = 1\n", "x = 1\n", "x = 2\n") == {"a.py": FROZEN + "x = 2\n"}


def test_a_diff_of_several_files_is_their_diffs_in_order():
    old = {"a.py": "1\n", "b.py": "2\n", "c.py": "3\n"}
    new = {"a.py": "1\n", "b.py": "2b\n", "c.py": "3c\n"}
    assert unified_diff(old, new) == (unified_diff({"b.py": "2\n"}, {"b.py": "2b\n"})
                                      + unified_diff({"c.py": "3\n"}, {"c.py": "3c\n"}))
    assert unified_diff(old, new).count("diff --git") == 2


# --- what a caller sees at the edges (issue 19: each case killed a surviving mutant) -----


def edit_error(files: dict[str, str], *edits: Edit, editable=("*.py", "src/*.py"), protected=()) -> str:
    with pytest.raises(EditError) as err:
        apply_edits(files, list(edits), editable=editable, protected=protected)
    return str(err.value)


def test_a_search_and_replace_written_with_crlf_apply_to_a_file_with_lf():
    out = apply_edits({"a.py": "a = 1\nb = 2\nc = 3\n"}, [Edit("a.py", "a = 1\r\nb = 2\r\n", "x = 1\r\ny = 2\r\n")],
                      editable=["a.py"], protected=[])
    assert out == {"a.py": "x = 1\ny = 2\nc = 3\n"}


def test_a_file_with_mixed_line_endings_keeps_them():
    out = apply_edits({"a.py": "a = 1\r\nb = 2\nc = 3\n"}, [Edit("a.py", "c = 3\n", "c = 4\n")],
                      editable=["a.py"], protected=[])
    assert out == {"a.py": "a = 1\r\nb = 2\nc = 4\n"}


def test_a_search_and_replace_without_final_newlines_match_whole_lines_only():
    # "foo = 1" is also the start of line 1: only the whole line 2 may match
    out = apply_edits({"a.py": "foo = 10\nfoo = 1\n"}, [Edit("a.py", "foo = 1", "foo = 2")],
                      editable=["a.py"], protected=[])
    assert out == {"a.py": "foo = 10\nfoo = 2\n"}


def test_a_match_one_character_into_a_line_is_not_a_match():
    out = apply_edits({"a.py": "xfoo = 1\nfoo = 1\n"}, [Edit("a.py", "foo = 1\n", "foo = 2\n")],
                      editable=["a.py"], protected=[])
    assert out == {"a.py": "xfoo = 1\nfoo = 2\n"}


def test_every_line_start_match_is_counted():
    msg = edit_error({"a.py": "x = 0\nx = 0\nx = 0\n"}, Edit("a.py", "x = 0\n", "x = 1\n"))
    assert "SEARCH matches 3 times in a.py; include more surrounding lines" in msg


@pytest.mark.parametrize("path", ["src\\train.py", "src//train.py", "./src/./train.py"])
def test_windows_separators_and_doubled_slashes_name_the_same_file(path):
    out = apply_edits({"src/train.py": "lr = 1\n"}, [Edit(path, "lr = 1\n", "lr = 2\n")],
                      editable=["src\\train.py"], protected=[])
    assert out == {"src/train.py": "lr = 2\n"}


@pytest.mark.parametrize("path", ["~/train.py", "C:/train.py", "c:\\train.py", "/etc/passwd"])
def test_home_drive_and_root_paths_are_absolute(path):
    msg = edit_error({"train.py": "x\n"}, Edit(path, "x\n", "y\n"))
    assert f"{path!r} is an absolute path; use a path relative to the project root." in msg


def test_the_messages_a_model_gets_back_name_the_fix():
    assert ("src/new.py does not exist. To create it, leave the SEARCH section empty; to change an "
            "existing file, check its path.") in edit_error({}, Edit("src/new.py", "x = 1\n", "x = 2\n"))
    assert ("the SEARCH section is empty but a.py already exists. An empty SEARCH only creates new "
            "files: copy the exact lines you want to change into SEARCH.") in edit_error(
        {"a.py": "x = 1\n"}, Edit("a.py", "", "x = 2\n"))
    assert "a.py is not an editable file. The editable files are: (none)." in edit_error(
        {"a.py": "x = 1\n"}, Edit("a.py", "x = 1\n", "x = 2\n"), editable=())
    assert "'./' is not a file path." in edit_error({}, Edit("./", "", "x\n"))


def test_an_unclosed_frozen_region_is_named_by_its_first_line():
    text = "a = 1\nb = 2\n# scientist: frozen-begin tail\nc = 3\n"
    msg = edit_error({"a.py": text}, Edit("a.py", "c = 3\n", "c = 4\n"))
    assert ("it changes or removes the frozen region that starts at line 3 "
            "(`# scientist: frozen-begin tail`).") in msg


def test_files_are_written_as_utf8_even_where_the_default_encoding_is_ascii(tmp_path, monkeypatch):
    # the same machine in-process (so the mutation run sees it): a file written without an
    # explicit encoding gets the locale's, here ASCII, as in a container without a locale
    write_text = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda self, data, encoding=None, errors=None, newline=None:
                        write_text(self, data, encoding=encoding or "ascii", errors=errors, newline=newline))
    write_files(tmp_path, {"a.py": "# \u03b1 = 0.1\n"})
    assert (tmp_path / "a.py").read_bytes() == "# \u03b1 = 0.1\n".encode()


def test_a_search_ending_in_a_blank_line_the_file_lacks_does_not_match_at_its_end():
    # the end of a file is not a blank line: the newline added while matching must not count as one
    with pytest.raises(EditError, match="SEARCH does not match any lines in a.py"):
        apply_edits({"a.py": "x = 1\ny = 2\n"}, [Edit("a.py", "y = 2\n\n", "y = 3\n")], editable=("a.py",),
                    protected=())
