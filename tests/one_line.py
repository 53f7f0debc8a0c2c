"""The CLI's contract for a user error, shared by the runs-index, experiment and sweep tests: exit status 2
and exactly one line on stderr naming what is wrong, no traceback."""

from cnnlab.cli import main


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """Run `cnnlab ARGV` in-process; assert the contract and that every needle is in the line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err
