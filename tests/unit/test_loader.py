"""The -A loader (fastq/loader.py): the App a module path names, and errors that name the problem."""

import pytest

from fastq.loader import AppLoadError, load_app


def test_load_app_finds_the_app_attribute():
    app = load_app("tests.apps.sqlite_app")
    assert "t.add" in app.tasks
    assert load_app("tests.apps.sqlite_app:app") is app


def test_load_app_errors_name_the_problem(tmp_path, monkeypatch):
    with pytest.raises(AppLoadError, match="no module named 'nowhere'"):
        load_app("nowhere.tasks")
    (tmp_path / "broken_tasks.py").write_text("x = 1\nraise RuntimeError('user bug here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AppLoadError) as info:
        load_app("broken_tasks")
    text = str(info.value)
    assert "broken_tasks.py" in text and "user bug here" in text
    assert "importlib" not in text and "fastq/cli.py" not in text
