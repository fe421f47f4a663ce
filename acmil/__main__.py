import sys

from acmil.cli import main

sys.exit(main())
