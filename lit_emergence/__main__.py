"""``python -m lit_emergence`` does what the ``lit-emergence`` console script does."""

from lit_emergence.cli import main

if __name__ == "__main__":
    main()
