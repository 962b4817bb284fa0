import sys

from awqserve.cli.main import main

sys.exit(main())
