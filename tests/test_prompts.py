"""Text prompt files: one per line or JSONL with a "prompt" field; the shipped data/prompts.jsonl."""
import pytest

from pie_lab import ConfigError
from pie_lab.cli import main
from pie_lab.workloads import read_prompts


def test_shipped_instruction_set():
    prompts = read_prompts()
    assert len(prompts) == 32 and len(set(prompts)) == 32 and all(p.strip() for p in prompts)


def test_plain_lines_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first prompt\n\n  second prompt  \n")
    assert read_prompts(tmp_path / "a.txt") == ["first prompt", "second prompt"]
    (tmp_path / "b.jsonl").write_text('{"prompt": "one"}\n{"prompt": "two", "id": 7}\n')
    assert read_prompts(tmp_path / "b.jsonl") == ["one", "two"]


@pytest.mark.parametrize("name, text, match", [
    ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": \n', "line 2 is not valid JSON"),
    ("nofield.jsonl", '{"text": "x"}\n', "line 1: a JSONL record needs a non-empty string field 'prompt'"),
    ("empty.txt", "\n\n", "has no prompts"),
])
def test_bad_files_name_the_problem(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_prompts(tmp_path / name)


def test_cli_prompts_errors_exit_2(tmp_path, capsys):
    assert main(["run", "--prompts", str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "p.txt").write_text("hello\n")
    assert main(["run", "--prompts", str(tmp_path / "p.txt"), "--model", "opt-tiny", "--no-progress"]) == 2
    assert "tokenizer" in capsys.readouterr().err
    assert main(["run", "--prompts", str(tmp_path / "p.txt"), "--max-tokens", "0"]) == 2
    assert "max-tokens" in capsys.readouterr().err
