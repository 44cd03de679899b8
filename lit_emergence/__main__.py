"""``python -m lit_emergence`` does what the ``lit-emergence`` console script does."""

from lit_emergence.cli import MODULE_PROGRAM, main

if __name__ == "__main__":
    main(prog=MODULE_PROGRAM)
