"""Exit statuses of every command (sysexits.h where one fits)."""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG: service managers treat it as "do not restart, fix the configuration"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention for "stopped by Ctrl-C"
