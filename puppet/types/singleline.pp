# @summary A one-line string without leading or trailing whitespace.
#
# broker.conf has no quoting: a newline or carriage return in a value would start a new
# `key = value` line (config injection), and the parser trims whitespace at both ends of a
# value, so neither may appear.
type Choria::SingleLine = Pattern[/\A\S(?:[^\r\n]*\S)?\z/]
