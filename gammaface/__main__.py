import sys

from gammaface.cli import main

sys.exit(main())
