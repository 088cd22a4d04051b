import sys

from taas.cli import main

sys.exit(main())
