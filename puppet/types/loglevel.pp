# @summary The log level names the Choria broker accepts.
type Choria::LogLevel = Enum['debug', 'info', 'warn', 'error', 'fatal']
