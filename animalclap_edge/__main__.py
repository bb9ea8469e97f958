import sys

from animalclap_edge.cli import main

sys.exit(main())
