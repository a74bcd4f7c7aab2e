#!/usr/bin/env python3
"""One-command training: the same as `codette quickstart` (data, tokenizer, train, eval)."""

import sys

from codette.cli.main import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "quickstart", *sys.argv[1:]]
    main()
