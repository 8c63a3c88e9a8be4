"""`python -m execution`: see cli.py."""
import sys

from execution.cli import main

sys.exit(main())
