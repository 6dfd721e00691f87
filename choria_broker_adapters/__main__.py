import sys

try:
    from choria_broker_adapters.cli import main
except KeyboardInterrupt:  # Ctrl-C before the command line could take the signals over
    sys.exit(130)

sys.exit(main())
