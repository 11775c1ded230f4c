import sys

from avae.cli import main

sys.exit(main())
