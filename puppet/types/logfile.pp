# @summary Where the runtime logs: `stdout`, `stderr`, `discard`, or an absolute file path
#   (JSON lines).
type Choria::LogFile = Variant[Enum['stdout', 'stderr', 'discard'], Choria::Path]
