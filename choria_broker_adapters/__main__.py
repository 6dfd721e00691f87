import sys

from choria_broker_adapters.cli import main

sys.exit(main())
