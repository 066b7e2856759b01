import sys

from hf_sparc.cli import main

sys.exit(main())
