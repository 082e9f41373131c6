"""`python -m reconciler` is the same as the `photosync` command."""

from reconciler.cli import main

if __name__ == "__main__":
    main()
