import sys

from ipce.cli import main

sys.exit(main())
