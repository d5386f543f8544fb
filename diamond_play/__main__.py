import sys

from diamond_play.cli import main

sys.exit(main())
