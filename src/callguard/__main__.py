import sys

from callguard.cli.main import main

sys.exit(main())
