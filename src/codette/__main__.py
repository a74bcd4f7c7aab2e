"""`python -m codette` is the same as the `codette` console script."""

from codette.cli.main import main

if __name__ == "__main__":
    main()
