"""`--help` of `locus` and of every subcommand at any terminal width: at COLUMNS=80 and COLUMNS=160
no line is longer than 100 columns (counted in characters and in UTF-8 bytes, which is what
`awk 'length > 100'` counts with mawk), and the help fits one screen (60 lines). The subcommands
are read from `locus --help`, so a new command is covered without editing this file."""
import os
import subprocess

import pytest

from conftest import LOCUS_BIN

WIDTHS = (80, 160)
MAX_COLUMNS = 100
ONE_SCREEN = 60


def help_text(*command, columns):
    env = {**os.environ, "COLUMNS": str(columns)}
    proc = subprocess.run([str(LOCUS_BIN), *command, "--help"], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def subcommands():
    """The names listed under SUBCOMMANDS: in `locus --help`."""
    if not LOCUS_BIN.is_file():
        return ["<locus binary missing>"]
    names, listing = [], False
    for line in help_text(columns=80).splitlines():
        if line.startswith("SUBCOMMANDS:"):
            listing = True
        elif listing and not line.strip():
            break
        elif listing and line.startswith("  ") and not line.startswith("   "):
            names.append(line.split()[0])
    return names


COMMANDS = [()] + [(c,) for c in subcommands()]
IDS = ["locus"] + [c for (c,) in COMMANDS[1:]]


def test_every_subcommand_is_listed(locus_bin):
    assert {"inspect", "convert", "score", "mask", "finetune", "merge"} <= {c for (c,) in COMMANDS[1:]}, COMMANDS


@pytest.mark.parametrize("columns", WIDTHS)
@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_no_line_wider_than_100_columns(locus_bin, command, columns):
    lines = help_text(*command, columns=columns).splitlines()
    wide = [(len(l), len(l.encode()), l) for l in lines if len(l) > MAX_COLUMNS or len(l.encode()) > MAX_COLUMNS]
    assert not wide, f"locus {' '.join(command)} --help at COLUMNS={columns}: (chars, bytes, line) " + repr(wide)


@pytest.mark.parametrize("columns", WIDTHS)
@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_help_fits_one_screen(locus_bin, command, columns):
    lines = help_text(*command, columns=columns).splitlines()
    assert len(lines) <= ONE_SCREEN, f"locus {' '.join(command)} --help at COLUMNS={columns}: {len(lines)} lines"


def test_width_is_capped_at_80_columns_and_a_narrower_terminal_is_kept(locus_bin):
    """A wide terminal gets the 80-column layout; a narrower one its own width (ArgumentParser leaves
    only the USAGE line unwrapped)."""
    for command in [(), ("score",), ("init",)]:
        assert help_text(*command, columns=160) == help_text(*command, columns=80)
        narrow = [l for l in help_text(*command, columns=60).splitlines() if not l.startswith("USAGE:")]
        assert max(map(len, narrow)) <= 60, narrow
