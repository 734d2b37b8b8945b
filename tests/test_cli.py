import subprocess
import sys

import pytest

from effivmt import cli


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(cli.SUBCOMMANDS))
def test_each_subcommand_has_useful_help(name, capsys):
    with pytest.raises(SystemExit):
        cli.main([name, "--help"])
    out = capsys.readouterr().out
    doc = cli.resolve(cli.SUBCOMMANDS[name]).__doc__.strip().split("\n")[0]
    assert doc.split(":")[0] in " ".join(out.split())


def test_subcommand_functions_have_docstrings():
    for target in cli.SUBCOMMANDS.values():
        assert cli.resolve(target).__doc__


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "effivmt", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "transfer" in result.stdout


def test_effivmt_error_is_one_line_and_exit_2(tmp_path, capsys):
    code = cli.main(["heads", "--clip", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("effivmt: error:") and "\n" not in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    from effivmt.errors import VideoError

    with pytest.raises(VideoError):
        cli.main(["--debug", "heads", "--clip", str(tmp_path / "missing.mp4")])


def test_positional_arguments_expand_to_their_options():
    assert cli._expand_positional(["run", "r.yaml", "--out", "o"]) == ["run", "--config", "r.yaml", "--out", "o"]
    assert cli._expand_positional(["--debug", "export", "RUN"]) == ["--debug", "export", "--run_dir", "RUN"]
    assert cli._expand_positional(["export", "--run_dir", "RUN"]) == ["export", "--run_dir", "RUN"]
    assert cli._expand_positional(["eval", "--reference", "a"]) == ["eval", "--reference", "a"]


def test_dashed_option_names_are_accepted():
    assert cli._expand_positional(["transfer", "--first-frame", "a.png", "--out=x-y.mp4"]) == [
        "transfer",
        "--first_frame",
        "a.png",
        "--out=x-y.mp4",
    ]
